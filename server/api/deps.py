"""Request dependencies as ``Annotated`` aliases, so routes read like sentences."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, NoReturn

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from server.api.errors import (
    AuthenticationError,
    BadRequestError,
    RateLimitError,
    ServiceUnavailableError,
)
from server.api.generation import GenerationService, RequestContext
from server.api.middleware import LOG_FIELDS_KEY, RESPONSE_HEADERS_KEY
from server.engine.boundary import lone_surrogate_path
from server.runtime.services import ServedModel, Services
from server.security.client_address import client_address
from server.security.concurrency import Lease, requested_choices
from server.security.gateway_headers import (
    FAIRNESS_HEADER,
    OBJECTIVE_HEADER,
    GatewayHeaderError,
    fairness_tenant,
    objective_priority,
)


async def reject_invalid_text(request: Request) -> None:
    """400 naming the field when a JSON body holds a string that is not valid Unicode.

    JSON can spell a lone UTF-16 surrogate (``"\\ud800"``); Python decodes it into a str that
    no encoder accepts, so it would fail deep inside tokenizing, logging or storage. Runs on
    every route, after FastAPI has parsed the body (``request.json()`` is cached by then).
    """
    if not await request.body():
        return
    try:
        body = await request.json()
    except ValueError:
        return  # not JSON: the route's own body validation answers
    path = lone_surrogate_path(body)
    if path is not None:
        raise BadRequestError(
            f"{path} contains a lone UTF-16 surrogate (e.g. \\ud800), which is not valid "
            "Unicode text; send well-formed UTF-8.",
            code="invalid_unicode",
            param=path,
        )


async def _json_body(request: Request) -> object:
    """The request's JSON body (parsed once, cached by Starlette); None when there is none."""
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS") or not await request.body():
        return None
    try:
        return await request.json()
    except (ValueError, RecursionError):
        return None  # not JSON: the route's own body validation answers


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
            _refuse_invalid_key(request, services)
        key_id = match.key_id
    return key_id


def _refuse_invalid_key(request: Request, services: Services) -> NoReturn:
    """401 for a wrong key; 429 once its address has sent too many (docs/security.md).

    Only wrong keys are counted and refused: a valid key is served whatever others sent from
    its address, so a guesser cannot lock out the clients behind a shared proxy, and a 429
    says no more than a 401 does (both mean "wrong key").
    """
    failures = services.auth_failures
    if failures is not None:
        address = client_address(
            request.client.host if request.client else None,
            request.headers.getlist("x-forwarded-for"),
            services.settings.trusted_proxies,
        )
        blocked = failures.retry_after_s(address) is not None
        failures.record_failure(address)  # a guesser who keeps going stays blocked
        if blocked and (wait := failures.retry_after_s(address)) is not None:
            services.metrics.auth_failures_refused.inc()
            raise RateLimitError(
                f"Too many invalid API keys from this address; retry after {wait} s.",
                code="too_many_auth_failures",
                headers={"Retry-After": str(wait)},
            )
    raise AuthenticationError(
        "Invalid API key.", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
    )


async def rate_limited_key(
    request: Request, services: ServicesDep, key_id: Annotated[str, Depends(authenticate)]
) -> AsyncIterator[str]:
    """Authenticate, take the request's share of the key's concurrency cap (429 when full),
    then count it against the key's budgets (429 when spent).

    The share is held until the response has ended (FastAPI closes this dependency after the
    last byte, streams included), so parallel streams count for as long as they run.
    """
    lease = await _concurrency_lease(request, services, key_id)
    try:
        await _admit(request, services, key_id)
        yield key_id
    finally:
        if lease is not None:
            lease.release()


async def _concurrency_lease(request: Request, services: Services, key_id: str) -> Lease | None:
    """The units this request holds against its key's cap: ``n`` choices count ``n``."""
    concurrency = services.concurrency
    if concurrency is None:
        return None
    cap = concurrency.max_per_key
    n = requested_choices(await _json_body(request)) or 1
    if n > cap:
        raise BadRequestError(
            f"n is {n}; a key may have at most {cap} choices in flight on this server "
            "(GGSERVE_MAX_CONCURRENT_PER_KEY).",
            code="invalid_value",
            param="n",
        )
    lease = concurrency.try_acquire(key_id, n)
    if lease is None:
        services.metrics.rate_limited.labels(key_id=key_id, limit="concurrency").inc()
        raise RateLimitError(
            f"Concurrency limit reached for key '{key_id}': at most {cap} requests (choices) "
            f"in flight, {concurrency.in_flight(key_id)} already are. Retry when one ends.",
            code="rate_limit_concurrency",
            headers={"Retry-After": "1"},
        )
    return lease


