"""The SSE response and its framing, at the ASGI level: what a client's parser reads, how
events are grouped into body chunks, and what a stalled, departed or idle client gets.

The framing is read back with the official ``openai`` client's own SSE decoder, so "parses as
separate events" means what it means for the clients that matter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai._streaming import SSEDecoder
from starlette.types import Message

from server.api.generation import RequestContext
from server.api.streaming import SseResponse, _chunks, encode, encode_all
from server.app import create_app
from server.runtime.services import ModelMeta, Services
from server.settings import Settings
from tests.fakes import FakeEngine


def _parse(body: bytes) -> list[tuple[str | None, str]]:
    """(event name, data) of each event, as the openai client's SSE decoder reads them."""
    return [(sse.event, sse.data) for sse in SSEDecoder().iter_bytes(iter([body]))]


def test_several_events_in_one_chunk_parse_as_separate_events() -> None:
    frames = [
        {"data": '{"a": 1}'},
        {"event": "token", "data": "two\nlines"},
        {"event": "token", "data": "cr\r\nlf and \r alone"},
        {"data": "[DONE]"},
    ]
    events = _parse(encode_all(frames))
    assert events == [
        (None, '{"a": 1}'),
        ("token", "two\nlines"),
        ("token", "cr\nlf and \n alone"),  # SSE turns every line break into \n
        (None, "[DONE]"),
    ]


def test_a_frame_is_written_as_sse_starlette_wrote_it() -> None:
    # the bytes clients saw before this response class: event line, data lines, CRLF ends
    assert encode({"data": "x"}) == "data: x\r\n\r\n"
    assert encode({"event": "e", "data": "a\nb"}) == "event: e\r\ndata: a\r\ndata: b\r\n\r\n"


