"""The engine's small protocol: a request in, an async stream of events out.

Nothing here knows about HTTP or llama.cpp; the HTTP layer and the tests speak only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

FinishReason = Literal["stop", "length", "cancelled", "timeout", "error"]
LoadState = Literal["loading", "ready", "failed"]


@dataclass(frozen=True)
class GrammarTrigger:
    """A lazy grammar: output is free until it contains ``marker``, then the grammar applies.

    The grammar must match the text from ``marker`` on; ``heads`` are its fixed openings (each
    starting with ``marker``), used to check the token that completes the marker before the
    grammar sees it (llama.cpp aborts on a trigger text its grammar rejects).
    """

    marker: str
    heads: tuple[str, ...]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request. ``temperature == 0`` means greedy."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF text, e.g. from a JSON schema
    logit_bias: tuple[tuple[int, float], ...] = ()
    ignore_eos: bool = False
    grammar_trigger: GrammarTrigger | None = None  # makes ``grammar`` lazy
    logprobs: int | None = None  # None: off; k: each sampled token's logprob and the top k
    # None: off; k: logprobs of the prompt tokens (and their top k). Allows max_tokens == 0.
    prompt_logprobs: int | None = None
    speculative: bool = True  # False: never draft for this request (the engine's setting rules)
    # Control tokens whose text the output keeps (llama.cpp's "preserved tokens"): a tool-call
    # wrapper such as Mistral's [TOOL_CALLS]; every other control token renders as "".
    preserved_tokens: tuple[int, ...] = ()


@dataclass
class GenerationRequest:
    """One generation: already tokenized prompt plus sampling parameters."""

    request_id: str
    prompt_tokens: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    timeout_s: float | None = None  # wall-clock limit from submission; None = engine default
    # Choices to generate from one prefill (OpenAI's ``n``). Each gets its own slot, forked
    # from the first choice's prompt cache, and its own seed (``seed + index`` when set).
    n: int = 1
    # Admission order when requests wait for slots (vLLM's semantics: lower goes first), then
    # turns between tenants (an API key, or a router's fairness id) within one priority.
    priority: int = 0
    tenant: str = ""
    # Prefix-cache scope: a cache written under another salt is reused only up to
    # ``shared_prefix`` prompt tokens (the server's own system prompt and template opening).
    cache_salt: str = ""
    shared_prefix: int = 0
    adapter: str = ""  # a named LoRA adapter of the engine (EngineConfig.adapters); "" = base


@dataclass(frozen=True)
class TokenLogprob:
    """A token's log-probability under the model's raw logits, and the top alternatives."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass(frozen=True)
class TokenEvent:
    """New text for the client. ``text`` may be empty while a UTF-8 sequence is incomplete."""

    text: str
    token_id: int
    index: int = 0  # the choice it belongs to (0 unless the request asked for n > 1)
    logprob: TokenLogprob | None = None  # when the request asked for logprobs


@dataclass(frozen=True)
class PromptLogprobsEvent:
    """Logprobs of prompt tokens ``start .. start + len(entries) - 1`` (token 0 has none)."""

    start: int
    entries: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int  # prompt tokens reused from the KV cache, not evaluated again

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    queue_ms: float  # waiting for a slot
    prompt_ms: float  # admitted → first token sampled (prompt evaluation)
    ttft_ms: float  # submitted → first token
    decode_ms: float  # first token → finish
    total_ms: float  # submitted → finish
    prompt_tokens_evaluated: int  # prompt tokens actually run through the model


@dataclass(frozen=True)
class FinishEvent:
    """Last event of a choice; a stream with ``n`` choices ends after ``n`` of them.

    ``usage`` is the choice's own: ``prompt_tokens`` is the shared prompt (count it once).
    """

    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    error: str | None = None
    index: int = 0  # the choice it finishes


EngineEvent = TokenEvent | PromptLogprobsEvent | FinishEvent


class EngineError(Exception):
    """Base of the errors the engine raises before a stream starts."""


