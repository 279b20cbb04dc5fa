"""Operator endpoints: ``POST /admin/reload`` swaps in a rebuilt document index,
``POST /admin/models/activate`` swaps in another registered model version, ``GET /admin/drift``
shows how recent traffic compares with the drift reference."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from server.agents.runtime import reload_index
from server.api.deps import ServicesDep, authenticate
from server.api.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from server.drift.report import DriftReport
from server.rag.errors import RagError
from server.registry.activation import ActivationError
from server.runtime.drift import EmbedderAttacher
from server.runtime.model_file import ModelFile

router = APIRouter(prefix="/admin", tags=["operations"])


async def admin_key(services: ServicesDep, key_id: Annotated[str, Depends(authenticate)]) -> str:
    """An authenticated key whose id is listed in GGSERVE_ADMIN_KEY_IDS (403 otherwise)."""
    if key_id not in services.settings.admin_key_ids:
        raise PermissionDeniedError(
            f"key '{key_id}' is not an admin key (add its id to GGSERVE_ADMIN_KEY_IDS)",
            code="not_admin",
        )
    return key_id


@router.post("/reload")
async def reload(services: ServicesDep, _admin: Annotated[str, Depends(admin_key)]) -> Any:
    """Load the index's newest published version and swap it in atomically.

    Requests in flight finish on the version they started with; when the new version cannot
    be loaded the old one keeps serving and the error says why.
    """
    runtime = services.ask
    if runtime is None:
        raise ServiceUnavailableError(
            "not ready yet; see /ready", code="model_not_ready", headers={"Retry-After": "5"}
        )
    try:
        report = await reload_index(runtime)
    except RagError as exc:
        raise BadRequestError(
            f"reload failed, the previous index keeps serving: {exc}", code="reload_failed"
        ) from exc
    return asdict(report)


class ActivateRequest(BaseModel):
    """Which registered version to put in service."""

    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(..., ge=1, le=1_000_000, description="Registry version number.")
    action: Literal["promote", "rollback"] = Field(
        "promote", description="How the registry's history records the switch."
    )


class ActivateResponse(BaseModel):
    version: str
    previous: str | None
    model: str
    model_path: str
    load_s: float
    draining: int = Field(description="Requests still finishing on the previous version.")


_ACTIVATION_ERRORS = {
    "unknown_version": NotFoundError,
    "busy": ConflictError,
    "file_changed": BadRequestError,
    "load_failed": BadRequestError,
}


@router.post("/models/activate", response_model=ActivateResponse)
async def activate_model(
    body: ActivateRequest, services: ServicesDep, admin: Annotated[str, Depends(admin_key)]
) -> ActivateResponse:
    """Load a registered version beside the one serving, then send new requests to it.

    Requests in flight finish on the old version, which is freed after the last of them;
    ``/ready`` stays 200 throughout. When the new version cannot be loaded the old one keeps
    serving and the error says why. The registry records who promoted what and when.
    """
    activator = services.activator
    if activator is None:
        raise BadRequestError(
            "no model registry is configured: set GGSERVE_REGISTRY_PATH and restart",
            code="registry_not_configured",
        )
    if not services.readiness.is_ready:
        raise ServiceUnavailableError(
            "not ready yet; see /ready", code="model_not_ready", headers={"Retry-After": "5"}
        )
    previous = services.served
    try:
        result = await activator.activate(body.version, by=admin, action=body.action)
    except ActivationError as exc:
        services.metrics.model_activations.labels(result=exc.kind).inc()
        logger.bind(event="model_activation_failed", version=body.version, kind=exc.kind).error(
            "model activation failed: {}", exc
        )
        raise _ACTIVATION_ERRORS[exc.kind](str(exc), code=exc.kind, param="version") from exc
    served = services.served
    assert served is not None  # just installed
    if previous is not None and previous.rollout.running is not None:
        # Its arms were adapters of the old model: it ends here, recorded as stopped.
        previous.rollout.stop(by=f"hot swap to {result.version}")
    services.metrics.model_activations.labels(result="ok").inc()
    services.metrics.serving(served.model_id, served.version)
    services.model_file = ModelFile.observe(Path(served.path))  # /health watches the new file
    if services.drift is not None:
        services.drift.model_promoted()
    logger.bind(
        event="model_activated",
        by=admin,
        action=body.action,
        model_version=result.version,
        previous=result.previous,
        load_s=result.load_s,
        draining=result.draining,
    ).info(
        "model {} now serves new requests ({} draining on {})",
        result.version,
        result.draining,
        result.previous,
    )
    return ActivateResponse(
        version=result.version,
        previous=result.previous,
        model=served.model_id,
        model_path=result.model_path,
        load_s=result.load_s,
        draining=result.draining,
    )


@router.get("/drift")
async def drift(
    services: ServicesDep,
    _admin: Annotated[str, Depends(admin_key)],
    evaluate: Annotated[
        bool, Query(description="Run an evaluation now instead of returning the last one.")
    ] = False,
) -> Any:
    """The last drift report (reference vs current window, signal by signal), or null before
    the first scheduled evaluation; ``?evaluate=true`` computes one now (CPU: about a second
    at the default windows)."""
    monitor = services.drift
    if monitor is None:
        raise NotFoundError(
            "drift monitoring is off; set GGSERVE_DRIFT_ENABLED=true", code="drift_disabled"
        )
    report: DriftReport | None = monitor.latest
    if evaluate:
        await EmbedderAttacher(monitor, services.embedder)()
        report = await asyncio.to_thread(monitor.evaluate)
    config = monitor.config
    return {
        "observed": monitor.observed,
        "evaluations": monitor.evaluations,
        "interval_s": config.interval_s,
        "reference_size": config.reference_size,
        "window_size": config.window_size,
        "min_samples": config.min_samples,
        "embeddings": monitor.has_embedder,
        "report": None if report is None else report.to_dict(),
    }


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
