"""/tokenize and /detokenize do their work off the event loop, and never leave a native call
running on a model whose lease was returned."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fastapi.testclient import TestClient

from server.api.tokenize.serving import off_the_loop
from tests.fakes import FakeEngine
from tests.unit.api.conftest import auth


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_1_mb_tokenize_with_pieces_runs_off_the_event_loop(
    client: TestClient, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, bool]] = []
    tokenize, token_piece = fake_engine.tokenize, fake_engine.token_piece

    def recording_tokenize(text: str, **kwargs: bool) -> list[int]:
        calls.append(("tokenize", _on_event_loop()))
        return tokenize(text, **kwargs)

    def recording_piece(token: int) -> bytes:
        calls.append(("piece", _on_event_loop()))
        return token_piece(token)

    monkeypatch.setattr(fake_engine, "tokenize", recording_tokenize)
    monkeypatch.setattr(fake_engine, "token_piece", recording_piece)
    content = "abcdefghi " * 99_000  # ~1 MB (the default body limit), 99 000 tokens
    response = client.post(
        "/tokenize", json={"content": content, "with_pieces": True}, headers=auth()
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["tokens"]) == 99_000
    assert calls[0] == ("tokenize", False)
    assert len(calls) == 99_001 and not any(on_loop for _, on_loop in calls)


def test_detokenize_runs_off_the_event_loop_and_still_refuses_bad_ids(
    client: TestClient, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_loop: list[bool] = []
    detokenize = fake_engine.detokenize

    def recording(tokens: list[int]) -> str:
        on_loop.append(_on_event_loop())
        return detokenize(tokens)

    monkeypatch.setattr(fake_engine, "detokenize", recording)
    ok = client.post("/detokenize", json={"tokens": [3] * 200_000}, headers=auth())
    assert ok.status_code == 200 and on_loop == [False]
    bad = client.post("/detokenize", json={"tokens": [1, 10**9]}, headers=auth())
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens[1]"


async def test_a_cancelled_request_waits_for_its_native_call_to_end() -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[float] = []

    def work() -> int:
        started.set()
        release.wait(5)
        finished.append(time.monotonic())
        return 1

    task = asyncio.create_task(off_the_loop(work))
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    await asyncio.sleep(0.05)
    assert not task.done()  # still waiting for the thread: the lease is not returned yet
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished  # the thread ended before the request did
