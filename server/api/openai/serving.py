"""The OpenAI-compatible handlers: requests → ``GenerationService`` → responses.

Streaming goes through ``server.api.streaming.open_stream``; this module only says how chat
and completion chunks look on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import numpy as np
from sse_starlette import EventSourceResponse
from starlette.requests import Request

from server.api import observe
from server.api.errors import BadRequestError, ServiceUnavailableError
from server.api.generation import (
    CaptureDraft,
    Completed,
    GenerationItem,
    GenerationService,
    RequestContext,
    TextDelta,
    collect,
    until_disconnected,
)
from server.api.openai.protocol import (
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
from server.api.streaming import Frame, open_stream
from server.engine.types import SamplingParams
from server.rag.embedder import Embedder
from server.rag.errors import EmbedderLoadError
from server.runtime.services import Services

MAX_EMBEDDING_INPUTS = 256


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
        raise BadRequestError(
            "response_format type 'json_schema' needs json_schema.schema",
            param="response_format.json_schema",
        )
    try:
        return json_schema_grammar(fmt.json_schema.schema_)
    except Exception as exc:
        raise BadRequestError(
            f"response_format.json_schema.schema cannot be used: {exc}",
            param="response_format.json_schema.schema",
        ) from exc


def _logit_bias(raw: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    if not raw:
        return ()
    try:
        return tuple((int(token), float(bias)) for token, bias in raw.items())
    except ValueError as exc:
        raise BadRequestError(
            "logit_bias keys must be token ids (integers as strings)", param="logit_bias"
        ) from exc


def _reject_unsupported(request: SamplingFields) -> None:
    if request.n != 1:
        raise BadRequestError(
            "n > 1 is not supported: send one request per completion (they run in parallel).",
            code="unsupported_value",
            param="n",
        )
    if request.logprobs:
        raise BadRequestError(
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


def _include_usage(request: SamplingFields) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


class OpenAIServing:
    """Handlers for /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/models."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def chat(
        self,
        request: ChatCompletionRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> ChatCompletionResponse | EventSourceResponse:
        _reject_unsupported(request)
        if request.tools:
            raise BadRequestError(
                "tools / function calling are not supported by this server.",
                code="unsupported_value",
                param="tools",
            )
        messages = [
            {"role": m.role if m.role != "developer" else "system", "content": m.text()}
            for m in request.messages
        ]
        prompt = generation.chat_prompt(messages)
        max_tokens = generation.resolve_max_tokens(request.requested_max_tokens(), len(prompt))
        params = sampling_params(request, max_tokens, _grammar_for(request))
        input_text = "\n".join(m["content"] for m in messages)
        ctx.capture = CaptureDraft(f"chatcmpl-{ctx.request_id}", messages=messages)
        items = observe.generations(
            self.services,
            observe.last_user_message(messages),
            generation.stream(ctx, prompt, params, input_text=input_text),
        )
        model = self.services.model_id
        if request.stream:
            fmt = ChatChunkFormat(f"chatcmpl-{ctx.request_id}", model, _include_usage(request))
            return await open_stream(http_request, ctx, items, fmt)
        text, done = await until_disconnected(http_request, collect(items))
        return ChatCompletionResponse(
            id=f"chatcmpl-{ctx.request_id}",
            model=model,
            choices=[
                ChatChoice(
                    message=ChatResponseMessage(
                        content=text, refusal=text if done.refused else None
                    ),
                    finish_reason=done.finish_reason,
                )
            ],
            usage=usage_info(done),
        )

    async def completions(
        self,
        request: CompletionRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> CompletionResponse | EventSourceResponse:
        _reject_unsupported(request)
        if request.suffix:
            raise BadRequestError("suffix is not supported.", param="suffix")
        if request.best_of not in (None, 1):
            raise BadRequestError("best_of > 1 is not supported.", param="best_of")
        prompt_text, prompt = _completion_prompt(generation, request.prompt)
        max_tokens = generation.resolve_max_tokens(request.max_tokens, len(prompt))
        params = sampling_params(request, max_tokens)
        ctx.capture = CaptureDraft(f"cmpl-{ctx.request_id}", prompt=prompt_text)
        items = generation.stream(ctx, prompt, params, input_text=prompt_text)
        model = self.services.model_id
        echo = prompt_text if request.echo else ""
        if request.stream:
            fmt = CompletionChunkFormat(f"cmpl-{ctx.request_id}", model, _include_usage(request))
            return await open_stream(http_request, ctx, _echoed(echo, items), fmt)
        text, done = await until_disconnected(http_request, collect(items))
        return CompletionResponse(
            id=f"cmpl-{ctx.request_id}",
            model=model,
            choices=[CompletionChoice(text=echo + text, finish_reason=done.finish_reason)],
            usage=usage_info(done),
        )

    async def embeddings(self, request: EmbeddingRequest, ctx: RequestContext) -> EmbeddingResponse:
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or any(not isinstance(t, str) or not t for t in texts):
            raise BadRequestError(
                "input must be a non-empty string or list of non-empty strings", param="input"
            )
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise BadRequestError(
                f"at most {MAX_EMBEDDING_INPUTS} inputs per request", param="input"
            )
        embedder = await self._embedder()
        if request.dimensions is not None and request.dimensions != embedder.dimension:
            raise BadRequestError(
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

    async def _embedder(self) -> Embedder:
        try:
            return await self.services.embedder.get()
        except EmbedderLoadError as exc:
            raise ServiceUnavailableError(str(exc), code="embedder_unavailable") from exc

    def models(self) -> ModelList:
        meta = self.services.model_meta
        engine = self.services.engine
        cards = [
            ModelCard(
                id=self.services.model_id,
                created=meta.created if meta.created is not None else int(time.time()),
                quantization=meta.quantization,
                context_length=engine.n_ctx_per_slot if engine else None,
            )
        ]
        embedder = self.services.embedder.loaded
        if embedder is not None:
            cards.append(ModelCard(id=embedder.name, created=int(time.time()), kind="embedding"))
        return ModelList(data=cards)


def _completion_prompt(
    generation: GenerationService, prompt: str | list[str] | list[int]
) -> tuple[str, list[int]]:
    if isinstance(prompt, str):
        return prompt, generation.tokenize(prompt)
    if not prompt:
        raise BadRequestError("prompt must not be empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        tokens = [int(p) for p in prompt]
        return generation.detokenize(tokens), tokens
    if len(prompt) != 1:
        raise BadRequestError(
            "a list of several prompts is not supported: send one request per prompt.",
            param="prompt",
        )
    return str(prompt[0]), generation.tokenize(str(prompt[0]))


async def _echoed(echo: str, items: AsyncIterator[GenerationItem]) -> AsyncIterator[GenerationItem]:
    """The echoed prompt as a first delta, then the generation (streaming ``echo: true``)."""
    first = True
    try:
        async for item in items:
            if first and echo:
                yield TextDelta(echo)
            first = False
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


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


class _OpenAIFormat:
    """What chat and completion streams share: the error frame and the closing ``[DONE]``."""

    def error_frames(self, body: dict[str, Any]) -> Iterable[Frame]:
        yield {"data": json.dumps(body)}

    def closing_frames(self) -> Iterable[Frame]:
        yield {"data": "[DONE]"}


class ChatChunkFormat(_OpenAIFormat):
    """``chat.completion.chunk`` frames: role first, content deltas, finish, usage."""

    def __init__(self, chunk_id: str, model: str, include_usage: bool) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self._started = False
        self._content = _ContentTemplate(self._chunk(ChatDelta(content=_MARKER))["data"])

    def _chunk(
        self, delta: ChatDelta, finish: str | None = None, usage: UsageInfo | None = None
    ) -> Frame:
        choices = [] if usage else [ChatChunkChoice(delta=delta, finish_reason=finish)]
        body = ChatCompletionChunk(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if not self._started:
            self._started = True
            yield self._chunk(ChatDelta(role="assistant", content=""))
        if isinstance(event, TextDelta):
            yield {"data": self._content.render(event.text)}
            return
        yield self._chunk(ChatDelta(), event.finish_reason)
        if self.include_usage:
            yield self._chunk(ChatDelta(), usage=usage_info(event))


class CompletionChunkFormat(_OpenAIFormat):
    """``text_completion`` frames: text deltas, finish, usage."""

    def __init__(self, chunk_id: str, model: str, include_usage: bool) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self._text = _ContentTemplate(self._chunk(_MARKER, None)["data"])

    def _chunk(self, text: str, finish: str | None, usage: UsageInfo | None = None) -> Frame:
        choices = [] if usage else [CompletionChoice(text=text, finish_reason=finish)]
        body = CompletionResponse(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if isinstance(event, TextDelta):
            yield {"data": self._text.render(event.text)}
            return
        yield self._chunk("", event.finish_reason)
        if self.include_usage:
            yield self._chunk("", None, usage_info(event))
