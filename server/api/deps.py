"""Request dependencies as ``Annotated`` aliases, so routes read like sentences."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from server.api.errors import AuthenticationError, RateLimitError, ServiceUnavailableError
from server.api.generation import GenerationService, RequestContext
from server.api.middleware import LOG_FIELDS_KEY, RESPONSE_HEADERS_KEY
from server.engine.types import Engine
from server.runtime.services import Services


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-KEY`` or ``Authorization: Bearer``."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _log_fields(request: Request) -> dict[str, Any]:
    fields: dict[str, Any] = request.scope.setdefault("state", {}).setdefault(LOG_FIELDS_KEY, {})
    return fields


def add_response_headers(request: Request, headers: dict[str, str]) -> None:
    """Headers the request-context middleware adds to whatever response goes out."""
    request.scope.setdefault("state", {}).setdefault(RESPONSE_HEADERS_KEY, {}).update(headers)


# Declared as security schemes so Swagger UI shows an "Authorize" button; the values are read
# by ``presented_key`` (one place), these only document and feed the OpenAPI schema.
_api_key_header = APIKeyHeader(name="X-API-KEY", auto_error=False)
_bearer = HTTPBearer(auto_error=False)


async def authenticate(
    request: Request,
    services: ServicesDep,
    _header: Annotated[str | None, Security(_api_key_header)] = None,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> str:
    """The caller's key id; 401 when the key is missing or unknown."""
    with services.tracing.span("auth"):
        key_id = _key_id(request, services)
    _log_fields(request)["key_id"] = key_id
    return key_id


def _key_id(request: Request, services: Services) -> str:
    if services.settings.auth_disabled:
        key_id = "anonymous"
    else:
        key = presented_key(request)
        if key is None:
            raise AuthenticationError(
                "Missing API key: send it as 'X-API-KEY: <key>' or 'Authorization: Bearer <key>'.",
                code="missing_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        match = services.keys.verify(key)
        if match is None:
            raise AuthenticationError(
                "Invalid API key.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
            )
        key_id = match.key_id
    return key_id


async def rate_limited_key(
    request: Request, services: ServicesDep, key_id: Annotated[str, Depends(authenticate)]
) -> str:
    """Authenticate, then count the request against the key's budgets (429 when spent)."""
    limiter = services.limiter
    if limiter is None:
        return key_id
    with services.tracing.span("rate_limit", {"ggserve.key_id": key_id}):
        decision = await limiter.admit(key_id)
    if decision is None:
        return key_id
    if not decision.allowed:
        services.metrics.rate_limited.labels(key_id=key_id, limit=decision.limit_name).inc()
        raise RateLimitError(
            f"Rate limit reached for key '{key_id}': {decision.limit} {decision.limit_name} per "
            f"minute. Retry after {decision.headers()['Retry-After']} s.",
            code=f"rate_limit_{decision.limit_name}",
            headers=decision.headers(),
        )
    add_response_headers(request, decision.headers())
    return key_id


KeyIdDep = Annotated[str, Depends(rate_limited_key)]


def get_engine(services: ServicesDep) -> Engine:
    """The engine, or 503 with the reason while loading or after a failed load."""
    snapshot = services.readiness.snapshot()
    if services.engine is None or snapshot.state != "ready":
        raise ServiceUnavailableError(
            f"Model not ready ({snapshot.state}): {snapshot.reason}",
            code="model_not_ready",
            headers={"Retry-After": "5"},
        )
    return services.engine


EngineDep = Annotated[Engine, Depends(get_engine)]


def get_generation(services: ServicesDep, engine: EngineDep) -> GenerationService:
    """The generation service over the engine serving now (taken once per request)."""
    return GenerationService.for_services(services, engine)


GenerationDep = Annotated[GenerationService, Depends(get_generation)]


def request_context(request: Request, key_id: KeyIdDep) -> RequestContext:
    route = getattr(request.scope.get("route"), "path", request.url.path)
    return RequestContext(
        request_id=getattr(request.state, "request_id", "-"),
        key_id=key_id,
        route=str(route),
        log_fields=_log_fields(request),
    )


RequestContextDep = Annotated[RequestContext, Depends(request_context)]
