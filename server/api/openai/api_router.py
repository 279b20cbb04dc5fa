"""OpenAI-compatible routes: thin, the work is in ``serving.py``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from server.api.deps import GenerationDep, KeyIdDep, RequestContextDep, ServicesDep
from server.api.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelList,
)
from server.api.openai.serving import OpenAIServing

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


def get_serving(services: ServicesDep) -> OpenAIServing:
    return OpenAIServing(services)


ServingDep = Annotated[OpenAIServing, Depends(get_serving)]


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    ctx: RequestContextDep,
    generation: GenerationDep,
    serving: ServingDep,
) -> Any:
    """Chat completion (streaming with ``stream: true``), as OpenAI's API."""
    return await serving.chat(body, ctx, generation, request)


@router.post("/completions", response_model=CompletionResponse)
async def completions(
    body: CompletionRequest,
    request: Request,
    ctx: RequestContextDep,
    generation: GenerationDep,
    serving: ServingDep,
) -> Any:
    """Raw text completion (streaming with ``stream: true``), as OpenAI's API."""
    return await serving.completions(body, ctx, generation, request)


@router.post("/embeddings", response_model=EmbeddingResponse)
async def embeddings(
    body: EmbeddingRequest, ctx: RequestContextDep, serving: ServingDep
) -> EmbeddingResponse:
    """Sentence embeddings from the configured sentence-transformers model."""
    return await serving.embeddings(body, ctx)


@router.get("/models", response_model=ModelList)
async def list_models(_key: KeyIdDep, serving: ServingDep) -> ModelList:
    """The served LLM (and the embedder once loaded)."""
    return serving.models()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
