"""The generation pipeline: the one path from a prepared request to the engine and back.

Every generation route (chat completions, text completions, the Responses API and /v1/ask)
prepares its request once (protocol → prompt tokens + ``SamplingParams`` + a
``ResponseRecord``), then runs it here: admission (engine errors become API errors before the
first byte), the input and output guardrails, generation, usage (metrics, the request log and
the token rate limit, exactly once), tracing, the capture record and the drift observation. A
client that goes away cancels its generation. Handlers only format what comes out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loguru import logger
from starlette.requests import Request

from server.api.errors import BadRequestError, ClientDisconnected, ServiceUnavailableError
from server.chat.prompt import ChatPrompt
from server.drift.monitor import DriftMonitor
from server.drift.observation import observation
from server.engine.boundary import check_token_id
from server.engine.types import (
    ContextLengthExceededError,
    Engine,
    EngineNotReadyError,
    FinishEvent,
    GenerationRequest,
    InvalidRequestError,
    PromptLogprobsEvent,
    QueueFullError,
    SamplingParams,
    Timings,
    TokenEvent,
    TokenLogprob,
    Usage,
)
from server.feedback.records import Interaction, ModelVersion
from server.feedback.service import FeedbackService
from server.observability.genai import GenAICall, operation_name, time_per_output_token
from server.observability.metrics import Metrics
from server.observability.tracing import Tracing
from server.rag.embedder import Vectors
from server.rollout.controller import Assignment, RolloutController
from server.runtime.drain import Drain
from server.runtime.services import ServedModel, Services
from server.security.guardrails import REFUSAL, Guardrails
from server.security.rate_limit import RateLimiter

T = TypeVar("T")

# Engine finish reasons as the OpenAI protocol names them.
_OPENAI_FINISH = {
    "stop": "stop",
    "length": "length",
    "timeout": "length",
    "cancelled": "stop",
    "error": "stop",
}
_NO_TIMINGS = Timings(0, 0, 0, 0, 0, 0)


@dataclass
class ResponseRecord:
    """What a handler knows of its response, for the capture record and the drift observation.

    The pipeline adds the answer, usage and finish reason when the response ends
    (``GenerationService.stream``), so every generation route is captured and observed the
    same way; a handler only fills in what its protocol carries.
    """

    response_id: str  # the id the client sees, and sends back to /v1/feedback
    kind: str  # the route as drift names it: "chat", "completions", "responses", "ask"
    query: str  # what drift reads of the request: the last user message, the prompt, …
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None  # text completions: the raw prompt
    sources: list[dict[str, Any]] | None = None
    # Retrieval, where it ran (/v1/ask): drift's relevance signals and the query's embedding.
    top_score: float | None = None
    no_context: bool | None = None
    query_vector: Vectors | None = None
    # The handler calls ``GenerationService.record`` itself, once, with the final answer
    # (/v1/ask's agents may call the model several times, or not at all).
    per_answer: bool = False


@dataclass
class RequestContext:
    """Who is asking and where the per-request log fields go."""

    request_id: str
    key_id: str
    route: str
    log_fields: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    record: ResponseRecord | None = None  # set by handlers of generation routes
    priority: int = 0  # admission order among waiting requests: lower goes first (vLLM)
    cache_salt: str = ""  # the client's own prefix-cache scope within its key (vLLM's field)
    shared_prefix: int = 0  # prompt tokens the server wrote itself, shareable across keys
    adapter: str = ""  # the named LoRA adapter the request picked by ``model`` ("" = base)
    tenant: str | None = None  # whose turn (fair share); None: the key's (server/api/deps.py)
    # Its arm when a champion/challenger rollout picked the adapter (server/rollout).
    assignment: Assignment | None = None
    # Headers the response carries, whatever its class (the middleware writes them).
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TextDelta:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()  # the tokens behind ``text``, when asked for
    index: int = 0  # the choice it belongs to (n > 1)


@dataclass(frozen=True)
class PromptScores:
    """Logprobs of prompt tokens ``start ..`` (prompt scoring, before any delta); the prompt
    is scored once and these serve every choice."""

    start: int
    entries: tuple[TokenLogprob, ...]


@dataclass(frozen=True)
class Completed:
    """End of a generation (all its choices), with OpenAI-style finish reasons.

    ``usage`` counts the prompt once and the completion tokens of every choice.
    """

    finish_reason: str  # choice 0's
    usage: Usage
    timings: Timings
    refused: bool = False  # the input guardrail refused: nothing was generated
    choice_finish_reasons: tuple[str, ...] = ()  # per choice when n > 1

    @property
    def finish_reasons(self) -> tuple[str, ...]:
        """One finish reason per choice, index order."""
        return self.choice_finish_reasons or (self.finish_reason,)

    @property
    def tokens_per_s(self) -> float | None:
        if self.usage.completion_tokens < 2 or self.timings.decode_ms <= 0:
            return None
        return (self.usage.completion_tokens - 1) / (self.timings.decode_ms / 1000)


GenerationItem = TextDelta | PromptScores | Completed


@dataclass(frozen=True)
class Collected:
    """A whole generation: each choice's text and token logprobs, and the prompt's logprobs."""

    texts: list[str]  # index order
    logprobs: list[list[TokenLogprob]]  # index order
    prompt_logprobs: list[TokenLogprob]  # for prompt tokens 1.. (token 0 has none)
    done: Completed

    @property
    def text(self) -> str:
        """Choice 0's text (the only one when n = 1)."""
        return self.texts[0]