async def _admit(request: Request, services: Services, key_id: str) -> None:
    limiter = services.limiter
    if limiter is None:
        return
    with services.tracing.span("rate_limit", {"ggserve.key_id": key_id}):
        decision = await limiter.admit(key_id)
    if decision is None:
        return
    if not decision.allowed:
        services.metrics.rate_limited.labels(key_id=key_id, limit=decision.limit_name).inc()
        raise RateLimitError(
            f"Rate limit reached for key '{key_id}': {decision.limit} {decision.limit_name} per "
            f"minute. Retry after {decision.headers()['Retry-After']} s.",
            code=f"rate_limit_{decision.limit_name}",
            headers=decision.headers(),
        )
    add_response_headers(request, decision.headers())


KeyIdDep = Annotated[str, Depends(rate_limited_key)]


async def served_model(request: Request, services: ServicesDep) -> AsyncIterator[ServedModel]:
    """The model version serving now, leased until the response's last byte is sent.

    FastAPI closes this dependency after the response (streamed or not) has gone out, so a
    hot swap lets this request finish on the engine it started on; that engine is freed when
    its last lease returns. 503 with the reason while loading or after a failed load.
    """
    if services.drain.draining:
        raise ServiceUnavailableError(
            "The server is shutting down; retry (another replica takes the request).",
            code="shutting_down",
            headers={"Retry-After": str(services.drain.retry_after_s())},
        )
    with services.models.lease() as deployment:
        snapshot = services.readiness.snapshot()
        if deployment is None or snapshot.state != "ready":
            raise ServiceUnavailableError(
                f"Model not ready ({snapshot.state}): {snapshot.reason}",
                code="model_not_ready",
                headers={"Retry-After": "5"},
            )
        _log_fields(request)["model_version"] = deployment.version
        services.metrics.model_requests.labels(version=deployment.version).inc()
        yield deployment.model


ServedModelDep = Annotated[ServedModel, Depends(served_model)]


def get_generation(services: ServicesDep, served: ServedModelDep) -> GenerationService:
    """The generation service over the model this request leased (taken once per request)."""
    return GenerationService.for_services(services, served)


GenerationDep = Annotated[GenerationService, Depends(get_generation)]


def request_context(request: Request, services: ServicesDep, key_id: KeyIdDep) -> RequestContext:
    route = getattr(request.scope.get("route"), "path", request.url.path)
    ctx = RequestContext(
        request_id=getattr(request.state, "request_id", "-"),
        key_id=key_id,
        route=str(route),
        log_fields=_log_fields(request),
        response_headers=request.scope.setdefault("state", {}).setdefault(RESPONSE_HEADERS_KEY, {}),
    )
    _apply_gateway_headers(request, services, ctx)
    return ctx


def _apply_gateway_headers(request: Request, services: Services, ctx: RequestContext) -> None:
    """The priority (objective header, else the key's default) and the fair-share tenant
    (fairness header, from a trusted proxy only); docs/observability.md, "Gateway headers"."""
    settings = services.settings
    try:
        objective = objective_priority(
            request.headers.getlist(OBJECTIVE_HEADER), settings.inference_objectives
        )
        ctx.tenant = fairness_tenant(
            request.headers.getlist(FAIRNESS_HEADER),
            request.client.host if request.client else None,
            settings.trusted_proxies,
        )
    except GatewayHeaderError as exc:
        raise BadRequestError(str(exc), code="invalid_header", param=exc.header) from None
    priority = objective if objective is not None else services.keys.default_priority(ctx.key_id)
    if priority is not None and priority < settings.min_priority:
        source = OBJECTIVE_HEADER if objective is not None else "priority"
        origin = OBJECTIVE_HEADER if objective is not None else "this API key's default"
        raise BadRequestError(
            f"priority is {priority} (from {origin}); this server accepts "
            f"{settings.min_priority} or more (GGSERVE_MIN_PRIORITY).",
            code="invalid_value",
            param=source,
        )
    ctx.priority = priority or 0


RequestContextDep = Annotated[RequestContext, Depends(request_context)]
