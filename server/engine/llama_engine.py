"""The continuous-batching engine: one model, one llama_context, many concurrent requests.

A dedicated thread runs the loop; the asyncio event loop only enqueues requests and reads
events. Each step of the loop:

1. drops cancelled and timed-out requests (their slot is free again at once);
2. asks the pure planner (``planner.plan``) for a ``StepPlan``: admissions, prefix copies from
   other slots (busy or idle), waits for an older request prefilling the same prefix, decode
   tokens and prompt chunks;
3. has the ``StepExecutor`` apply the KV edits, fill ONE ``llama_batch`` and call
   ``llama_decode`` once;
4. samples each sequence with its own sampler chain and hands the step's events to the
   requests' asyncio queues with one wake-up per event loop (``Outbox``).

A request with ``n > 1`` is queued as n choices; choices 1..n-1 wait for choice 0's prompt and
fork it (a KV copy), then sample independently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from server.engine.boundary import check_token_id, check_token_ids
from server.engine.config import EngineConfig, check_batch_holds_slots
from server.engine.detokenizer import IncrementalDetokenizer
from server.engine.executor import Slot, StepExecutor
from server.engine.histogram import INTER_TOKEN_BOUNDS, TTFT_BOUNDS, LatencyHistogram
from server.engine.logprobs import (
    PROMPT_LOGPROB_CHUNK,
    logits_row,
    prompt_logprobs,
    token_logprob,
)
from server.engine.micro_batches import graph_passes
from server.engine.model import LoadedModel, ModelInfo, llama_cpp_version
from server.engine.outbox import Outbox
from server.engine.planner import DecodeToken, Phase, PlanState, Restore, StepPlan, plan
from server.engine.prompt_cache import PromptCache
from server.engine.prompt_store import PromptStore, file_sha256
from server.engine.reuse_cost import ReuseCost
from server.engine.sampling import SamplerChain
from server.engine.scheduling import AdmissionQueue, FairShare, admission_order
from server.engine.speculation import (
    AcceptanceCurve,
    AcceptanceCurves,
    NgramDrafter,
    StepCosts,
    best_draft_length,
    choose_drafts,
)
from server.engine.stop_strings import StopStringMatcher
from server.engine.types import (
    ChatFormat,
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
    """Engine-side state of one choice of one request, owned by the loop thread once queued.

    Implements the planner's ``SequenceView``: its ``phase`` is set only by the loop thread.
    """

    key: int  # increasing in submission order
    index: int  # choice index within its request (n > 1)
    request: GenerationRequest
    sampler: SamplerChain
    sink: Sink
    submitted: float
    deadline: float
    phase: Phase = Phase.WAITING
    fork_of: int | None = None  # choices 1..n-1: key of choice 0, whose prompt they fork
    fair_tag: float | None = None  # its turn among tenants (``FairShare``), once seen waiting
    cancelled: bool = False  # set from any thread; the loop acts on it within one step
    admitted: float | None = None
    first_token_at: float | None = None
    last_token_at: float = 0.0
    slot: _Slot | None = None
    prompt_pos: int = 0  # prompt tokens in the slot's KV cache
    evaluated: int = 0  # prompt tokens run through the model
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None  # sampled, not yet in the KV cache
    drafter: NgramDrafter | None = None  # speculation on: the prompt and the answer so far
    draft: tuple[int, ...] = ()  # DECODING: proposed to follow next_token this step
    draft_curve: AcceptanceCurve | None = None  # what the draft's outcome teaches
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

    @property
    def seq_id(self) -> int | None:
        return self.slot.seq_id if self.slot is not None else None

    @property
    def scores_prompt(self) -> bool:
        # Forks (n > 1) take choice 0's cache: one scoring of the prompt serves every choice.
        return self.fork_of is None and self.request.params.prompt_logprobs is not None

    @property
    def salt(self) -> str:
        return self.request.cache_salt

    @property
    def shared_prefix(self) -> int:
        return self.request.shared_prefix

    @property
    def adapter(self) -> str:
        return self.request.adapter

    @property
    def cached(self) -> int:
        """Prompt tokens that were not evaluated for this choice (own cache or a copy)."""
        return self.prompt_pos - self.evaluated


@dataclass(eq=False)
class _Slot(Slot):
    """A slot and the choice it serves (None when idle; its cache stays as a prefix cache)."""

    generation: _Generation | None = None


@dataclass
class _Counters:
    requests_admitted: int = 0
    requests_rejected: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_cached: int = 0
    tokens_generated: int = 0
    decode_steps: int = 0
    graph_passes: int = 0  # micro-batches llama.cpp ran for those steps (graph_passes)
    queue_wait_s: float = 0.0
    prefix_hits: int = 0
    prefix_misses: int = 0
    prefix_copies: int = 0
    prefix_copy_tokens: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    adapter_switches: int = 0
    busy_s: float = 0.0  # loop iterations that ran a step (planning to delivery)
    decode_s: float = 0.0  # of which in executor.decode (batch fill + llama_decode)
    idle_s: float = 0.0  # waiting for work
    ttft: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(TTFT_BOUNDS))
    inter_token: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(INTER_TOKEN_BOUNDS)
    )


class GenerationStream(AsyncIterator[EngineEvent]):
    """The async stream of one request's events; closing it early cancels the request.

    With ``n > 1`` the choices' events interleave (each carries its ``index``) and the stream
    ends after the last choice's ``FinishEvent``.
    """

    def __init__(
        self,
        engine: LlamaEngine,
        generations: list[_Generation],
        queue: asyncio.Queue[EngineEvent],
    ) -> None:
        self._engine = engine
        self._generations = generations
        self._queue = queue
        self._open = len(generations)
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
            self._open -= 1
            self._done = self._open == 0
        return event

    async def aclose(self) -> None:
        """Stop the generation (client gone); its slots are freed within one engine step."""
        self._cancel()

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if not self._done:
            self._done = True
            self._engine._cancel(self._generations)

    def __del__(self) -> None:
        # Dropped without aclose(): only flag it; the loop thread frees the slots next step.
        if not self._done:
            for generation in self._generations:
                generation.cancelled = True


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
        self._chat_format = ChatFormat(
            self._info.chat_template,
            bos_token=self._model.token_text(self._model.bos_token),
            eos_token=self._model.token_text(self._model.eos_token),
            control_tokens=self._model.control_token_texts(),
        )
        self._slots = [_Slot(seq_id=i) for i in range(config.n_slots)]
        self._queue: AdmissionQueue[_Generation] = AdmissionQueue(config.n_slots, config.max_queue)
        self._running: dict[int, _Generation] = {}  # key -> choice holding a slot
        self._keys = itertools.count()
        self._counters = _Counters()
        self._wake = threading.Event()
        self._outbox: Outbox[EngineEvent] = Outbox()
        self._closing = False
        self._reset_cache_requested = False
        self._prompt_cache = PromptCache(config.prompt_cache_mb * 2**20, self._open_store())
        if self._prompt_cache.store is not None:
            self._prompt_cache.preload(
                self._prompt_cache.store.load(config.prompt_cache_mb * 2**20)
            )
        # Rejected drafts are dropped with a partial llama_memory_seq_rm, which a recurrent
        # model's state cannot do.
        self._speculate = config.speculative == "ngram" and not self._model.is_recurrent
        self._step_costs = StepCosts()
        self._acceptance = AcceptanceCurves()  # the model's, learnt across requests
        self._n_ubatch = min(config.n_ubatch, config.n_batch)
        self._reuse_cost = ReuseCost(config.prefix_copy_min_tokens, self._model.n_ctx_per_slot)
        self._adapters: dict[str, tuple[object, float]] = {}
        try:
            for name, path, scale in config.adapters:
                self._adapters[name] = (self._model.load_adapter(Path(path)), scale)
        except BaseException:
            self._free_adapters()
            self._model.close()
            raise
        self._adapter_now = ""  # the named adapter applied to the context now ("" = none)
        # Adapters loaded and unloaded at run time (admin API): the native calls run on the
        # engine thread between steps; new requests see only the names in ``_offered``, and
        # an unloaded adapter is freed once no request still holds it.
        self._offered = set(self._adapters)
        self._offer_lock = threading.Lock()  # a submit's check and its enqueue vs an unload
        self._commands: queue.SimpleQueue[_Command] = queue.SimpleQueue()
        self._unloading: dict[str, concurrent.futures.Future[None]] = {}
        self._fair_share = FairShare()
        self._executor = StepExecutor(
            self._model.ctx, self._model.memory, self._model.n_batch, self._slots
        )
        self._thread = threading.Thread(target=self._run, name="ggserve-engine", daemon=True)
        self._thread.start()
        logger.info(
            "engine ready: %s, %d slots x %d ctx, n_batch %d",
            self._info.description,
            config.n_slots,
            self._model.n_ctx_per_slot,
            self._model.n_batch,
        )

    def _open_store(self) -> PromptStore | None:
        """The prompt cache's disk tier, namespaced by everything a saved state depends on."""
        config = self.config
        if config.prompt_cache_dir is None or config.prompt_cache_mb == 0:
            return None
        lora = config.lora_path
        namespace = {
            "model_sha256": file_sha256(Path(config.model_path)),
            "n_ctx_per_slot": str(self._model.n_ctx_per_slot),
            "kv_cache_type": config.kv_cache_type,
            "lora_sha256": file_sha256(Path(lora)) if lora is not None else "",
            "lora_scale": repr(config.lora_scale) if lora is not None else "",
            "llama_cpp": llama_cpp_version(),
        }
        return PromptStore(config.prompt_cache_dir, namespace)

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
        """Token ids → text (thread-safe); control tokens render as ''. Ids are range-checked
        at the boundary (``boundary.check_token_ids``) before any native call."""
        return self._model.detokenize(tokens)

    @property
    def n_vocab(self) -> int:
        """Number of token ids: valid ids are 0 .. n_vocab - 1."""
        return self._model.n_vocab

    def token_piece(self, token: int) -> bytes:
        """The raw bytes of one token (maybe part of a UTF-8 character; control tokens as their
        text, e.g. ``<|im_end|>``); ids are range-checked."""
        check_token_id(token, self._model.n_vocab, "token")
        return self._model.token_to_piece(token, special=True)

    @property
    def chat_format(self) -> ChatFormat:
        """The GGUF's chat template and its BOS/EOS token texts (``server.chat`` renders)."""
        return self._chat_format

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
            for generation in generations:
                generation.cancelled = True

        def sink(event: EngineEvent) -> None:  # engine thread; delivered at the step's end
            self._outbox.put(loop, queue, event, undeliverable)

        generations.extend(self.submit(request, sink))
        return GenerationStream(self, generations, queue)

    def stats(self) -> EngineStats:
        """Slot use, queue depth and monotonic counters for /metrics."""
        c = self._counters
        ram = self._prompt_cache.stats
        return EngineStats(
            slots_total=len(self._slots),
            slots_active=sum(1 for s in self._slots if s.generation is not None),
            queue_depth=self._queue.waiting,
            kv_cells_used=sum(
                len(s.cached_tokens) for s in self._slots if s.generation is not None
            ),
            kv_cells_total=len(self._slots) * self._model.n_ctx_per_slot,
            requests_admitted_total=c.requests_admitted,
            requests_rejected_total=c.requests_rejected,
            prompt_tokens_evaluated_total=c.prompt_tokens_evaluated,
            prompt_tokens_cached_total=c.prompt_tokens_cached,
            tokens_generated_total=c.tokens_generated,
            decode_steps_total=c.decode_steps,
            graph_passes_total=c.graph_passes,
            queue_wait_seconds_total=c.queue_wait_s,
            prefix_cache_hits_total=c.prefix_hits,
            prefix_cache_misses_total=c.prefix_misses,
            prefix_cache_tokens_saved_total=c.prompt_tokens_cached,
            prefix_copies_total=c.prefix_copies,
            prefix_copy_tokens_total=c.prefix_copy_tokens,
            prompt_cache_hits_total=ram.restores,
            prompt_cache_misses_total=ram.misses,
            prompt_cache_restore_failures_total=ram.restore_failures,
            prompt_cache_restored_tokens_total=ram.restored_tokens,
            prompt_cache_restore_seconds_total=ram.restore_seconds,
            prompt_cache_saves_total=ram.saves,
            prompt_cache_evictions_total=ram.evictions,
            prompt_cache_bytes=ram.bytes,
            prompt_cache_entries=ram.entries,
            engine_busy_seconds_total=c.busy_s,
            engine_decode_seconds_total=c.decode_s,
            engine_idle_seconds_total=c.idle_s,
            speculative_draft_tokens_total=c.draft_tokens,
            speculative_accepted_tokens_total=c.accepted_tokens,
            adapter_switches_total=c.adapter_switches,
            ttft_seconds=c.ttft.snapshot(),
            inter_token_seconds=c.inter_token.snapshot(),
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
        """Forget the prompt prefixes kept in idle slots and in RAM (e.g. after changing a
        system prompt).

        Takes effect at the loop's next step; running requests keep their cache.
        """
        self._reset_cache_requested = True
        self._wake.set()

    def close(self) -> None:
        """Stop the loop (open streams end with finish_reason 'error') and free the model."""
        with self._offer_lock:  # no admin command is queued after this
            if self._closing:
                return
            self._closing = True
        self._wake.set()
        self._thread.join()
        self._fail_commands()
        self._executor.close()
        if self._prompt_cache.store is not None:
            self._prompt_cache.store.close()
        self._free_adapters()
        self._model.close()

    def _free_adapters(self) -> None:
        for adapter, _ in self._adapters.values():
            self._model.free_adapter(adapter)
        self._adapters.clear()

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The named LoRA adapters a request may pick (``GenerationRequest.adapter``)."""
        with self._offer_lock:  # the engine thread adds and removes entries
            return tuple(name for name in self._adapters if name in self._offered)

    async def load_adapter(self, name: str, path: Path, scale: float) -> None:
        """Load a GGUF LoRA over this model as ``name`` without a restart (on the engine
        thread, between two steps); ``ModelLoadError`` naming the file when it is refused."""

        def load() -> None:
            with self._offer_lock:
                if name in self._adapters:
                    state = "is loaded" if name in self._offered else "is still unloading"
                    raise InvalidRequestError(f"an adapter named {name!r} {state}.", param="name")
            handle = self._model.load_adapter(path)
            with self._offer_lock:
                self._adapters[name] = (handle, scale)
                self._offered.add(name)

        await self._on_engine_thread(load)

    async def unload_adapter(self, name: str) -> None:
        """Stop offering ``name`` at once (new requests cannot pick it from this call on) and
        free it once the requests that picked it have ended."""
        with self._offer_lock:
            if name not in self._offered:
                raise InvalidRequestError(f"no adapter named {name!r} is loaded.", param="name")
            self._offered.discard(name)
        freed: concurrent.futures.Future[None] = concurrent.futures.Future()
        await self._on_engine_thread(lambda: self._unloading.__setitem__(name, freed))
        await asyncio.wrap_future(freed)

    async def _on_engine_thread(self, command: Callable[[], None]) -> None:
        """Run ``command`` on the engine thread before its next step; its exception here."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._offer_lock:  # against close(): a command put after the last drain hangs
            if self._closing:
                raise EngineNotReadyError("The engine is shut down.")
            self._commands.put((command, done))
        self._wake.set()
        await asyncio.wrap_future(done)

    def _run_commands(self) -> None:
        """Admin commands queued for the engine thread, then frees of unloaded adapters."""
        while True:
            try:
                command, done = self._commands.get_nowait()
            except queue.Empty:
                break
            if not done.set_running_or_notify_cancel():  # its caller gave up waiting
                continue
            try:
                command()
            except Exception as exc:  # the caller's error (a bad file, a taken name)
                done.set_exception(exc)
            else:
                done.set_result(None)
        for name in list(self._unloading):
            holders = [*self._running.values(), *self._queue.snapshot()]
            if any(g.adapter == name for g in holders):
                continue
            self._forget_adapter(name)
            _settle(self._unloading.pop(name))

    def _fail_commands(self) -> None:
        """Answer every admin call still waiting: the engine is closing."""
        while True:
            try:
                _, done = self._commands.get_nowait()
            except queue.Empty:
                break
            if done.set_running_or_notify_cancel():
                done.set_exception(EngineNotReadyError("The engine is shut down."))
        for freed in self._unloading.values():
            _settle(freed)  # close() frees every adapter
        self._unloading.clear()

    def _forget_adapter(self, name: str) -> None:
        """Free ``name`` and every cache computed with it: a later adapter of the same name
        may be another file."""
        for entry in self._prompt_cache.entries():
            if entry.adapter == name:
                self._prompt_cache.drop(entry.entry_id)
        for slot in self._slots:
            if slot.adapter == name and slot.generation is None:
                self._executor.clear(slot.seq_id)
                slot.adapter = ""
        if self._adapter_now == name:
            self._model.set_adapters([])
            self._adapter_now = ""
        with self._offer_lock:
            handle, _ = self._adapters.pop(name)
        self._model.free_adapter(handle)

    # --- submission (any thread) ---------------------------------------------------------------

    def submit(self, request: GenerationRequest, sink: Sink) -> list[_Generation]:
        """Validate and queue ``request`` (one entry per choice); ``sink`` gets the events on the
        engine thread."""
        if self._closing:
            raise EngineNotReadyError("The engine is shut down.")
        prompt = request.prompt_tokens
        if not prompt:
            raise InvalidRequestError("The prompt is empty: send at least one token of text.")
        n_vocab = self._model.n_vocab
        check_token_ids(prompt, n_vocab)
        if request.adapter and request.adapter not in self._offered:
            raise InvalidRequestError(
                f"no adapter named {request.adapter!r}; this server has: "
                f"{', '.join(self.adapter_names) or 'none'}.",
                param="model",
            )
        if not 1 <= request.n <= len(self._slots):
            raise InvalidRequestError(
                f"n must be between 1 and {len(self._slots)} (the server's slots), got {request.n}."
            )
        if len(prompt) + request.params.max_tokens > self.n_ctx_per_slot:
            raise ContextLengthExceededError(
                len(prompt), request.params.max_tokens, self.n_ctx_per_slot
            )
        samplers: list[SamplerChain] = []
        try:
            for index in range(request.n):
                samplers.append(
                    SamplerChain(_choice_params(request.params, index), self._model.vocab, n_vocab)
                )
        except BaseException:
            for sampler in samplers:
                sampler.free()
            raise
        now = time.perf_counter()
        deadline = now + (request.timeout_s or self.config.request_timeout_s)
        generations = [
            _Generation(
                key=next(self._keys),
                index=index,
                request=request,
                sampler=sampler,
                sink=sink,
                submitted=now,
                deadline=deadline,
            )
            for index, sampler in enumerate(samplers)
        ]
        for fork in generations[1:]:
            fork.fork_of = generations[0].key
        with self._offer_lock:
            offered = not request.adapter or request.adapter in self._offered
            queued = offered and self._queue.try_put_all(generations)
        if not queued:
            for sampler in samplers:
                sampler.free()
            if not offered:  # unloaded since the check above
                raise InvalidRequestError(f"no adapter named {request.adapter!r}.", param="model")
            self._counters.requests_rejected += 1
            raise QueueFullError(retry_after_s=self._retry_after_s())
        self._wake.set()
        return generations

    def _retry_after_s(self) -> float:
        """A rough wait before a retry can get in: the mean queue wait so far, at least 1 s."""
        c = self._counters
        mean_wait = c.queue_wait_s / c.requests_admitted if c.requests_admitted else 0.0
        return max(1.0, round(mean_wait, 1))

    def _cancel(self, generations: list[_Generation]) -> None:
        for generation in generations:
            generation.cancelled = True
        self._wake.set()

    # --- the loop (engine thread only) ---------------------------------------------------------

    def _run(self) -> None:
        while not self._closing:
            started = time.perf_counter()
            idle = False
            try:
                if self._reset_cache_requested:
                    self._reset_cache_requested = False
                    self._drop_idle_caches()
                self._reap()
                self._run_commands()
                waiting = self._waiting_in_admission_order()
                aware = self.config.prefix_reuse_cost_aware
                per_token = self._step_costs.overall.per_token_seconds() if aware else None
                step = plan(
                    PlanState(
                        slots=self._slots,
                        running=list(self._running.values()),
                        waiting=waiting,
                        batch_capacity=self._model.n_batch,
                        min_copy_tokens=self._reuse_cost.min_copy_tokens(per_token),
                        min_restore_tokens=self._reuse_cost.min_restore_tokens(per_token),
                        score_chunk=PROMPT_LOGPROB_CHUNK,
                        # Only admissions read the RAM entries: none to copy out otherwise.
                        ram=self._prompt_cache.entries() if waiting else (),
                        keep_evicted=self._prompt_cache.enabled,
                        previous_adapter=self._adapter_now,
                    )
                )
                if step.is_empty:
                    idle = True
                    self._wake.wait(IDLE_WAIT_S)
                    self._wake.clear()
                    continue
                self._execute(step)
            except Exception:
                logger.exception("engine step failed; failing the requests in flight")
                self._fail_active("internal engine error (see the server log)")
            finally:
                self._outbox.flush()
                spent = time.perf_counter() - started
                if idle:
                    self._counters.idle_s += spent
                else:
                    self._counters.busy_s += spent
        self._shutdown()
        self._outbox.flush()

    def _waiting_in_admission_order(self) -> Sequence[_Generation]:
        if not self._queue.waiting:
            return ()
        waiting = self._queue.snapshot()
        tags: dict[int, float] = {}  # a request's choices share one tag
        for generation in waiting:
            if generation.fair_tag is None:
                key = id(generation.request)
                if key not in tags:
                    tags[key] = self._fair_share.tag(generation.request.tenant)
                generation.fair_tag = tags[key]
        return admission_order(
            waiting,
            priority=lambda g: g.request.priority,
            tag=lambda g: g.fair_tag or 0.0,
        )

    def _drop_idle_caches(self) -> None:
        self._prompt_cache.clear()
        for slot in self._slots:
            if slot.generation is None:
                self._executor.clear(slot.seq_id)

    def _reap(self) -> None:
        """Finish cancelled and timed-out requests, running or waiting."""
        now = time.perf_counter()
        for generation in list(self._running.values()):
            if generation.cancelled:
                self._finish(generation, "cancelled")
            elif now >= generation.deadline:
                self._finish(generation, "timeout")
        if not self._queue.waiting:
            return
        for generation in self._queue.snapshot():
            expired = generation.cancelled or now >= generation.deadline
            if expired and self._queue.remove(generation):
                self._finish(generation, "cancelled" if generation.cancelled else "timeout")

    def _execute(self, step: StepPlan) -> None:
        """Apply the plan: admissions, prefix copies, then one decode and the sampling."""
        now = time.perf_counter()
        slots = self._slots
        for save in step.saves:
            self._save(slots[save.seq_id])
        replan = False
        for admission in step.admissions:
            generation = self._queue.take(_has_key(admission.key))
            assert generation is not None, "planned admission of a request no longer queued"
            slot = slots[admission.seq_id]
            generation.prompt_pos = self._executor.keep_prefix(slot.seq_id, admission.keep)
            # llama.cpp refused a partial removal and the slot was cleared: the rest of this
            # plan assumed the prefix was kept, so plan again from the real state.
            replan |= generation.prompt_pos != admission.keep
            slot.generation, slot.last_used = generation, now
            slot.salt = generation.salt  # what it keeps past the shared prefix is its own
            slot.adapter = generation.adapter
            generation.slot, generation.admitted = slot, now
            generation.phase = Phase.PREFILLING
            self._fair_share.admitted(generation.fair_tag or 0.0)
            self._running[generation.key] = generation
            c = self._counters
            c.requests_admitted += 1
            c.queue_wait_s += now - generation.submitted
        for restore in step.restores:
            replan |= not self._restore(self._running[restore.key], restore)
        if self._prompt_cache.enabled:
            self._prompt_cache.stats.misses += len(step.admissions) - len(step.restores)
        if replan:
            return
        for copy in step.copies:
            generation = self._running[copy.key]
            self._executor.copy_prefix(copy.src, copy.dst, copy.keep)
            generation.prompt_pos = copy.keep
            self._counters.prefix_copies += 1
            self._counters.prefix_copy_tokens += copy.keep
        if step.n_tokens == 0:
            return
        running = self._running
        if step.adapter != self._adapter_now:
            self._model.set_adapters([self._adapters[step.adapter]] if step.adapter else [])
            self._adapter_now = step.adapter
            self._counters.adapter_switches += 1
        started = time.perf_counter()
        result = self._executor.decode(step, lambda key: running[key].prompt)
        decoded = time.perf_counter() - started
        passes = graph_passes(
            [*((d.seq_id, 1 + len(d.draft)) for d in step.decodes)]
            + [(c.seq_id, c.end - c.start) for c in step.chunks],
            self._n_ubatch,
        )
        self._step_costs.observe(len(step.decodes), step.n_tokens, decoded, passes)
        self._counters.decode_s += decoded
        self._counters.decode_steps += 1
        self._counters.graph_passes += passes
        if result.status != 0:
            self._fail_active(f"llama_decode failed with status {result.status}")
            return
        for key, row in result.score_rows.items():
            self._send_prompt_logprobs(running[key], row, step)
        for chunk in step.chunks:
            generation = running[chunk.key]
            generation.prompt_pos = chunk.end
            generation.evaluated += chunk.end - chunk.start
            self._counters.prompt_tokens_evaluated += chunk.end - chunk.start
            slots[chunk.seq_id].last_used = now
            if chunk.completes:
                self._count_prefix_use(generation)
        for fork in step.forks:  # choice 0's prompt is in its cache now: take it whole
            generation = running[fork.key]
            self._executor.copy_prefix(fork.src, fork.dst, len(slots[fork.src].cached_tokens))
            generation.prompt_pos = len(generation.prompt)
            self._counters.prefix_copies += 1
            self._counters.prefix_copy_tokens += generation.prompt_pos
            self._count_prefix_use(generation)
            self._sample(generation, result.sample_rows[fork.leader])  # choice 0's logits
        drafted = {d.key: d for d in step.decodes if d.draft}
        for key, row in result.sample_rows.items():
            decode = drafted.get(key)
            if decode is None:
                self._sample(running[key], row)
            else:
                self._verify(running[key], decode, row)
        if self._speculate:
            self._propose_drafts()

    def _verify(self, generation: _Generation, decode: DecodeToken, row: int) -> None:
        """Sample the rows of ``decode`` and its draft in order, keeping the draft while the
        sampler picks it; the rejected tail leaves the KV cache."""
        draft = decode.draft
        accepted = 0
        finished = False
        for offset in range(len(draft) + 1):
            if not self._sample(generation, row + offset):
                finished = True  # the slot keeps every decoded token, as its mirror says
                break
            if offset == len(draft) or generation.next_token != draft[offset]:
                break
            accepted += 1  # already in the KV cache: the next sample reads its row
        self._counters.draft_tokens += len(draft)
        self._counters.accepted_tokens += accepted
        if generation.draft_curve is not None and not finished:
            # A request that ended inside its draft (a stop, the budget) says nothing of
            # whether the draft's next token would have been accepted.
            generation.draft_curve.record(len(draft), accepted)
        slot = generation.slot
        keep = decode.pos + 1 + accepted
        if slot is not None and self._executor.keep_prefix(slot.seq_id, keep) != keep:
            self._finish(generation, "error", "the KV cache refused to drop a rejected draft")

    def _propose_drafts(self) -> None:
        """Each decoding sequence's draft for the next step: the length whose expected accepted
        tokens (by the length of the repeat it continues) buy the most tokens per second at
        this machine's step cost with this many sequences decoding."""
        decoding = [g for g in self._running.values() if g.next_token is not None]
        aware = self.config.speculative_cost_aware
        cost = self._step_costs.for_decoding(len(decoding))
        ceiling = self.config.speculative_max_draft
        proposed: dict[int, tuple[float, int]] = {}  # seq id -> (expected accepted, length)
        for generation in self._running.values():
            generation.draft, generation.draft_curve = (), None
        for generation in decoding:
            drafter = generation.drafter
            if drafter is None:
                continue
            left = min(ceiling, generation.params.max_tokens - len(generation.generated) - 1)
            draft = drafter.propose(left)
            if not draft.tokens:
                continue
            curve = self._acceptance.curve(draft.match)
            length = (
                best_draft_length(curve, len(draft.tokens), cost.step_seconds, len(decoding))
                if aware
                else len(draft.tokens)
            )
            if length == 0:
                curve.skipped()
                continue
            generation.draft, generation.draft_curve = draft.tokens[:length], curve
            if generation.slot is not None:
                proposed[generation.slot.seq_id] = (curve.expected(length), length)
        if not aware or len(decoding) < 2 or not proposed:
            return  # alone, a draft rides in the step's one pass: its tokens were the cost
        keep = choose_drafts(
            [g.slot.seq_id for g in decoding if g.slot is not None],
            proposed,
            cost,
            self._n_ubatch,
        )
        for generation in decoding:
            if generation.slot is not None and generation.slot.seq_id not in keep:
                generation.draft, generation.draft_curve = (), None

    def _save(self, slot: _Slot) -> None:
        """Keep an evicted slot's state in the RAM prompt cache (best effort: a state llama.cpp
        does not give, or one larger than the whole cache, is simply not kept)."""
        started = time.perf_counter()
        saved = self._executor.save(slot.seq_id)
        if saved is None:
            return
        spent = time.perf_counter() - started
        self._reuse_cost.observe_state(saved[1], len(slot.cached_tokens), spent)
        if (
            self._prompt_cache.put(slot.cached_tokens, *saved, salt=slot.salt, adapter=slot.adapter)
            is not None
        ):
            stats = self._prompt_cache.stats
            stats.saves += 1
            stats.save_seconds += spent

    def _restore(self, generation: _Generation, restore: Restore) -> bool:
        """Give ``generation``'s slot the planned RAM state; False when it could not be (the
        slot is then empty and the prompt is prefilled: the caller plans the step again)."""
        cache = self._prompt_cache
        entry = cache.take(restore.entry_id)
        started = time.perf_counter()
        kept = 0
        if entry is not None:
            kept = self._executor.restore(
                restore.seq_id, entry.tokens, entry.data, entry.size, restore.keep
            )
        generation.prompt_pos = kept
        if kept != restore.keep:
            cache.stats.restore_failures += 1
            if entry is not None:
                cache.drop(entry.entry_id)
            logger.warning("prompt cache entry %d not restored; prefilling", restore.entry_id)
            return False
        spent = time.perf_counter() - started
        self._reuse_cost.observe_restore(spent)
        cache.stats.restores += 1
        cache.stats.restored_tokens += kept
        cache.stats.restore_seconds += spent
        return True

    def _count_prefix_use(self, generation: _Generation) -> None:
        """Once a prompt is fully in the cache: how much of it was not evaluated."""
        c = self._counters
        cached = generation.cached
        c.prompt_tokens_cached += cached
        if cached > 0:
            c.prefix_hits += 1
        else:
            c.prefix_misses += 1

    def _send_prompt_logprobs(self, generation: _Generation, row: int, step: StepPlan) -> None:
        """Logprobs of the prompt tokens this step's chunk of ``generation`` predicts."""
        chunk = next(c for c in step.chunks if c.key == generation.key)
        targets = generation.prompt[chunk.start + 1 : chunk.end + 1]  # row i predicts start+i+1
        n_top = generation.params.prompt_logprobs or 0
        entries = prompt_logprobs(self._model.ctx, self._model.n_vocab, row, targets, n_top)
        generation.sink(PromptLogprobsEvent(chunk.start + 1, tuple(entries)))

    def _sample(self, generation: _Generation, row: int) -> bool:
        """Sample ``generation``'s next token from batch row ``row`` and deliver it; True when
        the generation goes on (the token is its ``next_token``)."""
        params = generation.params
        if params.max_tokens == 0:  # prompt scoring only
            self._finish(generation, "length")
            return False
        token = generation.sampler.sample(self._model.ctx, row)
        logprob = None
        if params.logprobs is not None:
            logits = logits_row(self._model.ctx, row, self._model.n_vocab)
            logprob = token_logprob(logits, token, params.logprobs)
        now = time.perf_counter()
        if generation.first_token_at is None:
            generation.first_token_at = now
            generation.phase = Phase.DECODING
            self._counters.ttft.observe(now - generation.submitted)
            if self._speculate and params.speculative:
                generation.drafter = NgramDrafter(generation.prompt)
        else:
            self._counters.inter_token.observe(now - generation.last_token_at)
        generation.last_token_at = now
        if self._model.is_eog(token) and not params.ignore_eos:
            self._emit(generation, self._flush_text(generation), token)
            self._finish(generation, "stop")
            return False
        generation.generated.append(token)
        self._counters.tokens_generated += 1
        special = token in params.preserved_tokens  # e.g. a tool-call marker the parser needs
        text = generation.detokenizer.feed(self._model.token_to_piece(token, special=special))
        check = generation.stops.feed(text)
        index = generation.index
        if check.stopped:
            generation.sink(TokenEvent(check.text, token, index, logprob))
            self._finish(generation, "stop")
            return False
        if len(generation.generated) >= params.max_tokens:
            text = check.text + self._flush_text(generation)
            generation.sink(TokenEvent(text, token, index, logprob))
            self._finish(generation, "length")
            return False
        generation.sink(TokenEvent(check.text, token, index, logprob))
        generation.next_token = token
        if generation.drafter is not None:
            generation.drafter.append(token)
        return True

    def _flush_text(self, generation: _Generation) -> str:
        """Text held back (partial UTF-8, possible stop-string start) released at the end."""
        check = generation.stops.feed(generation.detokenizer.flush())
        return check.text if check.stopped else check.text + generation.stops.flush()

    def _emit(self, generation: _Generation, text: str, token: int) -> None:
        if text:
            generation.sink(TokenEvent(text, token, generation.index))

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
        self._running.pop(generation.key, None)
        generation.phase = Phase.FINISHED
        generation.next_token = None
        generation.draft, generation.draft_curve = (), None
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
        generation.sink(FinishEvent(reason, usage, timings, error, generation.index))

    def _fail_active(self, message: str) -> None:
        """A decode failed: finish every running request with 'error' and drop their KV."""
        for slot in self._slots:
            self._executor.clear(slot.seq_id)
        for generation in list(self._running.values()):
            self._finish(generation, "error", message)

    def _shutdown(self) -> None:
        self._fail_commands()  # admin calls still waiting get an answer, never a hang
        for running in list(self._running.values()):
            self._finish(running, "error", "the server is shutting down")
        while (waiting := self._queue.pop_oldest()) is not None:
            self._finish(waiting, "error", "the server is shutting down")


_Command = tuple[Callable[[], None], "concurrent.futures.Future[None]"]


def _settle(future: concurrent.futures.Future[None]) -> None:
    """Resolve ``future`` unless its waiter cancelled it (then nobody is listening)."""
    if not future.done():
        future.set_result(None)


def _has_key(key: int) -> Callable[[_Generation], bool]:
    return lambda generation: generation.key == key


def _choice_params(params: SamplingParams, index: int) -> SamplingParams:
    """Choice ``index`` of an n > 1 request samples with its own seed (``seed + index``)."""
    if index == 0 or params.seed is None:
        return params
    return dataclasses.replace(params, seed=(params.seed + index) % 2**32)


if TYPE_CHECKING:

    def _implements_engine_protocol(engine: LlamaEngine) -> Engine:
        return engine  # mypy fails here if LlamaEngine drifts from the Engine protocol
