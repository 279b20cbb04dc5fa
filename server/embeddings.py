"""The sentence-transformers embedder, loaded once on first use and shared by RAG and the API."""

from __future__ import annotations

import asyncio
from typing import Any

from server.errors import ServiceUnavailableError
from server.services import Services

_EMBEDDER = "embedder"
_LOCK = "embedder_lock"


async def get_embedder(services: Services) -> Any:
    """The app's embedder; loads it in a worker thread the first time (503 if it cannot)."""
    embedder = services.extras.get(_EMBEDDER)
    if embedder is not None:
        return embedder
    lock: asyncio.Lock = services.extras.setdefault(_LOCK, asyncio.Lock())
    async with lock:
        if (embedder := services.extras.get(_EMBEDDER)) is None:
            from server.rag.embedder import Embedder

            try:
                embedder = await asyncio.to_thread(Embedder, services.settings.embedder_path)
            except Exception as exc:
                raise ServiceUnavailableError(
                    f"embedding model unavailable: {exc}", code="embedder_unavailable"
                ) from exc
            services.extras[_EMBEDDER] = embedder
    return embedder
