"""SIGTERM/SIGINT drain the real server: streams in flight finish, new work is refused, exit 0."""

from __future__ import annotations

import json
import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from tests.integration.server_proc import ServerHandle, running_server

NEVER_STOP = {"0": -100, "2": -100}  # SmolLM2's end-of-generation tokens biased away


@dataclass
class StreamResult:
    first_token: threading.Event = field(default_factory=threading.Event)
    tokens: int = 0
    finish_reason: str | None = None
    error: str | None = None
    done: bool = False  # [DONE] seen
    exception: str | None = None


def _stream(server: ServerHandle, max_tokens: int, result: StreamResult) -> None:
    body = {
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "logit_bias": NEVER_STOP,
        "stream": True,
    }
    try:
        with httpx.stream(
            "POST",
            server.url + "/v1/chat/completions",
            json=body,
            headers=server.headers,
            timeout=120,
        ) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    result.done = True
                    continue
                event = json.loads(data)
                if "error" in event:
                    result.error = event["error"]["message"]
                    continue
                choice = event["choices"][0]
                if choice["delta"].get("content"):
                    result.tokens += 1
                    result.first_token.set()
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
    except httpx.HTTPError as exc:
        result.exception = f"{type(exc).__name__}: {exc}"
    finally:
        result.first_token.set()


def _start_streams(server: ServerHandle, n: int, max_tokens: int) -> list[StreamResult]:
    results = [StreamResult() for _ in range(n)]
    for result in results:
        threading.Thread(target=_stream, args=(server, max_tokens, result), daemon=True).start()
    for result in results:
        assert result.first_token.wait(60)
    return results


def _wait_exit(server: ServerHandle, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while server.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    code = server.proc.poll()
    assert code is not None, "server still running after the drain"
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_streams_in_flight_finish_after_the_signal_and_the_process_exits_0(
    sig: signal.Signals,
) -> None:
    with running_server({"GGSERVE_DRAIN_TIMEOUT_S": "60"}) as server:
        streams = _start_streams(server, 3, max_tokens=48)
        server.proc.send_signal(sig)
        time.sleep(0.3)
        ready = httpx.get(server.url + "/ready", timeout=5)
        assert ready.status_code == 503
        assert ready.json()["status"] == "draining"
        refused = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers=server.headers,
            timeout=10,
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "shutting_down"
        assert int(refused.headers["retry-after"]) >= 1
        assert _wait_exit(server, 90) == 0
        for result in streams:
            assert result.exception is None, result.exception
            assert result.error is None
            assert (result.finish_reason, result.done) == ("length", True)
            assert result.tokens >= 40  # every token was delivered (a few may merge in a chunk)
        assert '"event": "drained"' in server.log()


def test_streams_still_open_at_the_deadline_end_with_an_error_event_not_a_cut() -> None:
    with running_server({"GGSERVE_DRAIN_TIMEOUT_S": "2"}) as server:
        streams = _start_streams(server, 2, max_tokens=1800)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert _wait_exit(server, 60) == 0
        assert time.monotonic() - started < 15
        for result in streams:
            assert result.exception is None, result.exception  # not "peer closed connection"
            assert result.error is not None and "shutting down" in result.error
            assert result.done
            assert result.finish_reason is None


def test_an_idle_server_exits_0_at_once_on_sigterm() -> None:
    with running_server() as server:
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert _wait_exit(server, 30) == 0
        assert time.monotonic() - started < 5