class GenerationService:
    """Runs generations for the HTTP layer over the engine that is serving now."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        limiter: RateLimiter | None,
        guardrails: Guardrails | None,
        *,
        max_tokens_default: int,
        max_tokens_limit: int,
        min_priority: int = 0,
        prefix_cache_scope: str = "key",
        drain: Drain | None = None,
        tracing: Tracing | None = None,
        feedback: FeedbackService | None = None,
        model_version: ModelVersion | None = None,
        chat: ChatPrompt | None = None,
        drift: DriftMonitor | None = None,
        model_id: str | None = None,
        registry_version: str = "unregistered",
        rollout: RolloutController | None = None,
    ) -> None:
        self._engine = engine
        self._chat = chat or ChatPrompt(engine)
        self._drain = drain
        self.metrics = metrics
        self.tracing = tracing or Tracing()
        self.limiter = limiter
        self.guardrails = guardrails
        self.max_tokens_default = max_tokens_default
        self.max_tokens_limit = max_tokens_limit
        self.min_priority = min_priority
        self.prefix_cache_scope = prefix_cache_scope
        self.feedback = feedback
        self.model_version = model_version or ModelVersion("unknown")
        self.drift = drift
        self.model_id = model_id or self.model_version.name  # gen_ai.response.model
        self.registry_version = registry_version
        self.rollout = rollout

    @classmethod
    def for_services(cls, services: Services, served: ServedModel) -> GenerationService:
        """The service over the model a request leased, with the app's metrics, limits and
        guardrails; its capture records name that model's version."""
        settings = services.settings
        return cls(
            served.engine,
            services.metrics,
            services.limiter,
            services.guardrails,
            max_tokens_default=settings.max_tokens_default,
            max_tokens_limit=settings.max_tokens_limit,
            min_priority=settings.min_priority,
            prefix_cache_scope=settings.prefix_cache_scope,
            drain=services.drain,
            tracing=services.tracing,
            feedback=services.feedback,
            model_version=served.capture_version,
            chat=served.chat,
            drift=services.drift,
            model_id=served.model_id,
            registry_version=served.version,
            rollout=served.rollout,
        )

    # --- prompts ---------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Tokens one request may use: prompt plus completion."""
        return self._engine.n_ctx_per_slot

    def chat_prompt(self, messages: Sequence[Mapping[str, Any]], **template_vars: Any) -> list[int]:
        """Prompt tokens of a chat: the model's own template, then its tokenizer.

        ``template_vars`` are extra template variables, e.g. ``tools``.
        """
        return self._chat.tokens(messages, **template_vars)

    @property
    def template_source(self) -> str:
        """The chat template in use (whether it renders tools itself decides how tools go in)."""
        return self._chat.source

    @property
    def n_vocab(self) -> int:
        """Token ids run 0 .. n_vocab - 1."""
        return self._engine.n_vocab

    def token_piece(self, token: int) -> bytes:
        """The bytes of one token id (range-checked by the engine)."""
        return self._engine.token_piece(token)

    def count_chat_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """How many prompt tokens ``messages`` take."""
        return len(self.chat_prompt(messages))

    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        """Text → token ids, with the model's BOS when it uses one (and ``add_special``)."""
        return self._engine.tokenize(text, add_special=add_special, parse_special=parse_special)

    def check_token_ids(self, tokens: Sequence[int], param: str) -> None:
        """400 naming ``param[i]`` unless every id is in the vocabulary.

        Runs before any native call: llama.cpp throws a C++ exception on an unknown id, and
        one through ctypes ends the process.
        """
        n_vocab = self._engine.n_vocab
        for index, token in enumerate(tokens):
            try:
                check_token_id(token, n_vocab, f"{param}[{index}]")
            except InvalidRequestError as exc:
                raise BadRequestError(str(exc), code="invalid_value", param=exc.param) from exc

    def detokenize(self, tokens: list[int], *, param: str = "tokens") -> str:
        """Token ids → text; ids are range-checked first (400 naming ``param``)."""
        self.check_token_ids(tokens, param)
        return self._engine.detokenize(tokens)

    def resolve_max_tokens(self, requested: int | None, prompt_tokens: int) -> int:
        """Requested max_tokens, checked; or the default, capped to the room left."""
        if requested is not None:
            if requested > self.max_tokens_limit:
                raise BadRequestError(
                    f"max_tokens is {requested}; this server allows at most "
                    f"{self.max_tokens_limit}.",
                    code="invalid_value",
                    param="max_tokens",
                )
            return requested
        room = self.n_ctx - prompt_tokens
        if room < 1:
            raise _context_error(prompt_tokens, 1, self.n_ctx)
        return min(self.max_tokens_default, room)

    def set_priority(self, ctx: RequestContext, priority: int | None) -> None:
        """Queue ``ctx``'s generations at ``priority``; 400 when it is more urgent than this
        server lets a request ask for (any key could otherwise jump every queue). A body
        without one keeps what the gateway header or the key's default set
        (server/api/deps.py); an explicit value, 0 included, wins."""
        priority = ctx.priority if priority is None else priority
        if priority < self.min_priority:
            raise BadRequestError(
                f"priority is {priority}; this server accepts {self.min_priority} or more "
                "(lower values go first; GGSERVE_MIN_PRIORITY).",
                code="invalid_value",
                param="priority",
            )
        ctx.priority = priority

    def pick_adapter(self, ctx: RequestContext, model: str | None, user: str | None = None) -> None:
        """A request whose ``model`` names one of the engine's LoRA adapters runs with it.
        Any other name (the base's id, an alias, none) asks for the served model: the
        adapter promoted as its default, or, while a rollout runs, the arm this key (or this
        ``user`` of the key) is sticky to; the response says which in ``x-ggserve-variant``."""
        if model and model in self._engine.adapter_names:
            ctx.adapter = model
            return
        if self.rollout is None:
            ctx.adapter = ""
            return
        assignment = self.rollout.assign(ctx.key_id, user)
        ctx.adapter = assignment.adapter
        if assignment.variant is not None:
            ctx.assignment = assignment
            ctx.log_fields["variant"] = assignment.variant
            ctx.response_headers["x-ggserve-variant"] = assignment.variant
            ctx.response_headers["x-ggserve-rollout"] = assignment.rollout_id or ""

    def cache_salt(self, ctx: RequestContext) -> str:
        """The prefix-cache scope of ``ctx``'s generations: its key (unless the operator
        shares the cache globally), narrowed by the client's own ``cache_salt``."""
        scope = ctx.key_id if self.prefix_cache_scope == "key" else ""
        return f"{scope}\x00{ctx.cache_salt}" if ctx.cache_salt else scope

    def check_choices(self, n: int) -> None:
        """Refuse ``n`` choices unless each can have a slot of its own."""
        if n != 1 and not 1 <= n <= (slots := self._engine.stats().slots_total):
            raise BadRequestError(
                f"n is {n}; this server generates at most {slots} choices per request "
                "(one per slot).",
                code="invalid_value",
                param="n",
            )

    def input_violation(self, text: str) -> str | None:
        """The guardrail pattern ``text`` breaks, or None."""
        return self.guardrails.violation(text) if self.guardrails else None

    # --- generations -----------------------------------------------------------------------

    async def stream(
        self,
        ctx: RequestContext,
        prompt_tokens: list[int],
        params: SamplingParams,
        *,
        input_text: str | None = None,
        n: int = 1,
    ) -> AsyncGenerator[GenerationItem, None]:
        """Text deltas (tagged with their choice), then one ``Completed``; raises ``APIError``
        before the first item.

        ``n`` choices come from one prefill (the engine forks the prompt's KV cache).
        ``input_text`` is checked against the guardrails first: a refusal is a generation like
        any other (one delta per choice, then ``content_filter``), so it streams when the
        client streams. Usage is recorded and charged once, before ``Completed`` is yielded.
        """
        self.check_choices(n)
        if input_text is not None and (violation := self.input_violation(input_text)):
            ctx.log_fields["guardrail"] = violation
            done = Completed(
                "content_filter",
                Usage(len(prompt_tokens), 0, 0),
                _NO_TIMINGS,
                refused=True,
                choice_finish_reasons=("content_filter",) * n,
            )
            await self._account(ctx, done, params)
            self._record(ctx, params, REFUSAL, done)
            for index in range(n):
                yield TextDelta(REFUSAL, index=index)
            yield done
            return
        request = GenerationRequest(
            ctx.request_id,
            prompt_tokens,
            params,
            n=n,
            priority=ctx.priority,
            tenant=ctx.tenant or ctx.key_id,
            cache_salt=self.cache_salt(ctx),
            shared_prefix=ctx.shared_prefix,
            adapter=ctx.adapter,
        )
        try:
            events = self._engine.generate(request)
            first = await anext(events)
        except QueueFullError as exc:
            raise ServiceUnavailableError(
                str(exc) + "; retry shortly.",
                code="overloaded",
                headers={"Retry-After": str(max(1, round(exc.retry_after_s)))},
            ) from exc
        except ContextLengthExceededError as exc:
            raise _context_error(exc.prompt_tokens, exc.max_tokens, exc.n_ctx) from exc
        except InvalidRequestError as exc:
            raise BadRequestError(str(exc), code="invalid_value", param=exc.param) from exc
        except EngineNotReadyError as exc:
            raise ServiceUnavailableError(
                str(exc), code="model_not_ready", headers={"Retry-After": "5"}
            ) from exc
        texts: list[list[str]] = [[] for _ in range(n)]
        finished: dict[int, FinishEvent] = {}
        completion_tokens = 0
        accounted = False  # else the finally charges what a cut-off generation used
        scanners = [self.guardrails.output_scanner() for _ in range(n)] if self.guardrails else []
        try:
            event: TokenEvent | PromptLogprobsEvent | FinishEvent | None = first
            while event is not None:
                if isinstance(event, PromptLogprobsEvent):
                    yield PromptScores(event.start, event.entries)
                elif isinstance(event, FinishEvent):
                    if event.finish_reason == "error":
                        if self._drain is not None and self._drain.deadline_passed:
                            raise ServiceUnavailableError(
                                "The server is shutting down and its drain time is over; "
                                "retry the request.",
                                code="shutting_down",
                                headers={"Retry-After": str(self._drain.retry_after_s())},
                            )
                        self._rollout_outcome(ctx, error=True)
                        raise RuntimeError(f"engine error: {event.error}")
                    finished[event.index] = event
                    if len(finished) == n:
                        done = _completed(finished)
                        accounted = True
                        await self._account(ctx, done, params)
                        self._record(ctx, params, "".join(texts[0]), done)
                        yield done
                        return
                else:
                    completion_tokens += 1
                    so_far = texts[event.index]
                    if event.text:
                        so_far.append(event.text)
                        if scanners and scanners[event.index].feed(event.text):
                            await events.aclose()  # stop decoding now: frees the slots
                            usage = Usage(len(prompt_tokens), completion_tokens, 0)
                            accounted = True
                            done = Completed(
                                "content_filter",
                                usage,
                                _NO_TIMINGS,
                                choice_finish_reasons=("content_filter",) * n,
                            )
                            await self._account(ctx, done, params)
                            self._record(ctx, params, "".join(texts[0][:-1]), done)
                            yield done
                            return
                    if event.text or event.logprob is not None:
                        logprobs = () if event.logprob is None else (event.logprob,)
                        yield TextDelta(event.text, logprobs, event.index)
                event = await anext(events, None)
        finally:
            await events.aclose()
            if not accounted and self.limiter is not None:  # client gone, error: still charged
                self.limiter.charge_in_background(
                    ctx.key_id, len(prompt_tokens) + completion_tokens
                )

    async def _account(self, ctx: RequestContext, done: Completed, params: SamplingParams) -> None:
        """Usage and timings into metrics, the request's log record and the token budget."""
        usage, timings = done.usage, done.timings
        self.metrics.prompt_tokens.labels(key_id=ctx.key_id).inc(usage.prompt_tokens)
        self.metrics.completion_tokens.labels(key_id=ctx.key_id).inc(usage.completion_tokens)
        self.metrics.cached_prompt_tokens.inc(usage.cached_prompt_tokens)
        self.metrics.finished.labels(finish_reason=done.finish_reason).inc()
        if timings.ttft_ms > 0:
            self.metrics.ttft.labels(route=ctx.route).observe(timings.ttft_ms / 1000)
            self.metrics.queue_wait.observe(timings.queue_ms / 1000)
        self._rollout_outcome(ctx, error=False, ttft_s=timings.ttft_ms / 1000 or None)
        call = self._genai_call(ctx, done, params)
        duration_s = time.perf_counter() - ctx.started
        self.metrics.genai.observe(
            call,
            duration_s=duration_s,
            ttft_s=timings.ttft_ms / 1000 if timings.ttft_ms > 0 else None,
            tpot_s=time_per_output_token(usage.completion_tokens, timings.decode_ms),
        )
        if self.tracing.enabled and timings.ttft_ms > 0:
            self.tracing.generation(
                call.span_name,
                call.attributes(),
                [
                    ("queue_wait", timings.queue_ms),
                    ("prefill", timings.prompt_ms),
                    ("decode", timings.decode_ms),
                ],
                {
                    "ggserve.request_id": ctx.request_id,
                    "ggserve.prompt_tokens": usage.prompt_tokens,
                    "ggserve.cached_prompt_tokens": usage.cached_prompt_tokens,
                    "ggserve.completion_tokens": usage.completion_tokens,
                },
                start_ns=time.time_ns() - int(duration_s * 1e9),
            )
        if done.tokens_per_s is not None:
            self.metrics.tokens_per_s.observe(done.tokens_per_s)
        ctx.log_fields.update(
            prompt_tokens=usage.prompt_tokens,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_ms=round(timings.ttft_ms, 1),
            tokens_per_s=None if done.tokens_per_s is None else round(done.tokens_per_s, 1),
            finish_reason=done.finish_reason,
        )
        if self.limiter is not None and (cost := usage.prompt_tokens + usage.completion_tokens):
            # Prompt and completion (docs/security.md). Shielded: the tokens were used, so a
            # client leaving now (which cancels this generation) must not cut the charge off.
            await asyncio.shield(self.limiter.charge_tokens(ctx.key_id, cost))

    def _rollout_outcome(
        self, ctx: RequestContext, *, error: bool, ttft_s: float | None = None
    ) -> None:
        """Feed the request's rollout arm, once per request (/v1/ask may generate twice)."""
        assignment, ctx.assignment = ctx.assignment, None
        if assignment is None or assignment.variant is None or self.rollout is None:
            return
        response_id = ctx.record.response_id if ctx.record is not None else None
        try:
            self.rollout.finished(assignment, response_id, error=error, ttft_s=ttft_s)
        except Exception as exc:  # bookkeeping must never cost the user the answer
            logger.opt(exception=exc).error("rollout outcome dropped")
        outcome = "error" if error else "ok"
        self.metrics.rollout_requests.labels(variant=assignment.variant, outcome=outcome).inc()

    def _genai_call(
        self, ctx: RequestContext, done: Completed, params: SamplingParams
    ) -> GenAICall:
        """The generation as OpenTelemetry's GenAI conventions name it (spans and metrics)."""
        return GenAICall(
            operation=operation_name(ctx.route),
            request_model=ctx.adapter or self.model_id,  # what the request resolved to
            response_model=ctx.adapter or self.model_id,
            model_version=self.registry_version,
            response_id=ctx.record.response_id if ctx.record is not None else None,
            finish_reasons=done.finish_reasons,
            input_tokens=done.usage.prompt_tokens,
            output_tokens=done.usage.completion_tokens,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=params.seed,
            choice_count=len(done.finish_reasons),
            cached_input_tokens=done.usage.cached_prompt_tokens,
            variant=ctx.log_fields.get("variant"),  # set by pick_adapter while a rollout runs
        )

    def _record(
        self, ctx: RequestContext, params: SamplingParams, answer: str, done: Completed
    ) -> None:
        if ctx.record is not None and not ctx.record.per_answer:
            self.record(ctx, answer, done.usage, done.finish_reason, params)

    def record(
        self,
        ctx: RequestContext,
        answer: str,
        usage: Usage,
        finish_reason: str,
        params: SamplingParams | None,
    ) -> None:
        """The end of the response ``ctx`` answers: its capture record (when capture is on)
        and its drift observation (when drift is on). Never blocks or fails the request.

        Generations call this when they end; a handler whose response is built from several
        generations (or none), as /v1/ask's agents may, sets ``per_answer`` on its record and
        calls it once with the final answer.
        """
        record = ctx.record
        if record is None:
            return
        self._observe_drift(record, finish_reason, usage)
        if self.feedback is None or self.feedback.level == "off":
            return
        self.feedback.submit_capture(
            Interaction(
                response_id=record.response_id,
                key_id=ctx.key_id,
                route=ctx.route,
                model=self._answered_by(ctx.adapter),
                level=self.feedback.level,
                latency_ms=round((time.perf_counter() - ctx.started) * 1000, 1),
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                finish_reason=finish_reason,
                messages=record.messages,
                prompt=record.prompt,
                answer=answer,
                sources=record.sources,
                params=None if params is None else _sampling_record(params),
                variant=_variant_label(ctx),
            )
        )

    def _answered_by(self, adapter: str) -> ModelVersion:
        """The captured model: the served version, plus ``+adapter`` when one answered."""
        if not adapter:
            return self.model_version
        return dataclasses.replace(self.model_version, name=f"{self.model_version.name}+{adapter}")

    def _observe_drift(self, record: ResponseRecord, finish_reason: str, usage: Usage) -> None:
        if self.drift is None:
            return
        try:
            self.drift.observe(
                observation(
                    at=time.time(),
                    route=record.kind,
                    query=record.query,
                    finish_reason=finish_reason,
                    answer_tokens=usage.completion_tokens,
                    top_score=record.top_score,
                    no_context=record.no_context,
                ),
                record.query_vector,
            )
        except Exception as exc:  # drift is advisory: a bug here must not cost the user the answer
            logger.opt(exception=exc).warning("drift observation dropped")


