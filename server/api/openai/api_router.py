"""OpenAI-compatible routes: thin; the work is in one module per capability (``chat``,
``completions``, ``embeddings``, ``models``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request

from server.api.deps import GenerationDep, KeyIdDep, RequestContextDep, ServicesDep
from server.api.openai.chat import ChatServing
from server.api.openai.completions import CompletionServing
from server.api.openai.embeddings import EmbeddingServing
from server.api.openai.models import ModelsServing
from server.api.openai.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelList,
)

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


def _chat(services: ServicesDep) -> ChatServing:
    return ChatServing(services)


def _completions(services: ServicesDep) -> CompletionServing:
    return CompletionServing(services)


def _embeddings(services: ServicesDep) -> EmbeddingServing:
    return EmbeddingServing(services)


def _models(services: ServicesDep) -> ModelsServing:
    return ModelsServing(services)


ChatDep = Annotated[ChatServing, Depends(_chat)]
CompletionDep = Annotated[CompletionServing, Depends(_completions)]
EmbeddingDep = Annotated[EmbeddingServing, Depends(_embeddings)]
ModelsDep = Annotated[ModelsServing, Depends(_models)]


@router.post("/chat/completions", response_model=ChatCompletionResponse)
async def chat_completions(
    body: ChatCompletionRequest,
    request: Request,
    ctx: RequestContextDep,
    generation: GenerationDep,
    serving: ChatDep,
) -> Any:
    """Chat completion (streaming with ``stream: true``), as OpenAI's API."""
    return await serving.chat(body, ctx, generation, request)


@router.post("/completions", response_model=CompletionResponse)
async def completions(
    body: CompletionRequest,
    request: Request,
    ctx: RequestContextDep,
    generation: GenerationDep,
    serving: CompletionDep,
) -> Any:
    """Raw text completion (streaming with ``stream: true``), as OpenAI's API."""
    return await serving.completions(body, ctx, generation, request)


@router.post("/embeddings", response_model=EmbeddingResponse)
async def embeddings(
    body: EmbeddingRequest, ctx: RequestContextDep, serving: EmbeddingDep
) -> EmbeddingResponse:
    """Sentence embeddings from the configured sentence-transformers model."""
    return await serving.embeddings(body, ctx)


@router.get("/models", response_model=ModelList)
async def list_models(_key: KeyIdDep, serving: ModelsDep) -> ModelList:
    """The served LLM (and the embedder once loaded)."""
    return serving.models()


def attach_router(app: FastAPI) -> None:
    app.include_router(router)
