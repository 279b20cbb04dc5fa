"""Operator endpoints: ``POST /admin/reload`` swaps in a rebuilt document index."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI

from server.agents.runtime import reload_index
from server.api.deps import ServicesDep, authenticate
from server.api.errors import BadRequestError, PermissionDeniedError, ServiceUnavailableError
from server.rag.errors import RagError

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


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
