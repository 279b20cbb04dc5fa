"""The continuous-batching engine: one model, one llama_context, many concurrent requests.

A dedicated thread runs the loop; the asyncio event loop only enqueues requests and reads
events. Each step of the loop:

1. drops cancelled and timed-out requests (their slot is free again at once);
2. admits waiting requests, oldest first, each to the free slot whose KV cache shares the longest
   prefix with its prompt; only the divergent tail is removed (``llama_memory_seq_rm``);
3. builds ONE ``llama_batch``: the last sampled token of every generating sequence plus prompt
   chunks of admitted ones, asking for logits only where a token will be sampled;
4. calls ``llama_decode`` once, samples each sequence with its own sampler chain, and hands the
   new text to the request's asyncio queue with ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import llama_cpp

from server.engine.chat_template import ChatTemplate
from server.engine.config import EngineConfig, check_batch_holds_slots
from server.engine.detokenizer import IncrementalDetokenizer
from server.engine.logprobs import (
    PROMPT_LOGPROB_CHUNK,
    logits_row,
    prompt_logprobs,
    token_logprob,
)
from server.engine.model import LoadedModel, ModelInfo
from server.engine.outbox import Outbox
from server.engine.sampling import SamplerChain
from server.engine.scheduling import AdmissionQueue, choose_slot
from server.engine.stop_strings import StopStringMatcher
from server.engine.types import (
    ContextLengthExceededError,
    Engine,
    EngineEvent,
    EngineNotReadyError,
    EngineStats,
    FinishEvent,
    FinishReason,
    GenerationRequest,
    InvalidRequestError,
    PromptLogprobsEvent,
    QueueFullError,
    SamplingParams,
    Timings,
    TokenEvent,
    Usage,
)

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 0.25  # idle loop wake-up period (only matters for queued-request timeouts)
Sink = Callable[[EngineEvent], None]


@dataclass(eq=False)
class _Generation:
    """Engine-side state of one request, owned by the loop thread once queued."""

    request: GenerationRequest
    sampler: SamplerChain
    sink: Sink
    submitted: float
    deadline: float
    cancelled: bool = False  # set from any thread; the loop acts on it within one step
    admitted: float | None = None
    first_token_at: float | None = None
    slot: _Slot | None = None
    prompt_pos: int = 0  # next prompt index to evaluate
    cached: int = 0  # prompt tokens reused from the KV cache
    evaluated: int = 0  # prompt tokens run through the model
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None  # sampled, not yet in the KV cache
    detokenizer: IncrementalDetokenizer = field(default_factory=IncrementalDetokenizer)
    stops: StopStringMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopStringMatcher(self.request.params.stop)

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def prompt(self) -> list[int]:
        return self.request.prompt_tokens


@dataclass(eq=False)
class _Slot:
    """One llama.cpp sequence. ``cached_tokens`` mirrors what its KV cache holds."""

    seq_id: int
    cached_tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    generation: _Generation | None = None


@dataclass
class _Counters:
    requests_admitted: int = 0
    requests_rejected: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_cached: int = 0
    tokens_generated: int = 0
    decode_steps: int = 0
    queue_wait_s: float = 0.0


class GenerationStream(AsyncIterator[EngineEvent]):
    """The async stream of one request's events; closing it early cancels the request."""

    def __init__(
        self, engine: LlamaEngine, generation: _Generation, queue: asyncio.Queue[EngineEvent]
    ) -> None:
        self._engine = engine
        self._generation = generation
        self._queue = queue
        self._done = False

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            event = await self._queue.get()
        except asyncio.CancelledError:
            self._cancel()
            raise
        if isinstance(event, FinishEvent):
            self._done = True
        return event

    async def aclose(self) -> None:
        """Stop the generation (client gone); its slot is freed within one engine step."""
        self._cancel()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if not self._done:
            self._done = True
            self._engine._cancel(self._generation)

    def __del__(self) -> None:
        # Dropped without aclose(): only flag it; the loop thread frees the slot next step.
        if not self._done:
            self._generation.cancelled = True