def _variant_label(ctx: RequestContext) -> str | None:
    """``ro-…:challenger`` when a rollout chose the request's arm (kept after the outcome)."""
    variant = ctx.log_fields.get("variant")
    rollout = ctx.response_headers.get("x-ggserve-rollout")
    return f"{rollout}:{variant}" if variant and rollout else None


def _sampling_record(params: SamplingParams) -> dict[str, Any]:
    """The sampling settings worth keeping with a captured response (no grammar text)."""
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repeat_penalty": params.repeat_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed,
        "stop": list(params.stop),
        "constrained": params.grammar is not None,
    }


def _completed(finished: Mapping[int, FinishEvent]) -> Completed:
    """All choices' finish events as one ``Completed``: the prompt counted once."""
    events = [finished[i] for i in sorted(finished)]
    first = events[0]
    reasons = tuple(_OPENAI_FINISH.get(e.finish_reason, e.finish_reason) for e in events)
    usage = Usage(
        first.usage.prompt_tokens,
        sum(e.usage.completion_tokens for e in events),
        first.usage.cached_prompt_tokens,
    )
    timings = first.timings
    if len(events) > 1:  # decoding ran until the last choice ended
        timings = dataclasses.replace(
            timings,
            decode_ms=max(e.timings.decode_ms for e in events),
            total_ms=max(e.timings.total_ms for e in events),
        )
    return Completed(reasons[0], usage, timings, choice_finish_reasons=reasons)


