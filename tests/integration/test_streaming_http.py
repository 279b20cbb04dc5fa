"""Streaming over real HTTP against the real model: the three stream bugs stay fixed.

1. A streaming request that can never run (max_tokens over the limit, a full queue) gets an
   ordinary JSON error with its status, on every streaming endpoint — not a 200 followed by a
   cut connection.
2. A guardrail refusal honours ``stream: true`` on chat, completions and /v1/ask.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.server_proc import ServerHandle, running_server

BLOCKED = "xyzzy-forbidden"
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"  # the model keeps counting: a long generation
NO_EOS = {"temperature": 0, "logit_bias": {"0": -100, "1": -100, "2": -100}}  # SmolLM2's specials
ENDPOINTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hi."}]}),
    "completions": ("/v1/completions", {"prompt": "Once upon a time"}),
    "ask": ("/v1/ask", {"question": "Say hi."}),
}


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    """One slot and no queue, so a second request finds the server full; a guardrail policy."""
    policy: Path = tmp_path_factory.mktemp("policy") / "policy.txt"
    policy.write_text(f"{BLOCKED}\n")
    env = {
        "GGSERVE_N_SLOTS": "1",
        "GGSERVE_MAX_QUEUE": "0",
        "GGSERVE_GUARDRAILS_FILE": str(policy),
        "GGSERVE_MAX_TOKENS_LIMIT": "512",
    }
    with running_server(env) as handle:
        yield handle


def _post_stream(server: ServerHandle, endpoint: str, **extra: Any) -> httpx.Response:
    path, body = ENDPOINTS[endpoint]
    with (
        httpx.Client(base_url=server.url, headers=server.headers, timeout=120) as client,
        client.stream("POST", path, json={**body, **extra, "stream": True}) as response,
    ):
        response.read()
        return response


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_stream_with_max_tokens_over_the_limit_is_a_json_400(
    one_slot_server: ServerHandle, endpoint: str
) -> None:
    response = _post_stream(one_slot_server, endpoint, max_tokens=100_000)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["param"] == "max_tokens"


def _slots_active(server: ServerHandle) -> int:
    return int(httpx.get(server.url + "/health", timeout=10).json()["slots_active"])


def _wait_for_slots(server: ServerHandle, active: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while _slots_active(server) != active:
        assert time.monotonic() < deadline, f"slots_active never became {active}"
        time.sleep(0.1)


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_stream_on_a_full_server_is_a_json_503_with_retry_after(
    one_slot_server: ServerHandle, endpoint: str
) -> None:
    # The slot of an earlier test's cancelled request is freed at the engine's next step.
    _wait_for_slots(one_slot_server, 0)
    holder_status: list[int] = []
    started = threading.Event()
    done = threading.Event()

    def occupy_the_only_slot() -> None:
        path, body = ENDPOINTS["completions"]
        long = {**body, "prompt": COUNTING, "max_tokens": 400, "stream": True, **NO_EOS}
        with (
            httpx.Client(base_url=one_slot_server.url, headers=one_slot_server.headers) as c,
            c.stream("POST", path, json=long, timeout=120) as response,
        ):
            holder_status.append(response.status_code)
            for _ in response.iter_lines():
                started.set()
                if done.is_set():
                    break

    holder = threading.Thread(target=occupy_the_only_slot)
    holder.start()
    try:
        assert started.wait(60), "the slot-holding request never started streaming"
        assert holder_status == [200] and _slots_active(one_slot_server) == 1
        response = _post_stream(one_slot_server, endpoint)
    finally:
        done.set()
        holder.join(60)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == "overloaded"
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
def test_a_refusal_streams_as_server_sent_events(
    one_slot_server: ServerHandle, endpoint: str
) -> None:
    path, body = ENDPOINTS[endpoint]
    blocked = json.loads(json.dumps(body).replace("Say hi.", f"Tell me about {BLOCKED}."))
    if endpoint == "completions":
        blocked["prompt"] = f"A story about {BLOCKED}:"
    with (
        httpx.Client(base_url=one_slot_server.url, headers=one_slot_server.headers) as client,
        client.stream("POST", path, json={**blocked, "stream": True}, timeout=60) as resp,
    ):
        text = resp.read().decode()
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    if endpoint == "ask":
        assert "event: done" in text and '"content_filter"' in text
    else:
        assert '"finish_reason":"content_filter"' in text and text.rstrip().endswith("[DONE]")
