"""examples/haproxy/haproxy.cfg: HAProxy itself accepts it, and its retry policy replays only
what no replica answered a byte of (docs/scale-out.md). The scale-out integration test runs it
against real replicas; this checks it in seconds wherever haproxy is installed."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import tool

CFG = Path(__file__).resolve().parents[2] / "examples" / "haproxy" / "haproxy.cfg"
ENV = {
    "GGSERVE_LISTEN": "127.0.0.1:18080",
    "GGSERVE_STATS_LISTEN": "127.0.0.1:18404",
    "GGSERVE_REPLICA_1": "127.0.0.1:18001",
    "GGSERVE_REPLICA_2": "127.0.0.1:18002",
    "GGSERVE_REPLICA_3": "127.0.0.1:18003",
}


def _directives() -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in CFG.read_text().splitlines())
    return [line for line in lines if line]


def test_haproxy_accepts_the_example_config() -> None:
    haproxy = tool("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed (make system-deps installs it as root)")
    result = subprocess.run(
        [haproxy, "-c", "-f", str(CFG)], env={**os.environ, **ENV}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_retries_replay_only_requests_no_replica_answered() -> None:
    directives = _directives()
    [retry_on] = [d for d in directives if d.startswith("retry-on ")]
    assert set(retry_on.split()[1:]) == {"conn-failure", "empty-response", "503"}
    assert "option http-buffer-request" in directives  # what makes a replay possible
    assert any(re.fullmatch(r"option redispatch( 1)?", d) for d in directives)


def test_replicas_are_checked_on_ready_and_balanced_by_open_requests() -> None:
    directives = _directives()
    assert "option httpchk GET /ready" in directives
    assert "http-check expect status 200" in directives
    assert "balance leastconn" in directives
    servers = [d for d in directives if d.startswith("server ")]
    assert len(servers) == 3 and all('"${GGSERVE_REPLICA_' in d for d in servers)
    [defaults] = [d for d in directives if d.startswith("default-server ")]
    assert " check " in f" {defaults} "
    # The proxy must not cut a generation the server still allows (GGSERVE_REQUEST_TIMEOUT_S).
    from server.settings import Settings

    limit = Settings.model_fields["request_timeout_s"].default
    for name in ("timeout client", "timeout server"):
        [line] = [d for d in directives if d.startswith(name + " ")]
        assert int(line.split()[-1].removesuffix("s")) > limit