def last_user_message(messages: Sequence[Mapping[str, Any]]) -> str:
    """The question a chat asks: its last user message (empty when it has none)."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return ""


def _context_error(prompt_tokens: int, max_tokens: int, n_ctx: int) -> BadRequestError:
    return BadRequestError(
        f"This model's context per request is {n_ctx} tokens. The prompt has {prompt_tokens} "
        f"tokens and {max_tokens} more were requested for the completion "
        f"({prompt_tokens + max_tokens} in total). Shorten the prompt or lower max_tokens.",
        code="context_length_exceeded",
        param="messages",
    )


async def until_disconnected(request: Request, work: Awaitable[T], poll_s: float = 0.25) -> T:
    """Await ``work``; when the client disconnects, cancel it and raise ``ClientDisconnected``.

    However this ends (the client left, or the caller itself was cancelled), ``work`` has
    finished before it returns: a generation it was running is closed by then, its slot free,
    and nothing else closes that generation while it is still running in ``work``'s task
    ("aclose(): asynchronous generator is already running").
    """
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientDisconnected
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: what it raised after the client left is moot


async def collect(items: AsyncIterator[GenerationItem]) -> tuple[str, Completed]:
    """Drain a one-choice generation into its full text and final ``Completed``."""
    whole = await collect_all(items)
    return whole.text, whole.done


async def collect_all(items: AsyncIterator[GenerationItem]) -> Collected:
    """Drain a generation into each choice's text and logprobs and the final ``Completed``."""
    parts: dict[int, list[str]] = {}
    logprobs: dict[int, list[TokenLogprob]] = {}
    prompt: list[TokenLogprob] = []
    final: Completed | None = None
    async for item in items:
        if isinstance(item, TextDelta):
            parts.setdefault(item.index, []).append(item.text)
            logprobs.setdefault(item.index, []).extend(item.logprobs)
        elif isinstance(item, PromptScores):
            prompt.extend(item.entries)
        else:
            final = item
    if final is None:  # the engine always ends with a FinishEvent; this is a bug guard
        raise RuntimeError("generation ended without a finish event")
    choices = range(len(final.finish_reasons))
    return Collected(
        ["".join(parts.get(i, ())) for i in choices],
        [logprobs.get(i, []) for i in choices],
        prompt,
        final,
    )
