"""A client that goes away at each stage of a request, placed there exactly (no sleeps).

Each test runs one request through the whole ASGI app (middleware, dependencies, handler,
pipeline) over a scripted engine that holds its slot at a chosen point until cancelled, and a
``receive`` that reports the disconnect once the engine is holding, as uvicorn's does. What
must hold whenever a client leaves: the app neither raises nor logs an error (uvicorn would
print "Exception in ASGI application"), the request is logged and counted once with what
happened, the generation is cancelled (its slot freed) and the model's lease returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from loguru import logger
from starlette.types import Message

from server.agents.rag_agent import RagAgent
from server.agents.runtime import AskRuntime
from server.api.generation import RequestContext
from server.api.streaming import open_stream
from server.app import create_app
from server.engine.types import EngineEvent, GenerationRequest, TokenEvent
from server.rag.retriever import SearchResult
from server.runtime.services import ModelMeta, Services
from server.settings import Settings
from tests.fakes import FakeEngine

QUESTION = "What is the capital of France?"
# (path, body) of a generation request on each route that may run long
ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]}),
    "completions": ("/v1/completions", {"prompt": QUESTION, "max_tokens": 32}),
    "responses": ("/v1/responses", {"input": QUESTION}),
    "ask": ("/v1/ask", {"question": QUESTION}),
}


@dataclass
class HoldingEngine(FakeEngine):
    """Yields ``tokens_before_hold`` tokens, then holds its slot (a long prompt evaluation when
    0, a long generation otherwise) until cancelled; ``holding`` is set from then on. With
    None it answers as the plain ``FakeEngine`` does."""

    tokens_before_hold: int | None = 1
    holding: asyncio.Event = field(default_factory=asyncio.Event)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if self.tokens_before_hold is None:
            async for event in super().generate(request):
                yield event
            return
        self.requests.append(request)
        self.active += 1
        try:
            for i in range(self.tokens_before_hold):
                yield TokenEvent(text=" word", token_id=i, index=0)
            self.holding.set()
            await asyncio.Event().wait()  # never set: only a cancellation ends this
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled.append(request.request_id)
            raise
        finally:
            self.active -= 1


@dataclass
class Exchange:
    """One request as the server side saw it."""

    sent: list[Message]  # what the app sent (uvicorn drops it once the client is gone)
    raised: BaseException | None  # what escaped the app: uvicorn logs it as an error


async def exchange(
    app: FastAPI,
    path: str,
    body: dict[str, Any],
    gone: asyncio.Event,
    headers: list[tuple[bytes, bytes]] = [],  # noqa: B006 (never mutated)
) -> Exchange:
    """POST ``body`` to ``path``; the client disconnects once ``gone`` is set.

    ``receive`` is uvicorn's: the body, then it waits for the next message, which is
    ``http.disconnect`` once the client has gone (at once if it has gone already).
    """
    sent: list[Message] = []
    body_sent = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    try:
        await asyncio.wait_for(app(scope, receive, send), timeout=10)
    except BaseException as exc:
        return Exchange(sent, exc)
    return Exchange(sent, None)


@dataclass
class Harness:
    app: FastAPI
    engine: HoldingEngine
    records: list[dict[str, Any]]

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    def request_records(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r["extra"].get("event") == "request"]

    def errors(self) -> list[str]:
        return [r["message"] for r in self.records if r["level"].name in ("ERROR", "CRITICAL")]

    def leases_out(self) -> int:
        current = self.services.models.current
        assert current is not None
        return current.inflight


@contextlib.contextmanager
def _capture_logs() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        yield records
    finally:
        logger.remove(sink)


@pytest.fixture
async def harness(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, request: pytest.FixtureRequest
) -> AsyncIterator[Harness]:
    engine = HoldingEngine(tokens_before_hold=getattr(request, "param", 1))
    monkeypatch.setattr(
        "server.runtime.loading.create_engine",
        lambda settings: (engine, ModelMeta(architecture="fake")),
    )
    settings = Settings(
        _env_file=None,
        auth_disabled=True,
        warmup=False,
        log_format="text",
        feedback_db=tmp_path / "feedback.db",
    )
    app = create_app(settings)
    with _capture_logs() as records:
        async with app.router.lifespan_context(app):
            services: Services = app.state.services
            for _ in range(500):
                if services.readiness.snapshot().state == "ready":
                    break
                await asyncio.sleep(0.01)
            yield Harness(app, engine, records)


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_client_gone_while_a_whole_response_is_generated_is_logged_as_499(
    harness: Harness, route: str
) -> None:
    path, body = ROUTES[route]
    result = await exchange(harness.app, path, body, harness.engine.holding)
    assert result.raised is None, f"escaped the app: {result.raised!r}"
    assert harness.errors() == []
    [record] = harness.request_records()
    assert record["extra"]["status"] == 499
    assert record["extra"]["finish_reason"] == "client_disconnected"
    assert harness.engine.cancelled == [harness.engine.requests[0].request_id]
    assert harness.engine.active == 0
    assert harness.leases_out() == 0


@pytest.mark.parametrize("harness", [0], indirect=True)
@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_client_gone_before_a_stream_is_admitted_is_logged_as_499(
    harness: Harness, route: str
) -> None:
    path, body = ROUTES[route]
    result = await exchange(harness.app, path, {**body, "stream": True}, harness.engine.holding)
    assert result.raised is None, f"escaped the app: {result.raised!r}"
    assert harness.errors() == []
    [record] = harness.request_records()
    assert record["extra"]["status"] == 499
    assert record["extra"]["finish_reason"] == "client_disconnected"
    assert harness.engine.active == 0
    assert harness.leases_out() == 0


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_client_gone_mid_stream_ends_the_stream_quietly(
    harness: Harness, route: str
) -> None:
    path, body = ROUTES[route]
    result = await exchange(harness.app, path, {**body, "stream": True}, harness.engine.holding)
    assert result.raised is None, f"escaped the app: {result.raised!r}"
    assert harness.errors() == []
    [record] = harness.request_records()
    assert record["extra"]["status"] == 200  # the status line had gone out
    assert record["extra"]["finish_reason"] == "client_disconnected"
    assert harness.engine.cancelled == [harness.engine.requests[0].request_id]
    assert harness.engine.active == 0
    assert harness.leases_out() == 0


class _Frames:
    """The least ``SseFormat``: one data frame per event."""

    def frames(self, event: str) -> Iterator[dict[str, str]]:
        yield {"data": event}

    def error_frames(self, body: dict[str, Any]) -> Iterator[dict[str, str]]:
        yield {"data": json.dumps(body)}

    def closing_frames(self) -> Iterator[dict[str, str]]:
        return iter(())


class _Connected:
    async def is_disconnected(self) -> bool:
        return False


async def test_a_stream_cancelled_while_admitting_is_closed_once_it_has_stopped() -> None:
    # uvicorn cancels requests still running when its graceful-shutdown time is over.
    holding = asyncio.Event()
    closed: list[str] = []

    async def events() -> AsyncIterator[str]:
        try:
            holding.set()
            await asyncio.Event().wait()  # a prompt evaluation that is not done
            yield "never"
        finally:
            closed.append("closed")

    ctx = RequestContext(request_id="r1", key_id="k", route="/v1/chat/completions")
    stream = asyncio.ensure_future(open_stream(_Connected(), ctx, events(), _Frames()))  # type: ignore[arg-type]
    await holding.wait()
    stream.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stream
    assert closed == ["closed"]


class BlockingSearcher:
    """/v1/ask retrieval that holds its worker thread (a slow embed or search) until
    ``release`` is set; ``searching`` is set on the event loop once it has started."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.searching = asyncio.Event()
        self.release = threading.Event()

    def search(self, query: str, k: int, threshold: float | None = None) -> SearchResult:
        self.loop.call_soon_threadsafe(self.searching.set)
        assert self.release.wait(10), "the test never let the search finish"
        return SearchResult(hits=[], embed_ms=0.0, search_ms=0.0, candidates=0)


