"""``/admin/rollout``: start a champion/challenger rollout, watch it, stop it.

The champion is what requests for the served model get now; the challenger is a loaded
adapter (``POST /admin/adapters``). The statistics and the decision rules are in
``server/rollout/``; this module validates what an operator asks for and records every
ending — in the log, on /metrics and, with a registry, in the registry with its figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from artifacts.registry import ModelRegistry, RegistryError
from server.api.admin import admin_key
from server.api.admin_adapters import current_model
from server.api.deps import ServicesDep
from server.api.errors import BadRequestError, ConflictError, NotFoundError
from server.rollout.controller import RolloutError, RolloutRun, RolloutSpec
from server.rollout.statistics import Policy
from server.runtime.services import ServedModel, Services

router = APIRouter(prefix="/admin", tags=["operations"])

Number = StrictFloat  # strict: an int is a float, a string is not


class PolicyRequest(BaseModel):
    """The sequential test's settings (docs/flywheel.md, "Rollout"); each has a default."""

    model_config = ConfigDict(extra="forbid")

    alpha: Number = Field(0.05, ge=1e-6, lt=0.5, description="P(a wrong promote or rollback).")
    tau: Number = Field(0.1, ge=1e-3, le=1, description="Prior scale of the expected difference.")
    min_samples: StrictInt = Field(30, ge=5, le=1_000_000)
    max_samples: StrictInt = Field(5000, ge=5, le=10_000_000)
    error_margin: Number = Field(0.02, ge=0, le=1)
    slow_margin: Number = Field(0.05, ge=0, le=1)
    ttft_warmup: StrictInt = Field(50, ge=5, le=100_000)
    ttft_tolerance: Number = Field(0.0, ge=0, le=10)

    def policy(self) -> Policy:
        try:
            return Policy(
                alpha=float(self.alpha),
                tau=float(self.tau),
                min_samples=self.min_samples,
                max_samples=self.max_samples,
                error_margin=float(self.error_margin),
                slow_margin=float(self.slow_margin),
                ttft_warmup=self.ttft_warmup,
                ttft_tolerance=float(self.ttft_tolerance),
            )
        except ValueError as exc:
            raise BadRequestError(str(exc), code="invalid_value", param="policy") from exc


class StartRolloutRequest(BaseModel):
    """Which adapter challenges what serves now, and on how much of the traffic."""

    model_config = ConfigDict(extra="forbid")

    challenger: StrictStr = Field(..., min_length=1, max_length=64, description="A loaded adapter.")
    share: Number = Field(0.5, gt=0, lt=1, description="Of the traffic, to the challenger.")
    sticky: Literal["user", "key"] = Field(
        "user", description="Keep each key's end user ('user' field) or each key on one arm."
    )
    min_units: StrictInt = Field(
        5,
        ge=1,
        le=1_000_000,
        description="Distinct users (or keys) each arm must have seen before a promotion: "
        "requests of one user are not independent trials.",
    )
    policy: PolicyRequest = Field(default_factory=PolicyRequest)


