"""How the engine is built: model file, slots, context, threads, KV cache, LoRA.

The lead maps ``server.settings.Settings`` onto this; the engine never reads settings itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

KVCacheType = Literal["f16", "q8_0", "q4_0"]
Speculation = Literal["off", "ngram"]


def check_batch_holds_slots(n_batch: int, n_slots: int) -> None:
    """Raise ``ValueError`` unless one decode step can carry a token of every slot."""
    if n_batch < n_slots:
        raise ValueError(
            f"n_batch ({n_batch}) must be >= n_slots ({n_slots}): every decode step puts one "
            "token of each generating slot into the batch"
        )


@dataclass(frozen=True)
class EngineConfig:
    """Everything ``LlamaEngine`` needs to load a model and schedule requests."""

    model_path: Path
    n_slots: int = 4  # concurrent sequences: llama.cpp n_seq_max
    n_ctx: int = 2048  # tokens PER SLOT; the context holds n_ctx * n_slots
    n_batch: int = 512  # most tokens submitted to one llama_decode
    n_ubatch: int = 512  # physical micro-batch
    n_threads: int = 0  # decode threads; 0 = physical cores
    n_threads_batch: int = 0  # prompt threads; 0 = n_threads
    n_gpu_layers: int = 0  # -1 = all layers
    flash_attn: bool = True  # where the backend has it; greedy output stays batch-invariant
    kv_cache_type: KVCacheType = "f16"
    max_queue: int = 64  # requests waiting for a slot before QueueFullError
    request_timeout_s: float = 300.0  # wall clock from submission to finish
    lora_path: Path | None = None  # GGUF LoRA adapter applied at load time
    lora_scale: float = 1.0
    # Named GGUF LoRA adapters over this base, chosen per request (GenerationRequest.adapter):
    # (name, path, scale). The engine groups each step by adapter, as llama-server does.
    adapters: tuple[tuple[str, Path, float], ...] = ()
    # False: read the weights into process memory, so the file on disk may be deleted,
    # replaced or truncated while serving (a truncated mmap'ed file is a SIGBUS).
    use_mmap: bool = False
    # A prompt prefix held by another slot is copied (whole-stream KV copy, ~10 ms for 2,048
    # tokens of SmolLM2) rather than recomputed when it saves at least this many tokens.
    prefix_copy_min_tokens: int = 32
    # True: below that bound, copy or restore whenever it measures cheaper than recomputing
    # (server/engine/reuse_cost.py). False: exactly that bound, whatever the timings (tests
    # that compare outputs bit for bit with flash attention on, where a copied prefix is not
    # bit-identical to a recomputed one).
    prefix_reuse_cost_aware: bool = True
    # Host RAM for the states of evicted slots (the prompt cache's second tier); 0 = off.
    prompt_cache_mb: int = 2048
    # The RAM tier mirrored to files here (one subdirectory per model/context/KV/LoRA), loaded
    # back at start; None = no disk tier.
    prompt_cache_dir: Path | None = None
    # Prompt-lookup speculation: draft tokens from n-grams of the prompt and the answer so far,
    # verified in the same decode as the other slots (off for recurrent models).
    speculative: Speculation = "ngram"
    speculative_max_draft: int = 8  # most tokens one sequence drafts per step
    # False: draft whatever the n-gram lookup finds, whatever it costs (tests, experiments).
    speculative_cost_aware: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and its allowed range."""
        checks = [
            (self.n_slots >= 1, f"n_slots must be >= 1, got {self.n_slots}"),
            (self.n_ctx >= 16, f"n_ctx (per slot) must be >= 16, got {self.n_ctx}"),
            (self.n_batch >= 1, f"n_batch must be >= 1, got {self.n_batch}"),
            (self.n_ubatch >= 1, f"n_ubatch must be >= 1, got {self.n_ubatch}"),
            (self.n_threads >= 0, f"n_threads must be >= 0 (0 = auto), got {self.n_threads}"),
            (
                self.n_threads_batch >= 0,
                f"n_threads_batch must be >= 0 (0 = n_threads), got {self.n_threads_batch}",
            ),
            (self.n_gpu_layers >= -1, f"n_gpu_layers must be >= -1, got {self.n_gpu_layers}"),
            (
                self.kv_cache_type in ("f16", "q8_0", "q4_0"),
                f"kv_cache_type must be f16, q8_0 or q4_0, got {self.kv_cache_type!r}",
            ),
            (self.max_queue >= 0, f"max_queue must be >= 0, got {self.max_queue}"),
            (
                self.prefix_copy_min_tokens >= 1,
                f"prefix_copy_min_tokens must be >= 1, got {self.prefix_copy_min_tokens}",
            ),
            (
                self.prompt_cache_mb >= 0,
                f"prompt_cache_mb must be >= 0 (0 = off), got {self.prompt_cache_mb}",
            ),
            (
                len({name for name, _, _ in self.adapters}) == len(self.adapters)
                and all(name for name, _, _ in self.adapters),
                "adapters need distinct, non-empty names",
            ),
            (
                self.speculative in ("off", "ngram"),
                f"speculative must be off or ngram, got {self.speculative!r}",
            ),
            (
                1 <= self.speculative_max_draft <= 64,
                f"speculative_max_draft must be 1..64, got {self.speculative_max_draft}",
            ),
            (
                self.request_timeout_s > 0,
                f"request_timeout_s must be > 0, got {self.request_timeout_s}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
