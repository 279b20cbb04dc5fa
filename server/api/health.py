"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from server.api.deps import ServicesDep, authenticate

router = APIRouter(tags=["operations"])


def _status(services: ServicesDep) -> dict[str, Any]:
    snap = services.readiness.snapshot()
    drain = services.drain
    body: dict[str, Any] = {
        "status": "draining" if drain.draining else snap.state,
        "reason": "shutting down: finishing the requests in flight"
        if drain.draining
        else snap.reason,
        "model": services.model_id,
        "model_version": services.served_version,
        "model_path": services.served.path
        if services.served
        else str(services.settings.model_path),
    }
    if draining := services.models.draining:
        body["models_draining"] = [d.version for d in draining]
    if services.model_file is not None:
        body["model_file"] = services.model_file.state()
    meta = services.model_meta
    for key in ("quantization", "manifest_name", "n_params", "architecture"):
        if (value := getattr(meta, key)) is not None:
            body[key] = value
    if services.engine is not None:
        stats = services.engine.stats()
        body["slots_total"] = stats.slots_total
        body["slots_active"] = stats.slots_active
        body["queue_depth"] = stats.queue_depth
    return body


@router.get("/health")
async def health(services: ServicesDep) -> dict[str, Any]:
    """Liveness: 200 whenever the process serves, with the load state in the body."""
    return _status(services)


@router.get(
    "/ready", responses={503: {"description": "loading, the load failed, or draining to exit"}}
)
async def ready(services: ServicesDep) -> JSONResponse:
    """Readiness: 200 once the model is loaded and warmed; 503 with the reason otherwise.

    From the first SIGTERM on it answers 503 ("draining"), so load balancers stop sending.
    """
    body = _status(services)
    if services.readiness.is_ready and not services.drain.draining:
        return JSONResponse(body)
    return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus metrics; needs an API key unless GGSERVE_METRICS_PUBLIC (docs/security.md)."""
    if not services.settings.metrics_without_key:
        await authenticate(request, services)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