class QueueFullError(EngineError):
    """The admission queue is full; retry later."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        super().__init__("server overloaded: the admission queue is full")
        self.retry_after_s = retry_after_s


class ContextLengthExceededError(EngineError):
    """Prompt plus max_tokens does not fit in a slot's context."""

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int) -> None:
        super().__init__(
            f"This model's context per request is {n_ctx} tokens; the prompt has {prompt_tokens} "
            f"tokens and max_tokens asks for {max_tokens}. Shorten the prompt or lower max_tokens."
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx


class EngineNotReadyError(EngineError):
    """The model is not loaded (still loading, or the load failed)."""


class ModelLoadError(EngineError):
    """The model or its LoRA adapter could not be loaded; the message names the file and fix."""


class InvalidRequestError(EngineError):
    """The request itself is wrong (empty prompt, unknown token id, bad grammar, bad parameter).

    ``param`` names the request field at fault when known (the HTTP layer reports it).
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class EngineStats:
    slots_total: int
    slots_active: int
    queue_depth: int
    # KV cells (one per token) held by running sequences, of all slots' cells together.
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    # Monotonic counters since the engine started (Prometheus counters).
    requests_admitted_total: int = 0
    requests_rejected_total: int = 0  # QueueFullError
    prompt_tokens_evaluated_total: int = 0  # run through the model
    prompt_tokens_cached_total: int = 0  # reused from the KV cache
    tokens_generated_total: int = 0
    decode_steps_total: int = 0  # llama_decode calls
    graph_passes_total: int = 0  # micro-batches llama.cpp split those calls into
    # Where the engine thread's time goes: steps (of which the decode call) and idle waits.
    engine_busy_seconds_total: float = 0.0
    engine_decode_seconds_total: float = 0.0
    engine_idle_seconds_total: float = 0.0
    queue_wait_seconds_total: float = 0.0  # summed over admitted requests
    # Prefix cache: a hit reused at least one prompt token from a KV cache (its own slot's or
    # copied from another slot); tokens saved = prompt tokens not evaluated thanks to it.
    prefix_cache_hits_total: int = 0
    prefix_cache_misses_total: int = 0
    prefix_cache_tokens_saved_total: int = 0
    prefix_copies_total: int = 0  # cross-slot KV copies (llama_memory_seq_cp)
    prefix_copy_tokens_total: int = 0  # prompt tokens those copies provided
    # The RAM tier of the prompt cache: states of evicted slots, restored when they return.
    prompt_cache_hits_total: int = 0  # admissions that restored a state from RAM
    prompt_cache_misses_total: int = 0  # admissions that did not (the tier on)
    prompt_cache_restore_failures_total: int = 0  # refused by llama.cpp: prefilled instead
    prompt_cache_restored_tokens_total: int = 0
    prompt_cache_restore_seconds_total: float = 0.0
    prompt_cache_saves_total: int = 0
    prompt_cache_evictions_total: int = 0
    prompt_cache_bytes: int = 0  # held now
    prompt_cache_entries: int = 0  # held now
    # Prompt-lookup speculation: tokens drafted and verified, and those the model agreed with.
    speculative_draft_tokens_total: int = 0
    speculative_accepted_tokens_total: int = 0
    adapter_switches_total: int = 0  # steps that changed the applied LoRA adapter set
    ttft_seconds: HistogramSnapshot | None = None  # submission -> first token, per choice
    inter_token_seconds: HistogramSnapshot | None = None  # gap between a choice's tokens


@dataclass(frozen=True)
class HistogramSnapshot:
    """Per-bucket counts: ``counts[i]`` observations in (bounds[i-1], bounds[i]]; the last +Inf."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # len(bounds) + 1, NOT cumulative
    total: float  # sum of observations


@dataclass(frozen=True)
class ChatFormat:
    """What a model file says about its chat format: the Jinja template (None when it has
    none), the text of its BOS and EOS tokens, which templates may write, and the texts the
    tokenizer turns into control tokens (which message text must never become)."""

    template: str | None
    bos_token: str
    eos_token: str
    control_tokens: tuple[str, ...] = ()


class EventStream(Protocol):
    """One request's events; ``aclose()`` (client gone) cancels the request and frees its slot."""

    def __aiter__(self) -> EventStream: ...

    async def __anext__(self) -> EngineEvent: ...

    async def aclose(self) -> None: ...


class Engine(Protocol):
    """What the HTTP layer needs from an inference engine."""

    @property
    def n_ctx_per_slot(self) -> int: ...

    @property
    def n_vocab(self) -> int:
        """Token ids run 0 .. n_vocab - 1."""
        ...

    @property
    def chat_format(self) -> ChatFormat:
        """The chat template and special tokens the model file carries (rendering them is
        ``server.chat``'s job, not the engine's)."""
        ...

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def token_piece(self, token: int) -> bytes:
        """The raw bytes of one (range-checked) token."""
        ...

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The named LoRA adapters a request may pick (``GenerationRequest.adapter``)."""
        ...

    async def load_adapter(self, name: str, path: Path, scale: float) -> None:
        """Load a GGUF LoRA over this model as ``name``, for requests from now on (no
        restart); ``ModelLoadError`` naming the file when llama.cpp refuses it,
        ``InvalidRequestError`` when the name is taken."""
        ...

    async def unload_adapter(self, name: str) -> None:
        """Stop offering ``name`` to new requests; free it once the requests using it end
        (``InvalidRequestError`` when no adapter has that name)."""
        ...

    def generate(self, request: GenerationRequest) -> EventStream:
        """Stream events for ``request``. Raises ``QueueFullError`` or
        ``ContextLengthExceededError`` before the first event. Closing the iterator early
        (client gone) cancels the generation and frees its slot at once."""
        ...

    def stats(self) -> EngineStats: ...

    def close(self) -> None: ...
