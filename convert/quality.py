"""Compare GGUF files with the merged Hugging Face model on the same token ids.

The reference is the merged model in float32 under PyTorch: what the user trained. Every GGUF is
scored on exactly the reference's token ids (no second tokenizer involved), so differences come
from conversion and quantization alone:

- perplexity of the eval text,
- top-1 agreement: how often the GGUF's most likely next token is the reference's,
- mean KL(reference ‖ GGUF) of the next-token distributions.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from artifacts.manifest import Quality
from convert.errors import ConvertError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

DEFAULT_EVAL_NAME = "eval_default.txt"
MIN_EVAL_TOKENS = 64


def default_eval_text() -> str:
    """The eval text shipped with ggserve (``convert/data/eval_default.txt``)."""
    return resources.files("convert").joinpath("data", DEFAULT_EVAL_NAME).read_text("utf-8")


def read_eval_text(path: Path | None, what: str = "eval file") -> str:
    """The user's eval (or calibration) file, or the shipped default when ``path`` is None."""
    if path is None:
        return default_eval_text()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConvertError(f"{what} {path} does not exist", "pass an existing text file") from exc
    except IsADirectoryError as exc:
        raise ConvertError(f"{what} {path} is a folder", "pass a plain text file") from exc
    except UnicodeDecodeError as exc:
        raise ConvertError(
            f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            "pass UTF-8 plain text",
        ) from exc
    except OSError as exc:
        raise ConvertError(f"cannot read {what} {path}: {exc}", "pass UTF-8 plain text") from exc
    if not text.strip():
        raise ConvertError(f"{what} {path} is empty", "pass a few paragraphs of plain text")
    return text


def token_chunks(
    tokenizer: Any, text: str, chunk_tokens: int = 512, max_tokens: int = 2048
) -> list[list[int]]:
    """Tokenize once and cut into windows that both PyTorch and llama.cpp will score."""
    ids: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"][:max_tokens]
    if len(ids) < MIN_EVAL_TOKENS:
        raise ConvertError(
            f"the eval text is only {len(ids)} tokens long",
            f"use a text of at least {MIN_EVAL_TOKENS} tokens (a few paragraphs)",
        )
    chunks = [ids[i : i + chunk_tokens] for i in range(0, len(ids), chunk_tokens)]
    if len(chunks) > 1 and len(chunks[-1]) < 2:
        chunks.pop()
    return chunks


@dataclass
class Reference:
    """The reference model's next-token log-probabilities on every chunk."""

    chunks: list[list[int]]
    log_probs: list[np.ndarray]  # per chunk: (len(chunk) - 1, vocab) float32

    @property
    def n_tokens(self) -> int:
        """Number of tokens scored (targets), summed over chunks."""
        return sum(len(c) - 1 for c in self.chunks)

    def quality(self) -> Quality:
        """The reference's own perplexity (agreement with itself is 1 by definition)."""
        return _compare(self, self.log_probs)


def reference_log_probs(model: PreTrainedModel, chunks: list[list[int]]) -> Reference:
    """Run the merged HF model over every chunk and keep its next-token log-probabilities."""
    import torch

    log_probs = []
    with torch.inference_mode():
        for chunk in chunks:
            logits = model(input_ids=torch.tensor([chunk])).logits[0, :-1].float()
            log_probs.append(torch.log_softmax(logits, dim=-1).numpy())
    return Reference(chunks=chunks, log_probs=log_probs)


def evaluate_gguf(path: Path, reference: Reference, threads: int | None = None) -> Quality:
    """Score one GGUF with llama.cpp on the reference's token ids."""
    from llama_cpp import Llama

    width = max(len(c) for c in reference.chunks)
    llm = Llama(
        model_path=str(path),
        n_ctx=width,
        n_batch=width,
        n_ubatch=width,
        logits_all=True,
        n_threads=threads,
        verbose=False,
    )
    try:
        log_probs = []
        for chunk in reference.chunks:
            llm.reset()
            llm.eval(chunk)
            logits = np.asarray(llm.scores[: len(chunk) - 1], dtype=np.float32)
            log_probs.append(_log_softmax(logits))
    finally:
        llm.close()
    return _compare(reference, log_probs)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _compare(reference: Reference, log_probs: list[np.ndarray]) -> Quality:
    """Perplexity of ``log_probs`` and its top-1 agreement and mean KL against the reference."""
    nll = 0.0
    agree = 0
    kl = 0.0
    count = 0
    for chunk, ref, cand in zip(reference.chunks, reference.log_probs, log_probs, strict=True):
        vocab = min(ref.shape[-1], cand.shape[-1])  # HF may pad the vocab to a multiple of 64
        ref, cand = ref[:, :vocab], cand[:, :vocab]
        targets = np.asarray(chunk[1:])
        rows = np.arange(len(targets))
        nll -= float(cand[rows, targets].sum())
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        kl += float((np.exp(ref) * (ref - cand)).sum())
        count += len(targets)
    return Quality(
        ppl=float(np.exp(nll / count)),
        top1_agreement=agree / count,
        mean_kl=max(kl / count, 0.0),
    )
