"""``/admin/adapters``: load a registered LoRA adapter over the served model, list the loaded
ones, unload one — all without a restart.

Only registry versions load (``ggserve models register ADAPTER.gguf --base BASE.gguf``): the
registry holds the file's sha256 and the base it was trained over, so a file changed since,
or an adapter for another base, is refused before llama.cpp sees it, and no HTTP request can
point the server at an arbitrary path.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi import Path as PathParam
from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry, RegisteredVersion, RegistryError
from server.api.admin import admin_key
from server.api.deps import ServicesDep
from server.api.errors import (
    BadRequestError,
    ConflictError,
    NotFoundError,
    ServiceUnavailableError,
)
from server.engine.types import EngineNotReadyError, InvalidRequestError, ModelLoadError
from server.runtime.adapters import ADAPTER_NAME, NAME_RULE, default_name
from server.runtime.services import ServedModel, Services

router = APIRouter(prefix="/admin", tags=["operations"])


class LoadAdapterRequest(BaseModel):
    """Which registered adapter to load, and under which name requests pick it."""

    model_config = ConfigDict(extra="forbid")

    version: StrictInt = Field(..., ge=1, le=1_000_000, description="Registry version number.")
    name: StrictStr | None = Field(
        None,
        max_length=64,
        description="What requests send as 'model' to pick it (default: its registry name).",
    )
    scale: StrictFloat | None = Field(
        None, ge=0, le=4, description="Its strength (default: the registry's, usually 1)."
    )


class AdapterInfo(BaseModel):
    name: str
    version: int | None  # None: loaded at start from GGSERVE_LORA_ADAPTERS
    default: bool  # what requests for the served model get
    rollout_arm: bool  # serves an arm of the running rollout


class LoadedAdapter(BaseModel):
    name: str
    version: int
    path: str
    scale: float
    load_s: float


def current_model(services: Services) -> ServedModel:
    """The model new requests go to; 503 while none is loaded."""
    served = services.served
    if served is None or not services.readiness.is_ready:
        raise ServiceUnavailableError(
            "not ready yet; see /ready", code="model_not_ready", headers={"Retry-After": "5"}
        )
    return served


def registry_of(services: Services) -> ModelRegistry:
    """The configured registry; 400 saying how to configure one."""
    if services.settings.registry_path is None:
        raise BadRequestError(
            "no model registry is configured: set GGSERVE_REGISTRY_PATH and restart",
            code="registry_not_configured",
        )
    return ModelRegistry(services.settings.registry_path)


async def served_sha256(served: ServedModel) -> str:
    """The served GGUF's sha256 (hashed now when neither registry nor manifest had it)."""
    known = served.sha256 or served.meta.sha256
    if known is not None:
        return known
    return await asyncio.to_thread(sha256_file, Path(served.path))


async def checked_adapter(
    registry: ModelRegistry, version: int, base_sha256: str
) -> RegisteredVersion:
    """Registry version ``version``, if it is an adapter over this base whose file is still
    the one registered; BadRequest/NotFound naming ``version`` otherwise."""
    try:
        state = await asyncio.to_thread(registry.read)
    except RegistryError as exc:
        raise ServiceUnavailableError(
            f"the registry cannot be read: {exc}", code="registry_unreadable"
        ) from exc
    try:
        entry = state.get(version)
    except RegistryError as exc:
        raise NotFoundError(str(exc), code="unknown_version", param="version") from exc
    if not entry.is_adapter:
        raise BadRequestError(
            f"{entry.label} is a whole model, not an adapter: put it in service with "
            "POST /admin/models/activate",
            code="not_an_adapter",
            param="version",
        )
    if entry.base_sha256 != base_sha256:
        raise BadRequestError(
            f"{entry.label} was trained over another base (sha256 "
            f"{(entry.base_sha256 or 'unknown')[:12]}…), not the served model "
            f"({base_sha256[:12]}…)",
            code="wrong_base",
            param="version",
        )
    try:
        actual = await asyncio.to_thread(sha256_file, Path(entry.model_path))
    except OSError as exc:
        raise BadRequestError(
            f"{entry.label}'s file {entry.model_path} cannot be read: {exc.strerror}",
            code="file_changed",
            param="version",
        ) from exc
    if actual != entry.sha256:
        raise BadRequestError(
            f"{entry.model_path} changed since {entry.label} was registered; register the new "
            "file as a new version",
            code="file_changed",
            param="version",
        )
    return entry