class _Client:
    """An ASGI client side: records what the app sends; ``receive`` reports the disconnect
    once ``gone`` is set; ``stall`` (when set) makes every body send block until released."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()
        self.stall: asyncio.Event | None = None

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.stall is not None and message["type"] == "http.response.body":
            await self.stall.wait()
        self.sent.append(message)

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.sent if m["type"] == "http.response.body"]


async def _run(response: SseResponse, client: _Client) -> None:
    await response({"type": "http"}, client.receive, client.send)


async def test_a_disconnect_while_waiting_for_the_next_event_cancels_it() -> None:
    closed: list[str] = []

    waiting = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"data: first\r\n\r\n"
            waiting.set()
            await asyncio.Event().wait()  # a generation that has nothing to say yet
            yield b"never"
        except asyncio.CancelledError:
            closed.append("cancelled")
            raise

    client = _Client()
    call = asyncio.ensure_future(_run(SseResponse(chunks()), client))
    await waiting.wait()
    client.gone.set()
    await asyncio.wait_for(call, 5)  # returns quietly: nothing escapes to uvicorn
    assert closed == ["cancelled"]
    assert client.bodies == [b"data: first\r\n\r\n"]  # no closing body to a departed client


async def test_a_stalled_client_that_leaves_frees_its_stream() -> None:
    closed: list[str] = []

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"data: x\r\n\r\n"
        finally:
            closed.append("closed")

    client = _Client()
    client.stall = asyncio.Event()  # never set: the reader stopped reading
    call = asyncio.ensure_future(_run(SseResponse(chunks()), client))
    await asyncio.sleep(0.05)
    assert not call.done()  # waits on its own socket, nothing else
    client.gone.set()
    await asyncio.wait_for(call, 5)
    assert closed == ["closed"]


async def test_pings_arrive_while_the_stream_is_idle_and_not_while_it_flows() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):  # flowing: a frame every 10 ms, well inside the ping interval
            await asyncio.sleep(0.01)
            yield b"data: x\r\n\r\n"
        await asyncio.sleep(0.5)  # idle: a long prompt evaluation
        yield b"data: y\r\n\r\n"

    client = _Client()
    await asyncio.wait_for(_run(SseResponse(chunks(), ping_s=0.1), client), 5)
    bodies = client.bodies
    pings = [i for i, body in enumerate(bodies) if body.startswith(b": ping")]
    assert 2 <= len(pings) <= 6
    assert min(pings) > 19  # none among the flowing frames
    assert bodies[-1] == b""  # the stream still ends cleanly
    events = _parse(b"".join(bodies))
    assert [data for _, data in events] == ["x"] * 20 + ["y"]  # pings are comments


async def test_a_cancel_from_outside_is_not_swallowed() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""

    client = _Client()
    call = asyncio.ensure_future(_run(SseResponse(chunks()), client))
    await asyncio.sleep(0.01)
    call.cancel()  # uvicorn's shutdown, not the client leaving
    with pytest.raises(asyncio.CancelledError):
        await call


class _Format:
    def frames(self, event: str) -> list[dict[str, str]]:
        return [{"data": part} for part in event.split("+")]

    def error_frames(self, body: dict[str, Any]) -> list[dict[str, str]]:
        return [{"data": json.dumps(body)}]

    def closing_frames(self) -> list[dict[str, str]]:
        return [{"data": "[DONE]"}]


async def test_each_event_is_one_chunk_and_the_last_goes_with_the_closing_frames() -> None:
    async def events() -> AsyncIterator[str]:
        for event in ("b", "c+d", "end+usage"):
            yield event

    ctx = RequestContext(request_id="r", key_id="k", route="/v1/chat/completions")
    chunks = [
        chunk
        async for chunk in _chunks(ctx, ["role+a"], events(), _Format(), lambda e: e == "end+usage")
    ]
    assert [[data for _, data in _parse(chunk)] for chunk in chunks] == [
        ["role", "a"],
        ["b"],
        ["c", "d"],
        ["end", "usage", "[DONE]"],
    ]


async def test_a_failure_mid_event_keeps_its_earlier_frames_then_reports_in_band() -> None:
    class Failing(_Format):
        def frames(self, event: str) -> Any:
            yield {"data": "kept"}
            raise RuntimeError("/secret/path")

    async def events() -> AsyncIterator[str]:
        yield "x"

    ctx = RequestContext(request_id="r", key_id="k", route="/v1/chat/completions")
    chunks = [chunk async for chunk in _chunks(ctx, [], events(), Failing(), lambda e: False)]
    [(_, kept), (_, error), (_, done)] = _parse(b"".join(chunks))
    assert kept == "kept" and json.loads(error)["error"]["type"] == "server_error"
    assert done == "[DONE]" and ctx.log_fields["finish_reason"] == "error"


async def test_a_chat_stream_sends_one_chunk_per_token_and_one_to_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Through the whole app: the role chunks and first token go together, each token is one
    ``send``, and the finish, usage and ``[DONE]`` go in one last one."""
    engine = FakeEngine()
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
    body = {
        "messages": [{"role": "user", "content": "Capital of France?"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    client = _Client()
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode()}
        return await client.receive()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        for _ in range(500):
            if services.readiness.snapshot().state == "ready":
                break
            await asyncio.sleep(0.01)
        await asyncio.wait_for(app(scope, receive, client.send), 10)
    start = client.sent[0]
    assert start["status"] == 200
    assert (b"content-type", b"text/event-stream; charset=utf-8") in start["headers"]
    bodies = [b for b in client.bodies if b]
    words = engine.reply.split(" ")
    assert len(bodies) == len(words) + 1  # one send per token, one to end
    per_chunk = [[data for _, data in _parse(chunk)] for chunk in bodies]
    first = [json.loads(d)["choices"][0]["delta"] for d in per_chunk[0]]
    assert [(d.get("role"), d["content"]) for d in first] == [("assistant", ""), (None, "Paris")]
    assert len(per_chunk[-1]) == 3 and per_chunk[-1][-1] == "[DONE]"
    finish, usage = (json.loads(d) for d in per_chunk[-1][:2])
    assert finish["choices"][0]["finish_reason"] == "stop" and usage["usage"]["total_tokens"]
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or ""
        for chunk in per_chunk
        for d in chunk
        if d != "[DONE]" and json.loads(d)["choices"]
    )
    assert text == engine.reply
