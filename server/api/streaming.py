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
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Protocol, TypeVar

from loguru import logger
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.types import Message, Send

from server.api.errors import APIError, error_body
from server.api.generation import RequestContext, until_disconnected

E = TypeVar("E")
E_contra = TypeVar("E_contra", contravariant=True)
Frame = dict[str, str]  # one server-sent event: {"data": ...} and optionally {"event": ...}

PING_S = 15  # comment frames keep idle proxies from closing a slow generation's stream


class SseResponse(EventSourceResponse):
    """sse-starlette's response, sending each event without a cancel scope around it.

    With no send timeout set, ``EventSourceResponse`` still opens an anyio ``move_on_after``
    scope for every event. Without it the event loop's CPU per streamed token fell from
    0.36-0.41 ms to 0.33 ms (one client, 2 cores), time that was taken from llama.cpp's decode
    threads. No timeout is needed: a slow reader only holds its own response task (uvicorn's
    flow control), and what queues for it is bounded by its max_tokens
    (tests/integration/test_slow_client.py).
    """

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        if self.send_timeout is None:
            await send(message)
        else:
            await super()._send_with_timeout(send, message)


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
) -> SseResponse:
    """Admit ``events``, then answer with their frames as a server-sent event stream.

    Events are pulled (and kept) until the first for which ``is_output`` is true, so every
    failure before that point raises here and becomes a JSON error response; a client that
    leaves meanwhile cancels the work.
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
    return SseResponse(_frames(ctx, admitted, events, fmt), ping=PING_S)


async def _frames(
    ctx: RequestContext, admitted: list[E], events: AsyncIterator[E], fmt: SseFormat[E]
) -> AsyncIterator[Frame]:
    try:
        for event in admitted:
            for frame in fmt.frames(event):
                yield frame
        async for event in events:
            for frame in fmt.frames(event):
                yield frame
    except asyncio.CancelledError:
        ctx.log_fields["finish_reason"] = "client_disconnected"
        raise
    except Exception as exc:  # the status line is sent: report in-band, then end cleanly
        ctx.log_fields["finish_reason"] = "error"
        for frame in fmt.error_frames(_in_band_error(ctx, exc)):
            yield frame
    finally:
        await _close(events)
    for frame in fmt.closing_frames():
        yield frame


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
