"""/v1/ask route: thin, the work is in ``serving.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Request

from server.api.ask.protocol import AskRequest, AskResponse
from server.api.ask.serving import AskServing
from server.api.deps import GenerationDep, RequestContextDep, ServicesDep

router = APIRouter(prefix="/v1", tags=["ask"])


@router.post("/ask", response_model=AskResponse)
async def ask(
    body: AskRequest,
    request: Request,
    ctx: RequestContextDep,
    generation: GenerationDep,
    services: ServicesDep,
) -> Any:
    """Answer a question (grounded in the document index when one is configured)."""
    return await AskServing(services).ask(body, ctx, generation, request)


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