def adapter_name(requested: str | None, entry: RegisteredVersion, served: ServedModel) -> str:
    """The name requests will pick the adapter by; 400 naming ``name`` when unusable."""
    name = requested if requested is not None else default_name(entry)
    if not ADAPTER_NAME.fullmatch(name):
        field = "name" if requested is not None else "version"
        raise BadRequestError(
            f"adapter name {name!r} is not {NAME_RULE}"
            + ("" if requested is not None else "; send a 'name'"),
            code="invalid_value",
            param=field,
        )
    if name == served.model_id:
        raise BadRequestError(
            f"{name!r} is the served model's own id; choose another name",
            code="invalid_value",
            param="name",
        )
    return name


@router.get("/adapters", response_model=list[AdapterInfo])
async def list_adapters(
    services: ServicesDep, _admin: Annotated[str, Depends(admin_key)]
) -> list[AdapterInfo]:
    """The adapters requests may pick, with their registry versions."""
    served = current_model(services)
    rollout = served.rollout
    return [
        AdapterInfo(
            name=name,
            version=served.adapter_versions.get(name),
            default=name == rollout.default_adapter,
            rollout_arm=rollout.uses(name),
        )
        for name in served.engine.adapter_names
    ]


@router.post("/adapters", response_model=LoadedAdapter, status_code=201)
async def load_adapter(
    body: LoadAdapterRequest, services: ServicesDep, admin: Annotated[str, Depends(admin_key)]
) -> LoadedAdapter:
    """Load a registered adapter over the served model; requests pick it by its name at once."""
    served = current_model(services)
    registry = registry_of(services)
    entry = await checked_adapter(registry, body.version, await served_sha256(served))
    name = adapter_name(body.name, entry, served)
    scale = float(body.scale) if body.scale is not None else entry.scale
    started = time.perf_counter()
    try:
        await served.engine.load_adapter(name, Path(entry.model_path), scale)
    except InvalidRequestError as exc:
        raise ConflictError(str(exc), code="adapter_loaded", param="name") from exc
    except ModelLoadError as exc:
        raise BadRequestError(str(exc), code="load_failed", param="version") from exc
    except EngineNotReadyError as exc:  # swapped out while this call ran
        raise _retired(exc) from exc
    served.adapter_versions[name] = entry.version
    load_s = round(time.perf_counter() - started, 3)
    logger.bind(event="adapter_loaded", by=admin, adapter=name, version=entry.label).info(
        "adapter {} ({}) loaded in {} s", name, entry.label, load_s
    )
    return LoadedAdapter(
        name=name, version=entry.version, path=entry.model_path, scale=scale, load_s=load_s
    )


@router.delete("/adapters/{name}", response_model=AdapterInfo)
async def unload_adapter(
    services: ServicesDep,
    admin: Annotated[str, Depends(admin_key)],
    name: Annotated[str, PathParam(max_length=64)],
) -> AdapterInfo:
    """Stop offering an adapter and free it once the requests using it have ended."""
    served = current_model(services)
    if name not in served.engine.adapter_names:
        raise NotFoundError(
            f"no adapter named {name!r} is loaded", code="unknown_adapter", param="name"
        )
    rollout = served.rollout
    if rollout.uses(name) or rollout.default_adapter == name:
        role = "an arm of the running rollout" if rollout.uses(name) else "the default adapter"
        raise ConflictError(
            f"{name!r} is {role}; stop the rollout (or promote another) first",
            code="adapter_in_use",
            param="name",
        )
    version = served.adapter_versions.get(name)
    try:
        await served.engine.unload_adapter(name)
    except InvalidRequestError as exc:  # unloaded by a concurrent call
        raise NotFoundError(str(exc), code="unknown_adapter", param="name") from exc
    except EngineNotReadyError as exc:
        raise _retired(exc) from exc
    served.adapter_versions.pop(name, None)
    logger.bind(event="adapter_unloaded", by=admin, adapter=name).info("adapter {} unloaded", name)
    return AdapterInfo(name=name, version=version, default=False, rollout_arm=False)


def _retired(exc: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        f"the model was swapped out while this call ran ({exc}); retry against the new one",
        code="model_swapped",
        headers={"Retry-After": "1"},
    )


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
