"""The one streaming helper every endpoint uses: admit first, then stream, errors in-band.

A streamed response has two halves with different error rules:

* **Before the first byte** (admission: guardrails, limits, queue, context, retrieval, prompt
  evaluation) an error is an ordinary JSON error response with its status — 400, 429, 503 +
  ``Retry-After`` — so clients and load balancers see what happened. ``open_stream`` therefore
  pulls events until the first one that is real output before it answers 200.
* **After the first byte** the status is sent; an error becomes one error event in the
  endpoint's own format (OpenAI: ``data: {"error": …}`` then ``data: [DONE]``; /v1/ask:
  ``event: error``) and the stream ends cleanly instead of a cut connection.

Each endpoint only says how its events look on the wire (an ``SseFormat``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from loguru import logger
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from server.api.errors import APIError, error_body
from server.api.generation import Completed, RequestContext, until_disconnected

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)
Frame = dict[str, str]  # one server-sent event: {"data": ...} and optionally {"event": ...}

PING_S = 15.0  # comment frames keep idle proxies from closing a slow generation's stream
SEP = "\r\n"  # the line end sse-starlette wrote before; clients accept \r\n, \r and \n
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def encode(frame: Frame) -> str:
    """One server-sent event on the wire: ``event:`` (if any), one ``data:`` line per line of
    its data, then a blank line."""
    data = frame["data"]
    name = frame.get("event")
    if "\n" in data or "\r" in data:
        body = "".join(f"data: {line}{SEP}" for line in _LINE_BREAK.split(data))
    else:
        body = f"data: {data}{SEP}"
    if name is not None:
        body = f"event: {_LINE_BREAK.sub('', name)}{SEP}{body}"
    return body + SEP


def encode_all(frames: Iterable[Frame]) -> bytes:
    """Several events as one body chunk (a client's SSE parser splits them again)."""
    return "".join([encode(frame) for frame in frames]).encode()


class SseResponse(Response):
    """A server-sent event stream of pre-encoded chunks, one ASGI ``send`` per chunk.

    sse-starlette's ``EventSourceResponse`` started an anyio task group per stream (four tasks,
    a shutdown watcher) and built a ``ServerSentEvent`` per frame; without them the event loop's
    CPU per streamed token fell 0.80x (``python -m bench stream_cpu``, docs/engine.md). Here the
    request's own task sends each chunk as it comes; one helper task
    per stream waits for the client's disconnect (it then cancels the request's task, so the
    generation is cancelled where it waits, as before) and sends a ``: ping`` comment after
    ``ping_s`` without a frame. A slow reader holds only its own task (uvicorn's flow control);
    what can queue for it is bounded by its ``max_tokens`` (tests/integration/test_slow_client.py).
    """

    media_type = "text/event-stream"

    def __init__(self, chunks: AsyncIterator[bytes], *, ping_s: float = PING_S) -> None:
        self.chunks = chunks
        self.ping_s = ping_s
        self.status_code = 200
        self.background = None
        # no body: no content-length, uvicorn sends the stream chunked
        self.init_headers(
            {"Cache-Control": "no-store", "Connection": "keep-alive", "X-Accel-Buffering": "no"}
        )
        self._last_send = 0.0
        self._client_gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "ASGI apps run in a task"
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        self._last_send = loop.time()
        watcher = loop.create_task(self._watch(receive, send, task))
        try:
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                self._last_send = loop.time()
        except asyncio.CancelledError:
            if not self._client_gone:
                raise  # cancelled from outside (uvicorn's shutdown): not ours to swallow
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await _close(self.chunks)  # stopped at a yield (cut off mid-send): clean up now
        if self._client_gone:  # nothing more to send: uvicorn drops it anyway
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0)  # takes the watcher's cancel if it is still pending
            if task.uncancel() > 0:
                raise asyncio.CancelledError  # someone else cancelled this task as well
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if self.background is not None:  # FastAPI's BackgroundTasks, as Starlette runs them
            await self.background()

    async def _watch(self, receive: Receive, send: Send, stream: asyncio.Task[Any]) -> None:
        """Until cancelled: cancel ``stream`` when the client disconnects; ping when idle."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout_at(self._last_send + self.ping_s):
                    message = await receive()
            except TimeoutError:
                if loop.time() - self._last_send >= self.ping_s:
                    ping = f": ping - {datetime.now(UTC)}{SEP}{SEP}".encode()
                    await send({"type": "http.response.body", "body": ping, "more_body": True})
                    self._last_send = loop.time()
                continue
            if message["type"] == "http.disconnect":
                self._client_gone = True
                stream.cancel()
                return


class SseFormat(Protocol[E_contra]):
    """How one endpoint writes its events as server-sent events."""

    def frames(self, event: E_contra) -> Iterable[Frame]:
        """The frames for one event (may be none)."""
        ...

    def error_frames(self, body: dict[str, Any]) -> Iterable[Frame]:
        """The frames that report an error after the stream has started."""
        ...

    def closing_frames(self) -> Iterable[Frame]:
        """The frames that end every stream (OpenAI's ``[DONE]``; none for /v1/ask)."""
        ...


async def open_stream(
    http_request: Request,
    ctx: RequestContext,
    events: AsyncIterator[E],
    fmt: SseFormat[E],
    *,
    is_output: Callable[[E], bool] = lambda _event: True,
    is_last: Callable[[E], bool] = lambda event: isinstance(event, Completed),
) -> SseResponse:
    """Admit ``events``, then answer with their frames as a server-sent event stream.

    Events are pulled (and kept) until the first for which ``is_output`` is true, so every
    failure before that point raises here and becomes a JSON error response; a client that
    leaves meanwhile cancels the work. ``is_last`` names the event after which nothing comes:
    its frames go out with the closing ones, in one chunk.
    """
    admitted: list[E] = []

    async def admit() -> None:
        async for event in events:
            admitted.append(event)
            if is_output(event):
                return

    try:
        await until_disconnected(http_request, admit())
    except BaseException:
        await _close(events)
        raise
    return SseResponse(_chunks(ctx, admitted, events, fmt, is_last))


async def _chunks(
    ctx: RequestContext,
    admitted: list[E],
    events: AsyncIterator[E],
    fmt: SseFormat[E],
    is_last: Callable[[E], bool],
) -> AsyncIterator[bytes]:
    """The stream's body chunks: each event's frames as one chunk (the admitted events
    together, the last event with the closing frames), so an event costs one ``send``."""
    pending: list[str] = []  # encoded frames not sent yet (kept if formatting then fails)
    try:
        for event in admitted:
            pending.extend(map(encode, fmt.frames(event)))
        if pending and not is_last(admitted[-1]):
            yield "".join(pending).encode()
            pending.clear()
        async for event in events:
            pending.extend(map(encode, fmt.frames(event)))
            if pending and not is_last(event):
                yield "".join(pending).encode()
                pending.clear()
    except asyncio.CancelledError:
        ctx.log_fields["finish_reason"] = "client_disconnected"
        raise
    except Exception as exc:  # the status line is sent: report in-band, then end cleanly
        ctx.log_fields["finish_reason"] = "error"
        pending.extend(map(encode, fmt.error_frames(_in_band_error(ctx, exc))))
    finally:
        await _close(events)
    pending.extend(map(encode, fmt.closing_frames()))
    if pending:
        yield "".join(pending).encode()


def _in_band_error(ctx: RequestContext, exc: Exception) -> dict[str, Any]:
    if isinstance(exc, APIError):
        logger.warning("stream ended by {}: {}", type(exc).__name__, exc.message)
        return error_body(
            exc.message, exc.error_type, code=exc.code, param=exc.param, request_id=ctx.request_id
        )
    logger.opt(exception=exc).error("generation failed mid-stream")
    return error_body(
        "Internal error during generation. Quote the request_id when reporting it.",
        "server_error",
        code="internal_error",
        request_id=ctx.request_id,
    )


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
