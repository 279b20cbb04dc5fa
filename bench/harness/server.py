"""Start a server as a subprocess on a free loopback port, wait until it is ready, stop it.

One way to run a server for the benchmarks (ggserve and its peers) and for the integration
tests (``tests/integration/server_proc.py`` is a thin layer over this module): a
:class:`ServerSpec` says how to start it; :func:`running` starts it with its output in a log
file, waits for its readiness URL and stops it (SIGTERM, then SIGKILL) when the block ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"


class ServerStartError(RuntimeError):
    """A server exited or did not become ready; the message ends with its log's last lines."""


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server: the command, its environment and the URL that says 'ready'."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/health"
    # ggserve takes its address from GGSERVE_HOST/PORT; the peers from --host/--port.
    address_in_env: bool = False
    # Extra fields merged into every chat request (a peer's own way to ask for something).
    extra_body: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunningServer:
    """A started server: where it listens, the key it accepts and where its output goes."""

    spec: ServerSpec
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The request headers that authenticate with :attr:`api_key` (none without one)."""
        return {"X-API-KEY": self.api_key} if self.api_key else {}

    def log(self) -> str:
        """Everything the server has written so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log().splitlines()[-lines:])


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ggserve(
    env: Mapping[str, str],
    *,
    name: str = "ggserve",
    settings: dict[str, Any] | None = None,
) -> ServerSpec:
    """``python -m cli.main serve`` from the repository root, JSON logs, ``env`` on top."""
    return ServerSpec(
        name=name,
        command=[sys.executable, "-m", "cli.main", "serve"],
        env={"GGSERVE_LOG_FORMAT": "json", **env},
        ready_path="/ready",
        address_in_env=True,
        settings=settings or {},
    )


def wait_ready(server: RunningServer, timeout: float, *, ready: bool = True) -> None:
    """Wait for 200 on the spec's readiness path, or (``ready=False``) for any answer at all.

    A ggserve whose model failed to load says so on ``/ready``: that fails at once instead of
    at the timeout.
    """
    deadline = time.monotonic() + timeout
    url = server.url + server.spec.ready_path
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerStartError(
                f"{server.spec.name} exited with code {server.proc.returncode} while starting; "
                f"last lines of {server.log_path}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = httpx.get(url, timeout=2)
            if not ready or response.status_code == 200:
                return
            body = response.json()
            if isinstance(body, dict) and body.get("status") == "failed":
                raise ServerStartError(
                    f"{server.spec.name}: model load failed: {body.get('reason')}"
                )
        time.sleep(0.2)
    raise ServerStartError(
        f"{server.spec.name} did not answer {'200 ' if ready else ''}on {url} within "
        f"{timeout:.0f}s; last lines of {server.log_path}:\n{server.log_tail()}"
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM (ggserve drains its requests), then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running(
    spec: ServerSpec,
    log_dir: Path,
    *,
    timeout: float = 180.0,
    wait: bool = True,
    port: int | None = None,
    api_key: str | None = None,
    log_name: str | None = None,
    stop_timeout: float = 20.0,
) -> Iterator[RunningServer]:
    """Start ``spec`` on ``port`` (a free one by default), wait until ready, stop it on exit.

    ``wait=False`` waits only until the server answers at all (on ``/health``), for tests of
    what it says while it is still loading. The log is ``log_dir/<log_name or name-port>.log``
    and stays there after the server stops.
    """
    port = port or free_port()
    command = [*spec.command]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **spec.env}
    if spec.address_in_env:
        env |= {"GGSERVE_HOST": "127.0.0.1", "GGSERVE_PORT": str(port)}
    else:
        command += ["--host", "127.0.0.1", "--port", str(port)]
    log_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() else "_" for c in spec.name)
    log_path = log_dir / f"{log_name or f'{safe}-{port}'}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(spec, f"http://127.0.0.1:{port}", proc, log_path, api_key)
    try:
        if wait:
            wait_ready(server, timeout)
        else:
            probe = ServerSpec(spec.name, spec.command, ready_path="/health")
            wait_ready(RunningServer(probe, server.url, proc, log_path), timeout, ready=False)
        yield server
    finally:
        stop(proc, stop_timeout)


def physical_cores() -> int:
    """Physical cores usable here: the thread count every server gets (SMT does not help)."""
    import psutil

    return max(1, min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0))))


def exit_on_signal(signum: int, _frame: object) -> None:
    """SIGTERM handler: exit through SystemExit so ``running`` stops the servers it started."""
    raise SystemExit(128 + signum)
