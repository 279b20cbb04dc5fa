"""The OpenAPI document says what the server really answers, errors included.

FastAPI documents a 422 for every body it validates; this server answers 400 with its own
envelope (``errors.py``), and 401, 403, 413, 429, 503 and 500 with the same envelope. A client
generator or a fuzzer reading the schema should see those, so each operation gets them here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

ERROR_SCHEMA = "ErrorResponse"


class ErrorDetail(BaseModel):
    """What went wrong, for whom, and which request (quote ``request_id`` in reports)."""

    message: str
    type: str
    code: str | None = None
    param: str | None = None
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """The one error envelope (OpenAI's shape plus the request id)."""

    error: ErrorDetail


_ERRORS = {
    "400": "Invalid request: the message names the field (param).",
    "401": "Missing or invalid API key.",
    "403": "The key is not allowed here (admin endpoints).",
    "413": "Request body larger than GGSERVE_MAX_BODY_BYTES.",
    "429": "Rate limit, or too many invalid keys from this address (Retry-After).",
    "500": "Unexpected server error; quote the request_id.",
    "503": "Model not ready, overloaded or shutting down (Retry-After).",
}


def _errors_for(path: str, method: str, operation: dict[str, Any]) -> list[str]:
    codes = ["500"]
    if method in ("post", "put", "patch"):
        codes += ["400", "413"]
    if operation.get("security") or path == "/metrics":
        codes += ["401", "429"]
    if path.startswith("/admin"):
        codes += ["403"]
    if path.startswith("/v1") or path.startswith("/admin") or path == "/ready":
        codes += ["503"]
    return codes


def _streams(operation: dict[str, Any], components: dict[str, Any]) -> bool:
    """Whether the request body has a ``stream`` flag (the answer may be server-sent events)."""
    content = operation.get("requestBody", {}).get("content", {})
    body = content.get("application/json", {}).get("schema", {})
    name = body.get("$ref", "").rsplit("/", 1)[-1]
    return "stream" in components.get(name, {}).get("properties", {})


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that documents the real error responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components[ERROR_SCHEMA] = ErrorResponse.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, definition in components[ERROR_SCHEMA].pop("$defs", {}).items():
            components[name] = definition
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        ref = {"$ref": f"#/components/schemas/{ERROR_SCHEMA}"}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                if _streams(operation, components) and "200" in responses:
                    responses["200"].setdefault("content", {})["text/event-stream"] = {
                        "schema": {"type": "string", "description": "Server-sent events."}
                    }
                responses.pop("422", None)
                for code in _errors_for(path, method, operation):
                    existing = responses.setdefault(code, {"description": _ERRORS[code]})
                    existing["content"] = {"application/json": {"schema": ref}}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