class LlamaEngine:
    """Continuous-batching inference over one GGUF model (implements ``Engine``).

    Construction loads the model (blocking; run it in a worker thread from async code) and
    raises ``ModelLoadError`` with an actionable message on any load problem.
    """

    def __init__(self, config: EngineConfig) -> None:
        check_batch_holds_slots(config.n_batch, config.n_slots)
        self.config = config
        self._model = LoadedModel(config)
        self._info = self._model.info()
        self._template = self._load_template()
        self._slots = [_Slot(seq_id=i) for i in range(config.n_slots)]
        self._queue: AdmissionQueue[_Generation] = AdmissionQueue(config.n_slots, config.max_queue)
        self._counters = _Counters()
        self._wake = threading.Event()
        self._outbox: Outbox[EngineEvent] = Outbox()
        self._closing = False
        self._reset_cache_requested = False
        self._batch = llama_cpp.llama_batch_init(self._model.n_batch, 0, 1)
        self._thread = threading.Thread(target=self._run, name="ggserve-engine", daemon=True)
        self._thread.start()
        logger.info(
            "engine ready: %s, %d slots x %d ctx, n_batch %d",
            self._info.description,
            config.n_slots,
            self._model.n_ctx_per_slot,
            self._model.n_batch,
        )

    def _load_template(self) -> ChatTemplate:
        bos = self._model.token_text(self._model.bos_token)
        eos = self._model.token_text(self._model.eos_token)
        try:
            return ChatTemplate(self._info.chat_template, bos_token=bos, eos_token=eos)
        except ValueError as exc:
            logger.warning("%s; falling back to ChatML", exc)
            return ChatTemplate(None, bos_token=bos, eos_token=eos)

    # --- the Engine protocol -------------------------------------------------------------------

    @property
    def n_ctx_per_slot(self) -> int:
        """Tokens one request may use: prompt plus generated."""
        return self._model.n_ctx_per_slot

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Text → token ids (thread-safe). Control tokens written in the text are parsed."""
        return self._model.tokenize(text, add_special=add_special, parse_special=parse_special)

    def detokenize(self, tokens: list[int]) -> str:
        """Token ids → text (thread-safe); control tokens render as ''. Ids are range-checked."""
        n_vocab = self._model.n_vocab
        bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequestError(
                f"token id {bad} is out of range: this model's ids are 0..{n_vocab - 1}."
            )
        return self._model.detokenize(tokens)

    @property
    def n_vocab(self) -> int:
        """Number of token ids: valid ids are 0 .. n_vocab - 1."""
        return self._model.n_vocab

    def token_piece(self, token: int) -> bytes:
        """The raw bytes of one token (maybe part of a UTF-8 character; control tokens as their
        text, e.g. ``<|im_end|>``); ids are range-checked."""
        if not 0 <= token < self._model.n_vocab:
            raise InvalidRequestError(
                f"token id {token} is out of range: this model's ids are "
                f"0..{self._model.n_vocab - 1}."
            )
        return self._model.token_to_piece(token, special=True)

    @property
    def template_source(self) -> str:
        """The Jinja source of the chat template in use (ChatML when the GGUF has none)."""
        return self._template.source

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **template_vars: Any,
    ) -> str:
        """Render ``messages`` with the model's own chat template (ChatML if it has none).

        ``template_vars`` are extra template variables, e.g. ``tools``.
        """
        return self._template.render(
            messages, add_generation_prompt=add_generation_prompt, **template_vars
        )

    def chat_prompt_tokens(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **template_vars: Any,
    ) -> list[int]:
        """Template and tokenize ``messages``: the prompt tokens for a chat request.

        The BOS token is added only when the template did not already write it, so models whose
        template starts with ``{{ bos_token }}`` do not get two.
        """
        text = self.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, **template_vars
        )
        bos = self._template.bos_token
        return self.tokenize(text, add_special=not (bos and text.startswith(bos)))

    def model_info(self) -> ModelInfo:
        """Architecture, size, parameters and metadata of the loaded GGUF."""
        return self._info

    def generate(self, request: GenerationRequest) -> GenerationStream:
        """Queue ``request`` and return its event stream.

        Raises at once (before any event) ``ContextLengthExceededError``, ``QueueFullError``,
        ``InvalidRequestError`` or ``EngineNotReadyError``. Must be called from a running
        asyncio event loop; closing or cancelling the stream cancels the request.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "LlamaEngine.generate() needs a running asyncio event loop; from plain threads "
                "use submit(request, sink)"
            ) from None
        queue: asyncio.Queue[EngineEvent] = asyncio.Queue()
        generations: list[_Generation] = []

        def undeliverable() -> None:  # the consumer's event loop is closed
            if generations:
                generations[0].cancelled = True

        def sink(event: EngineEvent) -> None:  # engine thread; delivered at the step's end
            self._outbox.put(loop, queue, event, undeliverable)

        generations.append(self.submit(request, sink))
        return GenerationStream(self, generations[0], queue)

    def stats(self) -> EngineStats:
        """Slot use, queue depth and monotonic counters for /metrics."""
        c = self._counters
        return EngineStats(
            slots_total=len(self._slots),
            slots_active=sum(1 for s in self._slots if s.generation is not None),
            queue_depth=self._queue.waiting,
            requests_admitted_total=c.requests_admitted,
            requests_rejected_total=c.requests_rejected,
            prompt_tokens_evaluated_total=c.prompt_tokens_evaluated,
            prompt_tokens_cached_total=c.prompt_tokens_cached,
            tokens_generated_total=c.tokens_generated,
            decode_steps_total=c.decode_steps,
            queue_wait_seconds_total=c.queue_wait_s,
        )

    def warmup(self) -> None:
        """Run one tiny generation so the first real request does not pay for page faults."""
        done = threading.Event()
        events: list[EngineEvent] = []

        def sink(event: EngineEvent) -> None:
            events.append(event)
            if isinstance(event, FinishEvent):
                done.set()

        prompt = self.tokenize("Hello")
        self.submit(
            GenerationRequest("warmup", prompt, SamplingParams(max_tokens=2, temperature=0.0)),
            sink,
        )
        done.wait()
        finish = events[-1]
        if isinstance(finish, FinishEvent) and finish.finish_reason == "error":
            raise RuntimeError(f"warmup generation failed: {finish.error}")

    def reset_prefix_cache(self) -> None:
        """Forget the prompt prefixes kept in idle slots (e.g. after changing a system prompt).

        Takes effect at the loop's next step; running requests keep their cache.
        """
        self._reset_cache_requested = True
        self._wake.set()

    def close(self) -> None:
        """Stop the loop (open streams end with finish_reason 'error') and free the model."""
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        self._model.close()

    # --- submission (any thread) ---------------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: Sink) -> _Generation:
        """Validate and queue ``request``; ``sink`` receives its events on the engine thread."""
        if self._closing:
            raise EngineNotReadyError("The engine is shut down.")
        prompt = request.prompt_tokens
        if not prompt:
            raise InvalidRequestError("The prompt is empty: send at least one token of text.")
        n_vocab = self._model.n_vocab
        bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise InvalidRequestError(
                f"The prompt contains token id {bad}; this model's ids are 0..{n_vocab - 1}."
            )
        if len(prompt) + request.params.max_tokens > self.n_ctx_per_slot:
            raise ContextLengthExceededError(
                len(prompt), request.params.max_tokens, self.n_ctx_per_slot
            )
        sampler = SamplerChain(request.params, self._model.vocab, n_vocab)
        now = time.perf_counter()
        generation = _Generation(
            request=request,
            sampler=sampler,
            sink=sink,
            submitted=now,
            deadline=now + (request.timeout_s or self.config.request_timeout_s),
        )
        if not self._queue.try_put(generation):
            sampler.free()
            self._counters.requests_rejected += 1
            raise QueueFullError(retry_after_s=self._retry_after_s())
        self._wake.set()
        return generation

    def _retry_after_s(self) -> float:
        """A rough wait before a retry can get in: the mean queue wait so far, at least 1 s."""
        c = self._counters
        mean_wait = c.queue_wait_s / c.requests_admitted if c.requests_admitted else 0.0
        return max(1.0, round(mean_wait, 1))

    def _cancel(self, generation: _Generation) -> None:
        generation.cancelled = True
        self._wake.set()

    # --- the loop (engine thread only) ---------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            try:
                if self._reset_cache_requested:
                    self._reset_cache_requested = False
                    self._drop_idle_caches()
                self._reap()
                self._admit()
                if not any(slot.generation for slot in self._slots):
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                self._step()
            except Exception:
                logger.exception("engine step failed; failing the requests in flight")
                self._fail_active("internal engine error (see the server log)")
            finally:
                self._outbox.flush()
        self._shutdown()
        self._outbox.flush()

    def _drop_idle_caches(self) -> None:
        for slot in self._slots:
            if slot.generation is None:
                llama_cpp.llama_memory_seq_rm(self._model.memory, slot.seq_id, -1, -1)
                slot.cached_tokens.clear()

    def _reap(self) -> None:
        """Finish cancelled and timed-out requests, running or waiting."""
        now = time.perf_counter()
        for slot in self._slots:
            generation = slot.generation
            if generation is None:
                continue
            if generation.cancelled:
                self._finish(generation, "cancelled")
            elif now >= generation.deadline:
                self._finish(generation, "timeout")
        for generation in self._queue.snapshot():
            expired = generation.cancelled or now >= generation.deadline
            if expired and self._queue.remove(generation):
                self._finish(generation, "cancelled" if generation.cancelled else "timeout")

    def _admit(self) -> None:
        """Give free slots to waiting requests, oldest first."""
        while True:
            free = [slot for slot in self._slots if slot.generation is None]
            if not free:
                return
            generation = self._queue.pop_oldest()
            if generation is None:
                return
            slot, reuse = choose_slot(generation.prompt, free)
            if generation.params.prompt_logprobs is not None:
                reuse = 0  # every prompt token's logits are needed: evaluate them all
            if reuse < len(slot.cached_tokens):
                if not llama_cpp.llama_memory_seq_rm(self._model.memory, slot.seq_id, reuse, -1):
                    llama_cpp.llama_memory_seq_rm(self._model.memory, slot.seq_id, -1, -1)
                    reuse = 0
                del slot.cached_tokens[reuse:]
            now = time.perf_counter()
            slot.generation = generation
            slot.last_used = now
            generation.slot = slot
            generation.admitted = now
            generation.prompt_pos = reuse
            generation.cached = reuse
            c = self._counters
            c.requests_admitted += 1
            c.prompt_tokens_cached += reuse
            c.queue_wait_s += now - generation.submitted

    def _step(self) -> None:
        """One llama_decode over every active sequence, then sampling."""
        batch = self._batch
        capacity = self._model.n_batch
        n = 0
        sample_at: list[tuple[_Generation, int]] = []
        decoded: list[tuple[_Slot, list[int]]] = []
        scored: list[tuple[_Generation, int, int]] = []  # prompt logprobs: (gen, batch row, pos)

        def add(token: int, pos: int, seq_id: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq_id
            batch.logits[n] = logits
            n += 1

        active = [slot for slot in self._slots if slot.generation is not None]
        for slot in active:  # generating sequences first: one token each
            generation = slot.generation
            assert generation is not None
            if generation.next_token is not None:
                sample_at.append((generation, n))
                add(generation.next_token, len(slot.cached_tokens), slot.seq_id, True)
                decoded.append((slot, [generation.next_token]))
        active.sort(key=lambda slot: slot.last_used)  # admission order for prompt chunks
        for slot in active:  # then prompt chunks, oldest admission first, while there is room
            generation = slot.generation
            assert generation is not None
            if generation.next_token is not None or n >= capacity:
                continue
            prompt = generation.prompt
            room = capacity - n
            score = generation.params.prompt_logprobs is not None
            if score:
                room = min(room, PROMPT_LOGPROB_CHUNK)
                scored.append((generation, n, generation.prompt_pos))
            chunk = prompt[generation.prompt_pos : generation.prompt_pos + room]
            completes = generation.prompt_pos + len(chunk) == len(prompt)
            for offset, token in enumerate(chunk):
                last = completes and offset == len(chunk) - 1
                if last:
                    sample_at.append((generation, n))
                add(token, generation.prompt_pos + offset, slot.seq_id, last or score)
            decoded.append((slot, chunk))
        if n == 0:
            return
        batch.n_tokens = n
        status = llama_cpp.llama_decode(self._model.ctx, batch)
        self._counters.decode_steps += 1
        if status != 0:
            self._fail_active(f"llama_decode failed with status {status}")
            return
        for slot, tokens in decoded:
            slot.cached_tokens.extend(tokens)
            generation = slot.generation
            assert generation is not None
            if generation.next_token is None:
                generation.prompt_pos += len(tokens)
                generation.evaluated += len(tokens)
                self._counters.prompt_tokens_evaluated += len(tokens)
        for generation, row, pos in scored:
            self._send_prompt_logprobs(generation, row, pos)
        for generation, index in sample_at:
            self._sample(generation, index)

    def _send_prompt_logprobs(self, generation: _Generation, row: int, start: int) -> None:
        """Logprobs of the prompt tokens after ``start`` that this chunk's logits predict."""
        prompt = generation.prompt
        targets = prompt[start + 1 : generation.prompt_pos + 1]  # prompt_pos: past the chunk
        n_top = generation.params.prompt_logprobs or 0
        entries = prompt_logprobs(self._model.ctx, self._model.n_vocab, row, targets, n_top)
        generation.sink(PromptLogprobsEvent(start + 1, tuple(entries)))

    def _sample(self, generation: _Generation, index: int) -> None:
        params = generation.params
        if params.max_tokens == 0:  # prompt scoring only
            self._finish(generation, "length")
            return
        token = generation.sampler.sample(self._model.ctx, index)
        now = time.perf_counter()
        if generation.first_token_at is None:
            generation.first_token_at = now
        logprob = None
        if params.logprobs is not None:
            row = logits_row(self._model.ctx, index, self._model.n_vocab)
            logprob = token_logprob(row, token, params.logprobs)
        if self._model.is_eog(token) and not params.ignore_eos:
            self._emit(generation, self._flush_text(generation), token)
            self._finish(generation, "stop")
            return
        generation.generated.append(token)
        self._counters.tokens_generated += 1
        text = generation.detokenizer.feed(self._model.token_to_piece(token))
        check = generation.stops.feed(text)
        if check.stopped:
            generation.sink(TokenEvent(check.text, token, logprob))
            self._finish(generation, "stop")
            return
        if len(generation.generated) >= params.max_tokens:
            generation.sink(TokenEvent(check.text + self._flush_text(generation), token, logprob))
            self._finish(generation, "length")
            return
        generation.sink(TokenEvent(check.text, token, logprob))
        generation.next_token = token

    def _flush_text(self, generation: _Generation) -> str:
        """Text held back (partial UTF-8, possible stop-string start) released at the end."""
        check = generation.stops.feed(generation.detokenizer.flush())
        return check.text if check.stopped else check.text + generation.stops.flush()

    def _emit(self, generation: _Generation, text: str, token: int) -> None:
        if text:
            generation.sink(TokenEvent(text, token))

    def _finish(
        self, generation: _Generation, reason: FinishReason, error: str | None = None
    ) -> None:
        """Send the FinishEvent and free the request's slot (its KV stays as a prefix cache)."""
        now = time.perf_counter()
        slot = generation.slot
        if slot is not None:
            slot.generation = None
            slot.last_used = now
            generation.slot = None
        generation.sampler.free()
        self._queue.finished()
        admitted = generation.admitted if generation.admitted is not None else now
        first = generation.first_token_at
        ms = 1000.0
        timings = Timings(
            queue_ms=(admitted - generation.submitted) * ms,
            prompt_ms=((first if first is not None else now) - admitted) * ms,
            ttft_ms=((first if first is not None else now) - generation.submitted) * ms,
            decode_ms=(now - first) * ms if first is not None else 0.0,
            total_ms=(now - generation.submitted) * ms,
            prompt_tokens_evaluated=generation.evaluated,
        )
        usage = Usage(
            prompt_tokens=len(generation.prompt),
            completion_tokens=len(generation.generated),
            cached_prompt_tokens=generation.cached,
        )
        generation.sink(FinishEvent(reason, usage, timings, error))

    def _fail_active(self, message: str) -> None:
        """A decode failed: finish every running request with 'error' and drop their KV."""
        for slot in self._slots:
            llama_cpp.llama_memory_seq_rm(self._model.memory, slot.seq_id, -1, -1)
            slot.cached_tokens.clear()
            if slot.generation is not None:
                self._finish(slot.generation, "error", message)

    def _shutdown(self) -> None:
        for slot in self._slots:
            if slot.generation is not None:
                self._finish(slot.generation, "error", "the server is shutting down")
        while (generation := self._queue.pop_oldest()) is not None:
            self._finish(generation, "error", "the server is shutting down")


if TYPE_CHECKING:

    def _implements_engine_protocol(engine: LlamaEngine) -> Engine:
        return engine  # mypy fails here if LlamaEngine drifts from the Engine protocol
