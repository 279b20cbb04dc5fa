"""Operator endpoints: ``POST /admin/reload`` swaps in a rebuilt document index;
``GET /admin/drift`` shows how recent traffic compares with the drift reference."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from server.agents.runtime import reload_index
from server.api.deps import ServicesDep, authenticate
from server.api.errors import (
    BadRequestError,
    NotFoundError,
    PermissionDeniedError,
    ServiceUnavailableError,
)
from server.drift.report import DriftReport
from server.rag.errors import RagError
from server.runtime.drift import EmbedderAttacher

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
