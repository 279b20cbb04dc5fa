"""The OpenAI-compatible handlers: requests → engine through ``GenerationService`` → responses."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import numpy as np
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from server.engine.types import Engine, SamplingParams
from server.errors import InvalidRequestError, error_body
from server.generation import (
    Completed,
    GenerationItem,
    GenerationService,
    RequestContext,
    TextDelta,
    collect,
    until_disconnected,
)
from server.openai.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    SamplingFields,
    UsageInfo,
)
from server.security.guardrails import REFUSAL
from server.services import Services


def usage_info(done: Completed) -> UsageInfo:
    usage = done.usage
    return UsageInfo(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_prompt_tokens),
    )


def _grammar_for(request: ChatCompletionRequest) -> str | None:
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    from server.engine.grammar import json_object_grammar, json_schema_grammar

    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError(
            "response_format type 'json_schema' needs json_schema.schema",
            param="response_format.json_schema",
        )
    try:
        return json_schema_grammar(fmt.json_schema.schema_)
    except Exception as exc:
        raise InvalidRequestError(
            f"response_format.json_schema.schema cannot be used: {exc}",
            param="response_format.json_schema.schema",
        ) from exc


def _logit_bias(raw: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    if not raw:
        return ()
    try:
        return tuple((int(token), float(bias)) for token, bias in raw.items())
    except ValueError as exc:
        raise InvalidRequestError(
            "logit_bias keys must be token ids (integers as strings)", param="logit_bias"
        ) from exc


def _reject_unsupported(request: SamplingFields) -> None:
    if request.n != 1:
        raise InvalidRequestError(
            "n > 1 is not supported: send one request per completion (they run in parallel).",
            code="unsupported_value",
            param="n",
        )
    if request.logprobs:
        raise InvalidRequestError(
            "logprobs are not supported by this server.",
            code="unsupported_value",
            param="logprobs",
        )


def sampling_params(
    request: SamplingFields, max_tokens: int, grammar: str | None = None
) -> SamplingParams:
    """Protocol fields → engine sampling parameters (one mapping for chat and completions)."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=request.top_k,
        min_p=request.min_p,
        repeat_penalty=request.repeat_penalty,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        seed=request.seed,
        stop=request.stop_list(),
        grammar=grammar,
        logit_bias=_logit_bias(request.logit_bias),
    )


async def first_item(http_request: Request, items: AsyncIterator[GenerationItem]) -> GenerationItem:
    """Wait for the first item (admission + prompt evaluation), cancelling if the client left."""
    return await until_disconnected(http_request, anext(items))


