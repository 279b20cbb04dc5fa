"""Routes for /tokenize and /detokenize: thin, keyed like every other endpoint."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from server.api.deps import GenerationDep, KeyIdDep
from server.api.tokenize import serving
from server.api.tokenize.protocol import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)

router = APIRouter(tags=["Tokenizer"])


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(
    body: TokenizeRequest, _key: KeyIdDep, generation: GenerationDep
) -> TokenizeResponse:
    """Text → token ids of the served model (llama-server's ``/tokenize``)."""
    return await serving.tokenize(body, generation)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(
    body: DetokenizeRequest, _key: KeyIdDep, generation: GenerationDep
) -> DetokenizeResponse:
    """Token ids → text (llama-server's ``/detokenize``)."""
    return await serving.detokenize(body, generation)


def attach_router(app: FastAPI) -> None:
    """Mount the tokenizer routes."""
    app.include_router(router)
