"""The real ``ggserve serve`` for the integration tests, over the shared harness.

``running_server`` starts it with the test key, the real model and embedder, 4 slots and JSON
logs (``bench.harness.server`` does the process work: port, readiness, log file, stop); on a
failure inside the block the log's end goes to stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from bench.harness.server import EMBEDDER, MODEL, ROOT, ggserve, running
from bench.harness.server import RunningServer as ServerHandle
from bench.harness.server import free_port as free_port
from server.security.api_keys import hash_key

__all__ = [
    "EMBEDDER",
    "MODEL",
    "ROOT",
    "TEST_KEY",
    "ServerHandle",
    "free_port",
    "running_server",
]

TEST_KEY = "ggs-integration-test-key"


@contextlib.contextmanager
def running_server(
    env: dict[str, str] | None = None,
    *,
    wait_ready: bool = True,
    timeout: float = 120.0,
    log_dir: Path | None = None,
) -> Iterator[ServerHandle]:
    """Run ``ggserve serve`` with the real model (override with GGSERVE_* in ``env``)."""
    port = free_port()
    log_dir = log_dir or Path(os.environ.get("GGSERVE_TEST_LOGS", "/tmp"))
    spec = ggserve(
        {
            "GGSERVE_MODEL_PATH": str(MODEL),
            "GGSERVE_EMBEDDER_PATH": str(EMBEDDER),
            "GGSERVE_API_KEYS": f"test:{hash_key(TEST_KEY)}",
            "GGSERVE_N_SLOTS": "4",
            "GGSERVE_N_CTX": "2048",
            # Captured responses go beside the log, never into the checkout's data/.
            "GGSERVE_FEEDBACK_DB": str(log_dir / f"ggserve-test-{port}-feedback.db"),
            **(env or {}),
        },
        name="ggserve-test",
    )
    log_path = log_dir / f"ggserve-test-{port}.log"
    try:
        with running(
            spec,
            log_dir,
            timeout=timeout,
            wait=wait_ready,
            port=port,
            api_key=TEST_KEY,
            log_name=log_path.stem,
        ) as handle:
            yield handle
    except BaseException:
        if log_path.exists():
            tail = log_path.read_text(errors="replace")[-4000:]
            sys.stderr.write(f"--- server log ({log_path}) ---\n{tail}\n")
        raise
