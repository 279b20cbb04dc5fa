"""The sentence-transformers embedder, loaded once on first use and shared by RAG and the API."""

from __future__ import annotations

import asyncio
from pathlib import Path

from server.rag.embedder import Embedder


class EmbedderProvider:
    """Loads the embedder in a worker thread the first time it is asked for, then keeps it.

    Loading costs seconds and ~100 MB, so an app that never embeds (no index, no
    /v1/embeddings call) never pays for it. ``threads`` defaults to 1: the server's cores
    belong to llama.cpp's decode (see ``Embedder``).
    """

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.path = path
        self.threads = threads  # torch threads per encode; 0 = torch's default (one per core)
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
                self._embedder = await asyncio.to_thread(
                    Embedder, self.path, threads=self.threads or None
                )
        return self._embedder
