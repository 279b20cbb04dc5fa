"""Pure-ASGI middleware around every request: request id, body limit, one log record, metrics.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and an
exception anywhere below still becomes the JSON envelope *with* the X-Request-ID header.

The request id is always the server's own (a fresh uuid): it becomes the response id that
capture and ``/v1/feedback`` key on, so a client that chose it could claim an id another
client's gateway will send, and drop that client's capture and feedback. A client's valid
``X-Request-ID`` is kept as a correlation id only: echoed as ``X-Client-Request-ID``, logged as
``client_request_id`` and put on the request's trace span.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import Any

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.errors import ClientDisconnected, error_body
from server.observability.metrics import Metrics
from server.observability.resources import rss_mb, vram_mb
from server.observability.sanitize import for_log
from server.observability.tracing import Tracing, request_span
from server.runtime.drain import Drain

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Per-request facts handlers add for the request log line (usage, key id, finish reason...).
LOG_FIELDS_KEY = "log_fields"
# Headers a dependency wants on the response, whatever response class the route returns.
RESPONSE_HEADERS_KEY = "response_headers"


# nginx's "client closed request": the client left before its response (ClientDisconnected).
CLIENT_CLOSED_REQUEST = 499

# Probes are frequent and say nothing about a user's request: no trace for them.
_PROBES = frozenset({"/health", "/ready", "/metrics"})


class _BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestContextMiddleware:
    """Gives each request an id, enforces the body limit, logs it once and counts it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: Metrics,
        max_body_bytes: int,
        tracing: Tracing | None = None,
        drain: Drain | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.drain = drain
        self.tracing = tracing or Tracing()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        client_request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else None
        request_id = uuid.uuid4().hex  # never the client's (see the module doc)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        fields: dict[str, Any] = {}
        if client_request_id is not None:
            fields["client_request_id"] = client_request_id
        state[LOG_FIELDS_KEY] = fields
        started = time.perf_counter()
        status = {"code": 500, "sent": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                if client_request_id is not None:
                    headers.append((b"x-client-request-id", client_request_id.encode()))
                for name, value in state.get(RESPONSE_HEADERS_KEY, {}).items():
                    headers.append((name.lower().encode(), str(value).encode()))
                message = {**message, "headers": headers}
            await send(message)

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        declared = _header(scope, b"content-length")
        self.metrics.in_flight.inc()
        method, path = scope.get("method", ""), scope.get("path", "")
        traced = self.tracing if path not in _PROBES else Tracing()
        # The drain waits for these (streams included); probes do not hold a shutdown up.
        tracked = (
            self.drain.track()
            if self.drain is not None and path not in _PROBES
            else contextlib.nullcontext()
        )
        with (
            logger.contextualize(request_id=request_id),
            request_span(
                traced,
                f"{method} {path}",
                request_id,
                {"ggserve.client_request_id": client_request_id} if client_request_id else None,
            ) as span,
            tracked,
        ):
            try:
                if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                    raise _BodyTooLarge
                await self.app(scope, limited_receive, send_with_id)
            except ClientDisconnected:
                # Nothing to send (the connection is gone) and nothing went wrong here.
                status["code"] = CLIENT_CLOSED_REQUEST
                fields.setdefault("finish_reason", "client_disconnected")
            except _BodyTooLarge:
                if not status["sent"]:
                    await self._send_error(
                        send_with_id,
                        413,
                        request_id,
                        "payload_too_large",
                        f"Request body is larger than the limit of {self.max_body_bytes} bytes.",
                        "invalid_request_error",
                    )
            except Exception as exc:  # the last line of defence: never leak a traceback
                logger.opt(exception=exc).error("unhandled error")
                if not status["sent"]:
                    await self._send_error(
                        send_with_id,
                        500,
                        request_id,
                        "internal_error",
                        "Internal server error. Quote the request_id when reporting it.",
                        "server_error",
                    )
            finally:
                self.metrics.in_flight.dec()
                self._record(scope, request_id, status["code"], started, fields)
                if span is not None:
                    span.set_attribute("http.route", _route_of(scope))
                    span.set_attribute("http.status_code", status["code"])

    @staticmethod
    async def _send_error(
        send: Send, code: int, request_id: str, error_code: str, message: str, error_type: str
    ) -> None:
        body = json.dumps(
            error_body(message, error_type, code=error_code, request_id=request_id)
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": code,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _record(
        self, scope: Scope, request_id: str, status: int, started: float, fields: dict[str, Any]
    ) -> None:
        latency_s = time.perf_counter() - started
        route = _route_of(scope)
        key_id = str(fields.get("key_id", "-"))
        self.metrics.requests.labels(route=route, status=str(status), key_id=key_id).inc()
        if route in _PROBES:
            return  # probes are counted, but not logged: they would drown the real traffic
        self.metrics.latency.labels(route=route).observe(latency_s)
        path = for_log(scope.get("path", ""))  # client-chosen: bounded, control chars escaped
        logger.bind(
            event="request",
            method=scope.get("method"),
            route=route,
            path=path,
            status=status,
            latency_ms=round(latency_s * 1000, 1),
            key_id=fields.get("key_id"),
            client_request_id=fields.get("client_request_id"),
            model_version=fields.get("model_version"),
            ttft_ms=fields.get("ttft_ms"),
            prompt_tokens=fields.get("prompt_tokens"),
            cached_prompt_tokens=fields.get("cached_prompt_tokens"),
            completion_tokens=fields.get("completion_tokens"),
            tokens_per_s=fields.get("tokens_per_s"),
            finish_reason=fields.get("finish_reason"),
            rss_mb=round(rss_mb(), 1),
            vram_mb=vram_mb(),
        ).info("{} {} {} {:.0f}ms", scope.get("method"), path, status, latency_s * 1000)
