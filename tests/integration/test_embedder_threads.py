"""The real embedder shared by request threads: /v1/embeddings, /v1/ask retrieval and drift
embed from worker threads while /v1/embeddings counts tokens, all through one tokenizer; and
every encode runs torch on the thread count it was given, whichever worker thread asks.

The soak's rare 500 (issue 26) was this: transformers' fast tokenizer keeps its padding and
truncation settings on the shared Rust tokenizer and every call sets them. An encode turned
padding on, a token count from another request turned it off before the encode tokenized its
batch, and the encode failed with "Unable to create tensor" (ragged rows).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from server.rag.embedder import Embedder

ROOT = Path(__file__).resolve().parents[2]
EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"
ENCODER_THREAD = "encoder"

pytestmark = pytest.mark.slow


class PausingBackend:
    """The tokenizer's Rust backend; a batch encode from the ``encoder`` thread pauses until
    ``go`` is set: the moment between an encode setting its padding and tokenizing."""

    def __init__(self, backend: Any) -> None:
        object.__setattr__(self, "_backend", backend)
        object.__setattr__(self, "paused", threading.Event())
        object.__setattr__(self, "go", threading.Event())

    def encode_batch(self, *args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name == ENCODER_THREAD:
            self.paused.set()
            assert self.go.wait(30), "the test never let the encode go on"
        return self._backend.encode_batch(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._backend, name, value)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not EMBEDDER.is_dir():
        pytest.fail(f"{EMBEDDER} missing: run 'ggserve models fetch' first")
    return Embedder(EMBEDDER)


def test_a_token_count_during_an_encode_does_not_unpad_its_batch(
    embedder: Embedder,
) -> None:
    texts = ["short", "a sentence that is a good deal longer than the first one"]
    expected = embedder.embed(texts)
    tokenizer = embedder._tokenizer  # the HF fast tokenizer both paths share
    backend = PausingBackend(tokenizer._tokenizer)
    tokenizer._tokenizer = backend
    out: dict[str, Any] = {}

    def encode() -> None:
        try:
            out["vectors"] = embedder.embed(texts)
        except Exception as exc:  # the race's symptom: ValueError, unable to create tensor
            out["error"] = exc

    encoder = threading.Thread(target=encode, name=ENCODER_THREAD)
    counter = threading.Thread(target=lambda: out.update(count=embedder.count_tokens(texts[1])))
    try:
        encoder.start()
        assert backend.paused.wait(30), "the encode never reached the tokenizer"
        counter.start()  # another request counts its tokens while the encode is in progress
        counter.join(timeout=1.0)  # unserialized, the count runs (and finishes) right now
        backend.go.set()
        encoder.join(timeout=30)
        counter.join(timeout=30)
    finally:
        backend.go.set()
        tokenizer._tokenizer = backend._backend
    assert "error" not in out, f"the encode failed: {out.get('error')!r}"
    np.testing.assert_allclose(out["vectors"], expected, atol=1e-5)
    assert out["count"] == embedder.count_tokens(texts[1]) == 12


def test_an_encode_from_any_worker_thread_runs_torch_on_the_threads_it_was_given(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server embeds from asyncio's worker threads, and a torch thread team started there
    outlives the call: llama.cpp shares that OpenMP runtime, which then counts more threads
    than cores and all but stops spinning, and every later decode step slowed by 25-40 % on
    2 cores. Setting the count once, from the thread that loads the model, did not reach the
    worker threads; the embedder sets it on each encode."""
    import torch

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: torch's default is one thread, nothing to tell apart")
    seen: list[int] = []
    encode = embedder._model.encode

    def recording_encode(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())  # the calling thread's OpenMP team size
        return encode(*args, **kwargs)

    monkeypatch.setattr(embedder, "threads", 1)
    monkeypatch.setattr(embedder._model, "encode", recording_encode)
    default = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 2)  # what a fresh worker thread would start from
    try:
        with ThreadPoolExecutor(2) as pool:  # fresh threads, like asyncio.to_thread's
            futures = [pool.submit(embedder.embed, ["one text"] * 40) for _ in range(2)]
            vectors = [f.result(timeout=60) for f in futures]
    finally:
        torch.set_num_threads(default)
    assert seen and set(seen) == {1}, f"encodes ran torch on {seen} threads"
    assert all(v.shape == (40, embedder.dimension) for v in vectors)


def test_an_embedder_refuses_a_thread_count_below_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threads must be at least 1"):
        Embedder(tmp_path, threads=0)
