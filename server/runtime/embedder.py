"""The sentence-transformers embedder, loaded once on first use and shared by RAG and the API."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.rag.embedder import Embedder


class EmbedderProvider:
    """Loads the embedder in a worker thread the first time it is asked for, then keeps it.

    Loading costs seconds and ~100 MB, so an app that never embeds (no index, no
    /v1/embeddings call) never pays for it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._embedder: Embedder | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> Embedder | None:
        """The embedder if it has been loaded already, else None (never loads)."""
        return self._embedder

    async def get(self) -> Embedder:
        """The embedder; raises ``EmbedderLoadError`` (a ``RagError``) when it cannot load."""
        if self._embedder is not None:
            return self._embedder
        async with self._lock:
            if self._embedder is None:
                # Embedder turns every library error into EmbedderLoadError with the reason.
                self._embedder = await asyncio.to_thread(Embedder, self.path)
        return self._embedder
