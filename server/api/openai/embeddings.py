"""``/v1/embeddings``: sentence embeddings from the configured sentence-transformers model."""

import asyncio
import base64

import numpy as np

from server.api.errors import BadRequestError, ServiceUnavailableError
from server.api.generation import RequestContext
from server.api.openai.protocol import (
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from server.rag.embedder import Embedder, Vectors
from server.rag.errors import EmbedderLoadError
from server.runtime.services import Services

MAX_EMBEDDING_INPUTS = 256


class EmbeddingServing:
    """POST /v1/embeddings."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def embeddings(self, request: EmbeddingRequest, ctx: RequestContext) -> EmbeddingResponse:
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise BadRequestError(
                "input must be a non-empty string or list of non-empty strings", param="input"
            )
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise BadRequestError(
                f"at most {MAX_EMBEDDING_INPUTS} inputs per request", param="input"
            )
        embedder = await self._embedder()
        if request.dimensions is not None and request.dimensions != embedder.dimension:
            raise BadRequestError(
                f"dimensions must be {embedder.dimension} for this model (no truncation).",
                param="dimensions",
            )
        vectors, tokens = await asyncio.to_thread(_embed_and_count, embedder, texts)
        ctx.log_fields.update(prompt_tokens=tokens)
        if self.services.limiter is not None:  # input tokens count against the key's budget
            await self.services.limiter.charge_tokens(ctx.key_id, tokens)
        data = [
            EmbeddingData(index=i, embedding=_encode_vector(row, request.encoding_format))
            for i, row in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data,
            model=embedder.name,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def _embedder(self) -> Embedder:
        try:
            return await self.services.embedder.get()
        except EmbedderLoadError as exc:
            raise ServiceUnavailableError(str(exc), code="embedder_unavailable") from exc


def _embed_and_count(embedder: Embedder, texts: list[str]) -> tuple[Vectors, int]:
    """The rows of ``texts`` and the tokens they take, in one worker thread.

    Both wait for the embedder's lock, which an encode for another request (or /v1/ask's
    retrieval, or drift) holds for as long as it runs: on the event loop that wait would stall
    every request.
    """
    return embedder.embed(texts), sum(embedder.count_tokens(t) for t in texts)


def _encode_vector(row: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]