@router.post("/rollout", status_code=201)
async def start_rollout(
    body: StartRolloutRequest, services: ServicesDep, admin: Annotated[str, Depends(admin_key)]
) -> dict[str, Any]:
    """Send ``share`` of the traffic for the served model to ``challenger``, sticky per user
    or key; the rollout promotes it, rolls it back or stops undecided by itself."""
    policy = body.policy.policy()
    served = current_model(services)
    # The served model's own id challenges with the base itself (after an adapter promotion).
    challenger = "" if body.challenger == served.model_id else body.challenger
    if challenger and challenger not in served.engine.adapter_names:
        loaded = ", ".join(served.engine.adapter_names) or "none"
        raise BadRequestError(
            f"no adapter named {body.challenger!r} is loaded (loaded: {loaded}); load it with "
            f"POST /admin/adapters first, or name the served model ({served.model_id}) to "
            "challenge with the base",
            code="unknown_adapter",
            param="challenger",
        )
    controller = served.rollout
    spec = RolloutSpec(
        challenger=challenger,
        share=float(body.share),
        sticky=body.sticky,
        policy=policy,
        min_units=body.min_units,
        challenger_version=served.adapter_versions.get(challenger),
        champion_version=served.adapter_versions.get(controller.default_adapter),
    )
    controller.on_end = recorder(services, served)
    try:
        run = controller.start(spec, by=admin)
    except RolloutError as exc:
        error = ConflictError if exc.kind == "running" else BadRequestError
        raise error(str(exc), code=f"rollout_{exc.kind}", param="challenger") from exc
    services.metrics.rollout_share.set(spec.share)
    logger.bind(
        event="rollout_started",
        rollout=run.id,
        by=admin,
        champion=run.champion or served.model_id,
        challenger=spec.challenger,
        share=spec.share,
    ).info("rollout {}: {} challenges {}", run.id, spec.challenger, run.champion or "the base")
    return run.summary()


@router.get("/rollout")
async def rollout_status(
    services: ServicesDep, _admin: Annotated[str, Depends(admin_key)]
) -> dict[str, Any]:
    """The running rollout, else the last one to end, with its figures so far."""
    run = current_model(services).rollout.current
    if run is None:
        raise NotFoundError("no rollout has run on this model", code="no_rollout")
    return run.summary()


@router.delete("/rollout")
async def stop_rollout(
    services: ServicesDep, admin: Annotated[str, Depends(admin_key)]
) -> dict[str, Any]:
    """End the running rollout without a decision: the champion keeps serving."""
    try:
        run = current_model(services).rollout.stop(by=admin)
    except RolloutError as exc:
        raise ConflictError(str(exc), code="no_rollout_running") from exc
    return run.summary()


def recorder(services: Services, served: ServedModel) -> Callable[[RolloutRun], None]:
    """What happens when a rollout of ``served`` ends: a log line, /metrics, and — with a
    registry — the decision and its figures in the registry, off the event loop."""

    def record(run: RolloutRun) -> None:
        summary = run.summary()
        services.metrics.rollout_decisions.labels(status=run.status).inc()
        if services.served is served:  # else a retired model's rollout, stopped by a swap
            services.metrics.rollout_share.set(0)
        logger.bind(
            event="rollout_ended",
            rollout=run.id,
            status=run.status,
            by=run.ended_by,
            reason=summary["reason"],
            arms=summary["arms"],
        ).info("rollout {} ended: {} ({})", run.id, run.status, summary["reason"])
        promoted, to_base = None, False
        if run.status == "promoted" and services.served is served:
            promoted = served.adapter_versions.get(run.spec.challenger)
            to_base = run.spec.challenger == ""
            if promoted is None and not to_base:
                logger.bind(event="rollout_promoted_unregistered", rollout=run.id).warning(
                    "{} serves by default now, but it is not a registry version: after a "
                    "restart the model serves without it",
                    run.spec.challenger or "the base model",
                )
        path = services.settings.registry_path
        if path is None:
            return
        task = asyncio.get_running_loop().create_task(
            _write(ModelRegistry(path), summary, promoted, to_base), name=f"record-{run.id}"
        )
        services.background.append(task)
        task.add_done_callback(
            lambda done: services.background.remove(done) if done in services.background else None
        )

    return record


async def _write(
    registry: ModelRegistry, summary: dict[str, Any], promoted: int | None, to_base: bool
) -> None:
    try:
        await asyncio.to_thread(
            registry.record_rollout, summary, promoted=promoted, to_base=to_base
        )
    except (RegistryError, OSError) as exc:  # the decision stands; the record is what failed
        logger.bind(event="rollout_record_failed", rollout=summary["id"]).error(
            "rollout {} decided but was not written to the registry: {}", summary["id"], exc
        )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