class OpenAIServing:
    """Handlers for /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models."""

    def __init__(self, services: Services) -> None:
        self.services = services

    # --- chat ----------------------------------------------------------------------------

    async def chat(
        self,
        request: ChatCompletionRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> ChatCompletionResponse | EventSourceResponse:
        _reject_unsupported(request)
        if request.tools:
            raise InvalidRequestError(
                "tools / function calling are not supported by this server.",
                code="unsupported_value",
                param="tools",
            )
        messages = [
            {"role": m.role if m.role != "developer" else "system", "content": m.text()}
            for m in request.messages
        ]
        model = self.services.model_id
        violation = generation.input_violation("\n".join(m["content"] for m in messages))
        if violation:
            ctx.log_fields.update(finish_reason="content_filter", guardrail=violation)
            return self._chat_refusal(request, model)
        engine = generation.engine
        prompt = engine.chat_prompt_tokens(messages)
        max_tokens = generation.resolve_max_tokens(request.requested_max_tokens(), len(prompt))
        params = sampling_params(request, max_tokens, _grammar_for(request))
        items = generation.stream(ctx, prompt, params)
        first = await first_item(http_request, items)
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return EventSourceResponse(
                self._chat_events(ctx, generation, first, items, model, include_usage),
                ping=15,
            )
        text, done = await until_disconnected(http_request, collect(_chain(first, items)))
        await generation.charge(ctx, done)
        return ChatCompletionResponse(
            id=f"chatcmpl-{ctx.request_id}",
            model=model,
            choices=[
                ChatChoice(
                    message=ChatResponseMessage(content=text), finish_reason=done.finish_reason
                )
            ],
            usage=usage_info(done),
        )

    def _chat_refusal(self, request: ChatCompletionRequest, model: str) -> Any:
        usage = UsageInfo(prompt_tokens=0, completion_tokens=0, total_tokens=0)
        if not request.stream:
            return ChatCompletionResponse(
                model=model,
                choices=[
                    ChatChoice(
                        message=ChatResponseMessage(content=REFUSAL, refusal=REFUSAL),
                        finish_reason="content_filter",
                    )
                ],
                usage=usage,
            )
        chunk_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        async def events() -> AsyncIterator[dict[str, str]]:
            for delta, reason in (
                (ChatDelta(role="assistant", content=REFUSAL), None),
                (ChatDelta(), "content_filter"),
            ):
                chunk = ChatCompletionChunk(
                    id=chunk_id,
                    created=created,
                    model=model,
                    choices=[ChatChunkChoice(delta=delta, finish_reason=reason)],
                )
                yield {"data": chunk.model_dump_json(exclude_unset=False)}
            yield {"data": "[DONE]"}

        return EventSourceResponse(events())

    async def _chat_events(
        self,
        ctx: RequestContext,
        generation: GenerationService,
        first: GenerationItem,
        items: AsyncGenerator[GenerationItem, None],
        model: str,
        include_usage: bool,
    ) -> AsyncIterator[dict[str, str]]:
        chunk_id, created = f"chatcmpl-{ctx.request_id}", int(time.time())

        def chunk(delta: ChatDelta, finish: str | None = None) -> dict[str, str]:
            body = ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=model,
                choices=[ChatChunkChoice(delta=delta, finish_reason=finish)],
            )
            return {"data": body.model_dump_json()}

        content_chunk = _ContentTemplate(chunk(ChatDelta(content=_MARKER))["data"])
        yield chunk(ChatDelta(role="assistant", content=""))
        try:
            async for item in _chain(first, items):
                if isinstance(item, TextDelta):
                    yield {"data": content_chunk.render(item.text)}
                    continue
                yield chunk(ChatDelta(), item.finish_reason)
                if include_usage:
                    usage_chunk = ChatCompletionChunk(
                        id=chunk_id,
                        created=created,
                        model=model,
                        choices=[],
                        usage=usage_info(item),
                    )
                    yield {"data": usage_chunk.model_dump_json()}
                await generation.charge(ctx, item)
        except asyncio.CancelledError:
            ctx.log_fields["finish_reason"] = "client_disconnected"
            raise
        except Exception as exc:  # headers are sent: report in-band, then end the stream
            from loguru import logger

            logger.opt(exception=exc).error("generation failed mid-stream")
            yield {
                "data": json.dumps(
                    error_body(
                        "Internal error during generation. Quote the request_id.",
                        "server_error",
                        code="internal_error",
                        request_id=ctx.request_id,
                    )
                )
            }
        yield {"data": "[DONE]"}

    # --- text completions ----------------------------------------------------------------

    async def completions(
        self,
        request: CompletionRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> CompletionResponse | EventSourceResponse:
        _reject_unsupported(request)
        if request.suffix:
            raise InvalidRequestError("suffix is not supported.", param="suffix")
        if request.best_of not in (None, 1):
            raise InvalidRequestError("best_of > 1 is not supported.", param="best_of")
        engine = generation.engine
        prompt_text, prompt = _completion_prompt(engine, request.prompt)
        model = self.services.model_id
        if generation.input_violation(prompt_text):
            return CompletionResponse(
                model=model,
                choices=[CompletionChoice(text=REFUSAL, finish_reason="content_filter")],
                usage=UsageInfo(
                    prompt_tokens=len(prompt), completion_tokens=0, total_tokens=len(prompt)
                ),
            )
        max_tokens = generation.resolve_max_tokens(request.max_tokens, len(prompt))
        items = generation.stream(ctx, prompt, sampling_params(request, max_tokens))
        first = await first_item(http_request, items)
        echo = prompt_text if request.echo else ""
        if request.stream:
            include_usage = bool(request.stream_options and request.stream_options.include_usage)
            return EventSourceResponse(
                self._completion_events(ctx, generation, first, items, model, echo, include_usage),
                ping=15,
            )
        text, done = await until_disconnected(http_request, collect(_chain(first, items)))
        await generation.charge(ctx, done)
        return CompletionResponse(
            id=f"cmpl-{ctx.request_id}",
            model=model,
            choices=[CompletionChoice(text=echo + text, finish_reason=done.finish_reason)],
            usage=usage_info(done),
        )

    async def _completion_events(
        self,
        ctx: RequestContext,
        generation: GenerationService,
        first: GenerationItem,
        items: AsyncGenerator[GenerationItem, None],
        model: str,
        echo: str,
        include_usage: bool,
    ) -> AsyncIterator[dict[str, str]]:
        chunk_id, created = f"cmpl-{ctx.request_id}", int(time.time())

        def chunk(text: str, finish: str | None, usage: UsageInfo | None = None) -> dict[str, str]:
            choices = [] if usage else [CompletionChoice(text=text, finish_reason=finish)]
            body = CompletionResponse(
                id=chunk_id, created=created, model=model, choices=choices, usage=usage
            )
            return {"data": body.model_dump_json()}

        text_chunk = _ContentTemplate(chunk(_MARKER, None)["data"])
        if echo:
            yield chunk(echo, None)
        try:
            async for item in _chain(first, items):
                if isinstance(item, TextDelta):
                    yield {"data": text_chunk.render(item.text)}
                    continue
                yield chunk("", item.finish_reason)
                if include_usage:
                    yield chunk("", None, usage_info(item))
                await generation.charge(ctx, item)
        except asyncio.CancelledError:
            ctx.log_fields["finish_reason"] = "client_disconnected"
            raise
        yield {"data": "[DONE]"}

    # --- embeddings and models -----------------------------------------------------------

    async def embeddings(self, request: EmbeddingRequest, ctx: RequestContext) -> EmbeddingResponse:
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise InvalidRequestError(
                "input must be a non-empty string or list of non-empty strings", param="input"
            )
        if len(texts) > 256:
            raise InvalidRequestError("at most 256 inputs per request", param="input")
        embedder = await self.services_embedder()
        if request.dimensions is not None and request.dimensions != embedder.dimension:
            raise InvalidRequestError(
                f"dimensions must be {embedder.dimension} for this model (no truncation).",
                param="dimensions",
            )
        vectors = await asyncio.to_thread(embedder.embed, texts)
        tokens = sum(embedder.count_tokens(t) for t in texts)
        ctx.log_fields.update(prompt_tokens=tokens)
        data = [
            EmbeddingData(index=i, embedding=_encode_vector(row, request.encoding_format))
            for i, row in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data,
            model=embedder.name,
            usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        )

    async def services_embedder(self) -> Any:
        from server.embeddings import get_embedder

        return await get_embedder(self.services)

    def models(self) -> ModelList:
        meta = self.services.model_meta
        engine = self.services.engine
        cards = [
            ModelCard(
                id=self.services.model_id,
                created=int(meta.get("created", time.time())),
                quantization=meta.get("quantization") or meta.get("file_type"),
                context_length=engine.n_ctx_per_slot if engine else None,
            )
        ]
        embedder = self.services.extras.get("embedder")
        if embedder is not None:
            cards.append(ModelCard(id=embedder.name, created=int(time.time()), kind="embedding"))
        return ModelList(data=cards)


def _completion_prompt(
    engine: Engine, prompt: str | list[str] | list[int]
) -> tuple[str, list[int]]:
    if isinstance(prompt, str):
        return prompt, engine.tokenize(prompt, add_special=True)
    if not prompt:
        raise InvalidRequestError("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        tokens = [int(p) for p in prompt]
        return engine.detokenize(tokens), tokens
    if len(prompt) != 1:
        raise InvalidRequestError(
            "a list of several prompts is not supported: send one request per prompt.",
            param="prompt",
        )
    return str(prompt[0]), engine.tokenize(str(prompt[0]), add_special=True)


def _encode_vector(row: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in row]


_MARKER = "ggserve-content-marker-5f2c"


class _ContentTemplate:
    """A streaming chunk rendered once with a marker, then filled per token by concatenation.

    Building and serialising a pydantic chunk per token cost ~0.7 ms of event-loop CPU, on the
    cores the decode threads use; the wire bytes are the same JSON either way.
    """

    def __init__(self, rendered: str) -> None:
        self._head, self._tail = rendered.split(json.dumps(_MARKER), 1)

    def render(self, text: str) -> str:
        return self._head + json.dumps(text, ensure_ascii=False) + self._tail


async def _chain(
    first: GenerationItem, rest: AsyncGenerator[GenerationItem, None]
) -> AsyncIterator[GenerationItem]:
    try:
        yield first
        if isinstance(first, Completed):
            return
        async for item in rest:
            yield item
    finally:
        await rest.aclose()  # closing early (client gone) cancels the generation
