"""Three real replicas behind a real HAProxy on loopback, sharing one real redis-server.

The router is ``examples/haproxy/haproxy.cfg`` as shipped (addresses from the environment).
Under mixed load (non-streamed chat and streams from several keys):

- ``kill -9`` of one replica: no non-streamed request fails (HAProxy retries what no replica
  answered a byte of, on another replica); only streams that were already running on the
  killed replica are cut;
- ``SIGTERM`` of another: its ``/ready`` turns 503, HAProxy stops sending to it, its open
  streams run to the end, and it exits 0;
- a per-key token budget holds across the replicas (through Redis) within 10 %.

The servers start once for the module; the tests run in file order and each leaves the pool
smaller. The measured figures go to ``$GGSERVE_TEST_LOGS/scale-out-figures.json`` (the ones
docs/scale-out.md quotes).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.security.api_keys import hash_key
from tests.integration.server_proc import MODEL, ROOT, ServerHandle, free_port, running_server

pytestmark = [pytest.mark.slow, pytest.mark.redis]

HAPROXY_CFG = ROOT / "examples" / "haproxy" / "haproxy.cfg"
LOGS = Path(os.environ.get("GGSERVE_TEST_LOGS", "/tmp"))
FIGURES = LOGS / "scale-out-figures.json"
TPM = 2000  # tokens per key per minute, shared by the replicas through Redis
LOAD_KEYS = [f"ggs-scale-load-{i}" for i in range(6)]
METER_KEY = "ggs-scale-meter"
NEVER_STOP = {"0": -100, "2": -100}  # SmolLM2's end-of-generation tokens biased away
REPLICA_ENV = {
    "GGSERVE_N_SLOTS": "2",
    "GGSERVE_N_CTX": "512",
    "GGSERVE_N_THREADS": "1",
    "GGSERVE_MAX_TOKENS_LIMIT": "128",
    "GGSERVE_PROMPT_CACHE_MB": "0",
    "GGSERVE_SPECULATIVE": "off",
    "GGSERVE_DRIFT_ENABLED": "false",
    "GGSERVE_CAPTURE": "off",
    "GGSERVE_WARMUP": "false",
    "GGSERVE_RATE_LIMIT_TPM": str(TPM),
    "GGSERVE_DRAIN_TIMEOUT_S": "60",
    "GGSERVE_TRUSTED_PROXIES": "127.0.0.1/32",
    "GGSERVE_API_KEYS": ",".join(
        f"{key.removeprefix('ggs-scale-')}:{hash_key(key)}" for key in [*LOAD_KEYS, METER_KEY]
    ),
}


@dataclass
class Cluster:
    url: str  # HAProxy's frontend
    stats_url: str
    replicas: dict[str, ServerHandle]  # HAProxy's server name → the process
    figures: dict[str, Any] = field(default_factory=dict)

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of each replica: "UP", "DOWN", "UP 1/2", …"""
        text = httpx.get(self.stats_url + "/stats;csv", timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {
            r["svname"]: r["status"]
            for r in rows
            if r["pxname"] == "ggserve" and r["svname"] in self.replicas
        }

    def retries(self) -> dict[str, int]:
        """The backend's retries and redispatches so far (HAProxy's wretr and wredis)."""
        text = httpx.get(self.stats_url + "/stats;csv", timeout=5).text.lstrip("# ")
        [row] = [
            r
            for r in csv.DictReader(io.StringIO(text))
            if (r["pxname"], r["svname"]) == ("ggserve", "BACKEND")
        ]
        return {"retries": int(row["wretr"] or 0), "redispatches": int(row["wredis"] or 0)}

    def wait_state(self, name: str, state: str, timeout: float) -> float:
        """Seconds until HAProxy reports ``name`` as ``state``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.server_states().get(name) == state:
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"{name} not {state} after {timeout}s: {self.server_states()}")


@contextlib.contextmanager
def _redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed (make system-deps installs it as root)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(port=port)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                client.ping()
                break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def _haproxy(replicas: dict[str, ServerHandle]) -> Iterator[tuple[str, str]]:
    binary = shutil.which("haproxy")
    if binary is None:
        pytest.skip("haproxy not installed (make system-deps installs it as root)")
    listen, stats = free_port(), free_port()
    env = {
        **os.environ,
        "GGSERVE_LISTEN": f"127.0.0.1:{listen}",
        "GGSERVE_STATS_LISTEN": f"127.0.0.1:{stats}",
        **{
            f"GGSERVE_REPLICA_{name[1:]}": server.url.removeprefix("http://")
            for name, server in replicas.items()
        },
    }
    log = (LOGS / f"haproxy-{listen}.log").open("wb")
    proc = subprocess.Popen(
        [binary, "-db", "-f", str(HAPROXY_CFG)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{listen}"
        for _ in range(100):
            assert proc.poll() is None, (LOGS / f"haproxy-{listen}.log").read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, f"http://127.0.0.1:{stats}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} missing: run 'make setup' (ggserve models fetch) first")
    with contextlib.ExitStack() as stack:
        redis_url = stack.enter_context(_redis())
        if shutil.which("haproxy") is None:
            pytest.skip("haproxy not installed (make system-deps installs it as root)")
        env = {**REPLICA_ENV, "GGSERVE_RATE_LIMIT_STORAGE": redis_url}
        replicas: dict[str, ServerHandle] = {}
        started = time.monotonic()
        for name in ("r1", "r2", "r3"):  # each loads while the next starts
            replicas[name] = stack.enter_context(running_server(env, wait_ready=False))
        for server in replicas.values():
            _wait_ready(server, 120)
        url, stats_url = stack.enter_context(_haproxy(replicas))
        result = Cluster(url, stats_url, replicas)
        for name in replicas:
            result.wait_state(name, "UP", 30)
        result.figures["start_s"] = round(time.monotonic() - started, 1)
        yield result
        FIGURES.write_text(json.dumps(result.figures, indent=2))


def _wait_ready(server: ServerHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, server.log_tail()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"{server.url} not ready: {server.log_tail()}")


def _chat_body(max_tokens: int, stream: bool = False, prompt: str = "Say hello.") -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logit_bias": NEVER_STOP,
        "stream": stream,
    }


@dataclass
class Outcome:
    kind: str  # "chat" | "stream"
    served_by: str | None = None
    status: int | None = None
    finished: bool = False  # a finish reason (and [DONE] for a stream) arrived
    error: str | None = None
    tokens: int = 0
    started: float = field(default_factory=time.monotonic)


def _chat(url: str, key: str, max_tokens: int = 8) -> Outcome:
    outcome = Outcome("chat")
    try:
        response = httpx.post(
            url + "/v1/chat/completions",
            json=_chat_body(max_tokens),
            headers={"X-API-KEY": key},
            timeout=60,
        )
        outcome.status, outcome.served_by = (
            response.status_code,
            response.headers.get("x-served-by"),
        )
        if response.status_code == 200:
            body = response.json()
            outcome.finished = body["choices"][0]["finish_reason"] is not None
            outcome.tokens = body["usage"]["total_tokens"]
        else:
            outcome.error = response.text[:200]
    except httpx.HTTPError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome


def _stream(url: str, key: str, max_tokens: int, outcome: Outcome, first: threading.Event) -> None:
    try:
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            json=_chat_body(max_tokens, stream=True, prompt="Tell me a long story."),
            headers={"X-API-KEY": key},
            timeout=60,
        ) as response:
            outcome.status, outcome.served_by = (
                response.status_code,
                response.headers.get("x-served-by"),
            )
            reason = None
            for line in response.iter_lines():
                data = line.removeprefix("data:").strip()
                if not line.startswith("data:"):
                    continue
                if data == "[DONE]":
                    outcome.finished = reason is not None
                    continue
                event = json.loads(data)
                if "error" in event:
                    outcome.error = event["error"]["message"]
                    continue
                choice = event["choices"][0]
                if choice["delta"].get("content"):
                    outcome.tokens += 1
                    first.set()
                reason = choice.get("finish_reason") or reason
            if not outcome.finished and outcome.error is None:
                outcome.error = f"ended without [DONE] (status {response.status_code})"
    except httpx.HTTPError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        first.set()


class Load:
    """Clients sending non-streamed chats and streams through the router until stopped."""

    def __init__(self, url: str, chat_workers: int = 3, stream_workers: int = 2) -> None:
        self.url = url
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._chats, args=(LOAD_KEYS[i],), daemon=True)
            for i in range(chat_workers)
        ] + [
            threading.Thread(target=self._streams, args=(LOAD_KEYS[3 + i],), daemon=True)
            for i in range(stream_workers)
        ]

    def _chats(self, key: str) -> None:
        while not self._stop.is_set():
            self.outcomes.append(_chat(self.url, key))

    def _streams(self, key: str) -> None:
        while not self._stop.is_set():
            outcome = Outcome("stream")
            self.outcomes.append(outcome)
            _stream(self.url, key, 24, outcome, threading.Event())

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(90)

    def failed(self, kind: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.kind == kind and not (o.status == 200 and o.finished)]


def test_requests_reach_all_three_replicas(cluster: Cluster) -> None:
    served = {_chat(cluster.url, LOAD_KEYS[0], max_tokens=2).served_by for _ in range(9)}
    assert served == {"r1", "r2", "r3"}


def test_a_per_key_token_budget_holds_across_replicas_within_10_percent(cluster: Cluster) -> None:
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    refused = threading.Event()

    def client() -> None:
        while not refused.is_set():
            outcome = _chat(cluster.url, METER_KEY, max_tokens=32)
            with lock:
                outcomes.append(outcome)
            if outcome.status == 429:
                refused.set()

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    served = [o for o in outcomes if o.status == 200]
    assert refused.is_set() and not [o for o in outcomes if o.status not in (200, 429)]
    assert {o.served_by for o in served} >= {"r1", "r2", "r3"}  # the budget is shared
    tokens = sum(o.tokens for o in served)
    cluster.figures["token_budget"] = {"limit": TPM, "served_before_429": tokens}
    assert 0.9 * TPM <= tokens <= 1.1 * TPM, tokens


def test_kill_9_of_a_replica_under_load_fails_no_non_streamed_request(cluster: Cluster) -> None:
    victim = cluster.replicas["r1"]
    with Load(cluster.url) as load:
        load_started = time.monotonic()
        time.sleep(4)
        killed_at = time.monotonic()
        victim.proc.send_signal(signal.SIGKILL)
        down_after = cluster.wait_state("r1", "DOWN", 15)
        # Keep the load on until enough requests ran after the kill, however busy the machine.
        at_least, at_most = time.monotonic() + 4, time.monotonic() + 30
        while time.monotonic() < at_least or (
            sum(o.kind == "chat" and o.started > killed_at for o in load.outcomes) < 10
            and time.monotonic() < at_most
        ):
            time.sleep(0.2)
    load_s = time.monotonic() - load_started
    chats = [o for o in load.outcomes if o.kind == "chat"]
    streams = [o for o in load.outcomes if o.kind == "stream"]
    failed_streams = load.failed("stream")
    cluster.figures["kill_9"] = {
        "non_streamed": len(chats),
        "non_streamed_failed": len(load.failed("chat")),
        "streams": len(streams),
        "streams_failed": len(failed_streams),
        "router_marked_down_s": round(down_after, 1),
        "load_s": round(load_s, 1),
        "router_so_far": cluster.retries(),
    }
    assert len(chats) >= 10 and len(streams) >= 4
    assert not load.failed("chat"), [o.error for o in load.failed("chat")]
    # Only streams already running on the killed replica may be cut.
    assert all(o.served_by in ("r1", None) for o in failed_streams), failed_streams
    assert len(failed_streams) <= 2


def test_sigterm_drains_a_replica_out_of_the_pool_and_its_streams_finish(
    cluster: Cluster,
) -> None:
    draining = cluster.replicas["r2"]
    streams = [Outcome("stream") for _ in range(4)]
    firsts = [threading.Event() for _ in streams]
    threads = [
        threading.Thread(target=_stream, args=(cluster.url, LOAD_KEYS[5], 64, o, f))
        for o, f in zip(streams, firsts, strict=True)
    ]
    for thread in threads:
        thread.start()
    for first in firsts:
        assert first.wait(60)
    on_r2 = [o for o in streams if o.served_by == "r2"]
    assert on_r2, [o.served_by for o in streams]  # leastconn spreads them over r2 and r3
    with Load(cluster.url, stream_workers=1) as load:
        time.sleep(1)
        signalled = time.monotonic()
        draining.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert httpx.get(draining.url + "/ready", timeout=5).status_code == 503
        out_after = cluster.wait_state("r2", "DOWN", 15)
        out_at = time.monotonic()
        time.sleep(3)
    for thread in threads:
        thread.join(90)
    for outcome in streams:
        assert (outcome.status, outcome.finished, outcome.error) == (200, True, None)
        assert outcome.tokens >= 56  # all 64 delivered (a few may merge in one chunk)
    late = [o for o in load.outcomes if o.served_by == "r2" and o.started > out_at]
    assert not load.failed("chat"), [o.error for o in load.failed("chat")]
    assert not load.failed("stream"), [o.error for o in load.failed("stream")]
    exit_code = draining.proc.wait(90)
    cluster.figures["sigterm"] = {
        "router_marked_down_s": round(out_after, 1),
        "streams_on_draining_replica_finished": f"{len(on_r2)}/{len(on_r2)}",
        "requests_during_drain": len(load.outcomes),
        "requests_failed": len(load.failed("chat")) + len(load.failed("stream")),
        "exit_code": exit_code,
        "router_so_far": cluster.retries(),
    }
    assert exit_code == 0
    assert out_at - signalled < 10
    assert not late, late  # once HAProxy marked it down, nothing new went to it
