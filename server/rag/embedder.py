"""Sentence embeddings from a local sentence-transformers folder; never from a model hub.

``local_files_only=True`` keeps the load off the network whatever the environment says; the
process-wide offline variables are set in one place, ``cli/main.py``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from server.rag.errors import EmbedderLoadError

Vectors = npt.NDArray[np.float32]
EmbedProgress = Callable[[int, int], None]  # (done, total)


class Embedder:
    """A sentence-transformers model loaded from a folder, producing unit-length float32 rows.

    torch and sentence-transformers are imported here, on first construction, so that
    importing ``server`` stays light.

    ``threads`` is torch's intra-op thread count for every encode; None leaves torch's default
    (one per core), right for a process that only embeds (``ggserve index``). A process that
    also decodes with llama.cpp on the CPU passes 1: torch and llama.cpp share one libgomp,
    and a torch thread team lives on in its worker thread's pool. Once libgomp manages more
    threads than there are cores it spins only ~100 iterations before sleeping, so every
    barrier of every later decode step pays a futex wake-up: on 2 cores a single chat decoded
    25-40 % slower after the first batched embedding (docs/engine.md, "Threads").
    """

    def __init__(
        self,
        path: Path,
        *,
        device: str = "cpu",
        batch_size: int = 32,
        threads: int | None = None,
    ) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, or None for torch's default: {threads}")
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbedderLoadError(
                f"embedder folder {path} is not a sentence-transformers model (no modules.json "
                "or config.json). Run 'ggserve models fetch' or set GGSERVE_EMBEDDER_PATH."
            )
        try:
            import torch
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            if threads is not None:
                torch.set_num_threads(threads)  # the load runs torch ops on this thread too
            model: Any = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # any library error becomes one actionable message
            raise EmbedderLoadError(
                f"cannot load the embedder from {path}: {type(exc).__name__}: {exc}"
            ) from exc
        self._model = model
        self._torch: Any = torch
        self.threads = threads
        self.path = path
        self.name: str = path.resolve().name
        self.dimension: int = int(model.get_embedding_dimension())
        self.max_seq_length: int = int(model.max_seq_length)
        self.batch_size = batch_size
        self._tokenizer = self._model.tokenizer
        # Every use of the model or its tokenizer holds this lock. The fast tokenizer keeps its
        # padding and truncation settings on the one Rust tokenizer, and each call sets them:
        # an encode turns padding on, a token count turns it off. Unserialized, a count from
        # another request could land between an encode's settings and its tokenizing, and the
        # encode failed on an unpadded batch ("Unable to create tensor"; issue 26).
        self._lock = threading.Lock()

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of each token of ``text`` (no special tokens), for chunking.

        Waits while an encode runs (see ``_lock``): call it off the event loop.
        """
        with self._lock:
            encoded = self._tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
        return [(int(a), int(b)) for a, b in encoded["offset_mapping"]]

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes in this embedder (no special tokens).

        Waits while an encode runs (see ``_lock``): call it off the event loop.
        """
        with self._lock:
            encoded = self._tokenizer(text, add_special_tokens=False, verbose=False)
        return len(encoded["input_ids"])

    def embed(self, texts: Sequence[str], *, progress: EmbedProgress | None = None) -> Vectors:
        """Embed ``texts`` in batches; rows are L2-normalised so inner product is cosine."""
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        # Batches of similar length waste no work on padding: sort once over all texts (as
        # sentence-transformers does within one encode call), embed, put rows back in order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(texts), self.batch_size):
            rows_of = order[start : start + self.batch_size]
            # One encode at a time: torch's threads (every core by default) would only fight
            # over the cores, and the calls share the tokenizer (see _lock).
            with self._lock:
                if self.threads is not None:
                    # Per call: torch applies the count to the calling thread's OpenMP
                    # settings, and encodes run on whichever worker thread asks.
                    self._torch.set_num_threads(self.threads)
                rows = self._model.encode(
                    [texts[i] for i in rows_of],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
            out[rows_of] = rows
            if progress is not None:
                progress(start + len(rows_of), len(texts))
        return out

    def embed_query(self, text: str) -> Vectors:
        """Embed one query; shape ``(1, dimension)``."""
        return self.embed([text])
