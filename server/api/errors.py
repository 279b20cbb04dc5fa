"""Typed API errors and the one JSON envelope every error response uses.

``{"error": {"message", "type", "code", "param", "request_id"}}`` — the OpenAI shape plus the
request id, so the official client parses our errors and an operator can find the log line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.engine.boundary import field_path
from server.engine.types import InvalidRequestError as EngineInvalidRequestError


class APIError(Exception):
    """An error a client can act on. Subclasses fix the status and type."""

    status_code = 400
    error_type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}


class BadRequestError(APIError):
    """400: the request is wrong; ``param`` names the field (as the ``openai`` client's)."""

    status_code = 400


class AuthenticationError(APIError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(APIError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(APIError):
    status_code = 404
    error_type = "not_found_error"


class ConflictError(APIError):
    """409: the request clashes with what is stored or with work in progress."""

    status_code = 409
    error_type = "conflict_error"


class RateLimitError(APIError):
    status_code = 429
    error_type = "rate_limit_error"


class OutputRejectedError(APIError):
    """The model's answer broke the requested ``response_format``. Only ever reported in-band,
    after a stream's first byte; a whole response carries the reason as ``message.refusal``."""

    status_code = 422
    error_type = "invalid_output_error"


class ServiceUnavailableError(APIError):
    status_code = 503
    error_type = "service_unavailable"


class ClientDisconnected(Exception):
    """The client went away before its response: nothing to answer, nothing went wrong.

    Raised instead of a cancellation (``asyncio.CancelledError``), which escaped the app and
    made uvicorn log "Exception in ASGI application" with a traceback for every client that
    stopped waiting; the request-context middleware logs and counts it as 499 (nginx's
    "client closed request") and sends nothing.
    """


def request_id_of(request: Request) -> str | None:
    """The request id set by the request-id middleware, if it ran."""
    return getattr(request.state, "request_id", None)


def error_body(
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The JSON envelope, as a dict (also used inside SSE streams)."""
    return {
        "error": {
            "message": message,
            "type": error_type,
            "code": code,
            "param": param,
            "request_id": request_id,
        }
    }


def error_response(
    request: Request,
    status_code: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = error_body(
        message, error_type, code=code, param=param, request_id=request_id_of(request)
    )
    return JSONResponse(body, status_code=status_code, headers=headers)


def _field_path(loc: Sequence[Any]) -> str:
    return field_path(p for p in loc if p not in ("body", "query", "path", "header")) or "body"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return error_response(
        request,
        exc.status_code,
        exc.message,
        exc.error_type,
        code=exc.code,
        param=exc.param,
        headers=exc.headers,
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    param = _field_path(first.get("loc", ()))
    details = "; ".join(f"{_field_path(e.get('loc', ()))}: {e.get('msg', '')}" for e in errors[:5])
    return error_response(
        request,
        400,
        f"Invalid request: {details}",
        "invalid_request_error",
        code="invalid_value",
        param=param,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    types = {401: "authentication_error", 404: "not_found_error", 405: "invalid_request_error"}
    return error_response(
        request,
        exc.status_code,
        str(exc.detail),
        types.get(
            exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error"
        ),
        headers=getattr(exc, "headers", None),
    )


async def _engine_invalid_request(request: Request, exc: Exception) -> JSONResponse:
    # Raised by the validation boundary in front of llama.cpp (server/engine/boundary.py)
    # wherever a handler tokenizes or detokenizes outside a generation.
    assert isinstance(exc, EngineInvalidRequestError)
    return error_response(
        request, 400, str(exc), "invalid_request_error", code="invalid_value", param=exc.param
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    # The traceback goes to the log (with the request id); the client gets the id only.
    logger.opt(exception=exc).error("unhandled error on {}", request.url.path)
    return error_response(
        request,
        500,
        "Internal server error. Quote the request_id when reporting it.",
        "server_error",
        code="internal_error",
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every error, expected or not, through the JSON envelope."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(EngineInvalidRequestError, _engine_invalid_request)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