@dataclass
class _Holder:
    current: BlockingSearcher


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_gone_during_ask_retrieval_is_logged_as_499(
    harness: Harness, stream: bool
) -> None:
    searcher = BlockingSearcher()
    harness.services.ask = AskRuntime(RagAgent(), _Holder(searcher))  # type: ignore[arg-type]
    try:
        body = {"question": QUESTION, "stream": stream}
        result = await exchange(harness.app, "/v1/ask", body, searcher.searching)
    finally:
        searcher.release.set()
    assert result.raised is None, f"escaped the app: {result.raised!r}"
    assert harness.errors() == []
    [record] = harness.request_records()
    assert record["extra"]["status"] == 499
    assert harness.engine.requests == []  # the question never reached the model
    assert harness.leases_out() == 0


class SlowLimiter:
    """A rate limiter whose token charge waits (a slow Redis) until ``release`` is set."""

    def __init__(self) -> None:
        self.charging = asyncio.Event()
        self.release = asyncio.Event()
        self.charged: list[tuple[str, int]] = []
        self.done = asyncio.Event()

    async def admit(self, key_id: str) -> None:
        return None  # no limit reached

    async def charge_tokens(self, key_id: str, tokens: int) -> None:
        self.charging.set()
        await self.release.wait()
        self.charged.append((key_id, tokens))
        self.done.set()


@pytest.mark.parametrize("harness", [None], indirect=True)
async def test_a_client_gone_while_its_tokens_are_charged_is_still_charged(
    harness: Harness,
) -> None:
    limiter = SlowLimiter()
    harness.services.limiter = limiter  # type: ignore[assignment]
    path, body = ROUTES["chat"]
    result = await exchange(harness.app, path, body, limiter.charging)
    assert result.raised is None, f"escaped the app: {result.raised!r}"
    [record] = harness.request_records()
    assert record["extra"]["status"] == 499
    limiter.release.set()
    await asyncio.wait_for(limiter.done.wait(), timeout=2)  # never set when the charge died
    used = record["extra"]["prompt_tokens"] + record["extra"]["completion_tokens"]
    assert limiter.charged == [("anonymous", used)]  # prompt and completion alike
