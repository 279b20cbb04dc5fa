"""Route for ``POST /v1/responses``: thin, the work is in ``serving.py``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from server.api.deps import GenerationDep, RequestContextDep, ServicesDep
from server.api.responses.protocol import ResponseObject, ResponsesRequest
from server.api.responses.serving import ResponsesServing

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


def get_serving(services: ServicesDep) -> ResponsesServing:
    return ResponsesServing(services)


ServingDep = Annotated[ResponsesServing, Depends(get_serving)]


@router.post("/responses", response_model=ResponseObject)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    ctx: RequestContextDep,
    generation: GenerationDep,
    serving: ServingDep,
) -> Any:
    """OpenAI's Responses API (streaming with ``stream: true``); nothing is stored."""
    return await serving.create(body, ctx, generation, request)


def attach_router(app: FastAPI) -> None:
    """Mount the Responses route."""
    app.include_router(router)
