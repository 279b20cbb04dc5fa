"""Start the real ``ggserve serve`` as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from server.security.api_keys import hash_key

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"
TEST_KEY = "ggs-integration-test-key"


@dataclass
class ServerHandle:
    url: str
    api_key: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-KEY": self.api_key}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(url: str, *, ready: bool, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Wait for /ready 200 (ready=True) or for /health to answer at all (ready=False)."""
    deadline = time.monotonic() + timeout
    path = "/ready" if ready else "/health"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(url + path, timeout=2)
            if not ready or response.status_code == 200:
                return
            if response.json().get("status") == "failed":
                raise RuntimeError(f"model load failed: {response.json().get('reason')}")
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} not answering after {timeout}s")


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
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GGSERVE_HOST": "127.0.0.1",
        "GGSERVE_PORT": str(port),
        "GGSERVE_MODEL_PATH": str(MODEL),
        "GGSERVE_EMBEDDER_PATH": str(EMBEDDER),
        "GGSERVE_API_KEYS": f"test:{hash_key(TEST_KEY)}",
        "GGSERVE_N_SLOTS": "4",
        "GGSERVE_N_CTX": "2048",
        "GGSERVE_LOG_FORMAT": "json",
        # Captured responses go beside the log, never into the checkout's data/.
        "GGSERVE_FEEDBACK_DB": str(log_dir / f"ggserve-test-{port}-feedback.db"),
        **(env or {}),
    }
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"ggserve-test-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve"],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    handle = ServerHandle(f"http://127.0.0.1:{port}", TEST_KEY, proc, log_path)
    try:
        wait_until(handle.url, ready=wait_ready, timeout=timeout, proc=proc)
        yield handle
    except BaseException:
        sys.stderr.write(f"--- server log ({log_path}) ---\n{handle.log()[-4000:]}\n")
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
