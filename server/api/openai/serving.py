"""The OpenAI-compatible handlers: requests → ``GenerationService`` → responses.

Streaming goes through ``server.api.streaming.open_stream``; this module only says how chat
and completion chunks look on the wire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterable
from dataclasses import replace
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
    PromptScores,
    RequestContext,
    TextDelta,
    collect_all,
    until_disconnected,
)
from server.api.openai.chat_request import prepare_chat, sampling_params
from server.api.openai.logprobs import PieceOf, chat_logprobs, completion_logprobs
from server.api.openai.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    DeltaFunctionCall,
    DeltaToolCall,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    FunctionCall,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    SamplingFields,
    ToolCallOut,
    UsageInfo,
)
from server.api.streaming import Frame, open_stream
from server.engine.tools import ToolCall
from server.engine.tools.parser import (
    CallStart,
    ContentDelta,
    StreamItem,
    ToolCallStream,
    parse_output,
)
from server.engine.types import TokenLogprob
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


def _reject_unsupported(request: SamplingFields) -> None:
    if request.n != 1:
        raise BadRequestError(
            "n > 1 is not supported: send one request per completion (they run in parallel).",
            code="unsupported_value",
            param="n",
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
        chat = prepare_chat(request, generation)
        ctx.capture = CaptureDraft(f"chatcmpl-{ctx.request_id}", messages=chat.transcript)
        items = observe.generations(
            self.services,
            observe.last_user_message(chat.transcript),
            generation.stream(ctx, chat.prompt, chat.params, input_text=chat.input_text),
        )
        model = self.services.model_id
        if request.stream:
            fmt = ChatChunkFormat(
                f"chatcmpl-{ctx.request_id}",
                model,
                _include_usage(request),
                parse_calls=chat.parse_calls,
                piece_of=generation.token_piece if request.logprobs else None,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        done = whole.done
        content: str | None = whole.text
        calls: list[ToolCallOut] | None = None
        if chat.parse_calls and not done.refused:
            parsed = parse_output(whole.text)
            if parsed.calls:
                content = parsed.content or None
                calls = [tool_call_out(call) for call in parsed.calls]
        logprobs = None
        if request.logprobs:
            logprobs = ChoiceLogprobs(content=chat_logprobs(whole.logprobs, generation.token_piece))
        return ChatCompletionResponse(
            id=f"chatcmpl-{ctx.request_id}",
            model=model,
            choices=[
                ChatChoice(
                    message=ChatResponseMessage(
                        content=content,
                        refusal=whole.text if done.refused else None,
                        tool_calls=calls,
                    ),
                    finish_reason=tool_finish(done.finish_reason, bool(calls)),
                    logprobs=logprobs,
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
        if request.max_tokens == 0 and not request.echo:
            raise BadRequestError(
                "max_tokens 0 generates nothing: it is only allowed with echo: true (to score "
                "the prompt with logprobs).",
                param="max_tokens",
            )
        prompt_text, prompt = _completion_prompt(generation, request.prompt)
        model = self.services.model_id
        scoring = request.echo and request.logprobs is not None
        if request.max_tokens == 0 and not scoring:  # echo only: nothing to compute
            return _echo_only(f"cmpl-{ctx.request_id}", model, prompt_text, len(prompt))
        max_tokens = generation.resolve_max_tokens(request.max_tokens, len(prompt))
        params = replace(
            sampling_params(request, max_tokens),
            logprobs=request.logprobs,
            prompt_logprobs=request.logprobs if scoring else None,
        )
        ctx.capture = CaptureDraft(f"cmpl-{ctx.request_id}", prompt=prompt_text)
        items = generation.stream(ctx, prompt, params, input_text=prompt_text)
        echo = prompt_text if request.echo else ""
        piece_of = generation.token_piece if request.logprobs is not None else None
        if request.stream:
            fmt = CompletionChunkFormat(
                f"cmpl-{ctx.request_id}",
                model,
                _include_usage(request),
                echo=echo,
                prompt=prompt,
                piece_of=piece_of,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        logprobs = None
        if piece_of is not None:
            entries: list[TokenLogprob | tuple[int, None]] = []
            if scoring:
                entries += [(prompt[0], None), *whole.prompt_logprobs]
            entries += whole.logprobs
            logprobs = completion_logprobs(entries, piece_of)
        return CompletionResponse(
            id=f"cmpl-{ctx.request_id}",
            model=model,
            choices=[
                CompletionChoice(
                    text=echo + whole.text,
                    finish_reason=whole.done.finish_reason,
                    logprobs=logprobs,
                )
            ],
            usage=usage_info(whole.done),
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
                version=self.services.served_version,
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
        return generation.detokenize(tokens, param="prompt"), tokens
    if len(prompt) != 1:
        raise BadRequestError(
            "a list of several prompts is not supported: send one request per prompt.",
            param="prompt",
        )
    return str(prompt[0]), generation.tokenize(str(prompt[0]))


def _echo_only(chunk_id: str, model: str, prompt_text: str, n_prompt: int) -> CompletionResponse:
    """``echo`` with ``max_tokens: 0`` and no logprobs: the prompt back, nothing run."""
    return CompletionResponse(
        id=chunk_id,
        model=model,
        choices=[CompletionChoice(text=prompt_text, finish_reason="length")],
        usage=UsageInfo(prompt_tokens=n_prompt, completion_tokens=0, total_tokens=n_prompt),
    )


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
    """``chat.completion.chunk`` frames: role first, content or tool-call deltas, finish, usage.

    With ``parse_calls`` the text goes through a ``ToolCallStream``: content deltas until a
    call marker, then ``delta.tool_calls`` (index, id and name first, then argument fragments).
    With ``piece_of`` (logprobs asked for) each chunk carries its tokens' logprobs.
    """

    def __init__(
        self,
        chunk_id: str,
        model: str,
        include_usage: bool,
        *,
        parse_calls: bool = False,
        piece_of: PieceOf | None = None,
    ) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self._started = False
        self._calls = ToolCallStream() if parse_calls else None
        self._piece_of = piece_of
        self._content = _ContentTemplate(self._chunk(ChatDelta(content=_MARKER))["data"])

    def _chunk(
        self,
        delta: ChatDelta,
        finish: str | None = None,
        usage: UsageInfo | None = None,
        logprobs: ChoiceLogprobs | None = None,
    ) -> Frame:
        choices = (
            [] if usage else [ChatChunkChoice(delta=delta, finish_reason=finish, logprobs=logprobs)]
        )
        body = ChatCompletionChunk(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if not self._started:
            self._started = True
            yield self._chunk(ChatDelta(role="assistant", content=""))
        if isinstance(event, PromptScores):
            return
        if isinstance(event, TextDelta):
            if self._calls is None and self._piece_of is None:
                yield {"data": self._content.render(event.text)}  # the hot path: plain text
                return
            logprobs = None
            if self._piece_of is not None:
                logprobs = ChoiceLogprobs(content=chat_logprobs(event.logprobs, self._piece_of))
            deltas = (
                [ChatDelta(content=event.text)]
                if self._calls is None
                else _tool_deltas(self._calls.feed(event.text))
            )
            if not deltas and logprobs is not None:  # text held back: logprobs go now anyway
                deltas = [ChatDelta(content="")]
            for delta in deltas:
                yield self._chunk(delta, logprobs=logprobs)
                logprobs = None  # a delta's logprobs go out once, with its first chunk
            return
        has_calls = False
        if self._calls is not None:
            for delta in _tool_deltas(self._calls.finish()):
                yield self._chunk(delta)
            has_calls = bool(self._calls.calls)
        yield self._chunk(ChatDelta(), tool_finish(event.finish_reason, has_calls))
        if self.include_usage:
            yield self._chunk(ChatDelta(), usage=usage_info(event))


def _tool_deltas(items: list[StreamItem]) -> list[ChatDelta]:
    """Tool-call stream items → chat deltas, OpenAI style."""
    deltas: list[ChatDelta] = []
    for item in items:
        if isinstance(item, ContentDelta):
            deltas.append(ChatDelta(content=item.text))
        elif isinstance(item, CallStart):
            call = DeltaToolCall(
                index=item.index,
                id=item.id,
                type="function",
                function=DeltaFunctionCall(name=item.name, arguments=""),
            )
            deltas.append(ChatDelta(tool_calls=[call]))
        else:
            fragment = DeltaFunctionCall(arguments=item.text)
            deltas.append(
                ChatDelta(tool_calls=[DeltaToolCall(index=item.index, function=fragment)])
            )
    return deltas


def tool_call_out(call: ToolCall) -> ToolCallOut:
    """A parsed call in the response shape."""
    return ToolCallOut(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))


def tool_finish(finish_reason: str, has_calls: bool) -> str:
    """OpenAI reports ``tool_calls`` when the model stopped after calling."""
    return "tool_calls" if has_calls and finish_reason == "stop" else finish_reason


class CompletionChunkFormat(_OpenAIFormat):
    """``text_completion`` frames: the echo (with prompt logprobs), text deltas, finish, usage."""

    def __init__(
        self,
        chunk_id: str,
        model: str,
        include_usage: bool,
        *,
        echo: str = "",
        prompt: list[int] | None = None,
        piece_of: PieceOf | None = None,
    ) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self._echo = echo
        self._prompt = prompt or []
        self._prompt_scores: list[TokenLogprob] = []
        self._piece_of = piece_of
        self._offset = 0  # characters sent so far (text_offset of the next token)
        self._text = _ContentTemplate(self._chunk(_MARKER, None)["data"])

    def _chunk(
        self,
        text: str,
        finish: str | None,
        usage: UsageInfo | None = None,
        logprobs: CompletionLogprobs | None = None,
    ) -> Frame:
        choices = (
            [] if usage else [CompletionChoice(text=text, finish_reason=finish, logprobs=logprobs)]
        )
        body = CompletionResponse(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def _logprobs(
        self, entries: list[TokenLogprob | tuple[int, None]]
    ) -> CompletionLogprobs | None:
        if self._piece_of is None:
            return None
        return completion_logprobs(entries, self._piece_of, text_offset=self._offset)

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if isinstance(event, PromptScores):
            self._prompt_scores.extend(event.entries)
            return
        if self._echo:
            scored: list[TokenLogprob | tuple[int, None]] = []
            if self._prompt_scores:
                scored = [(self._prompt[0], None), *self._prompt_scores]
            yield self._chunk(self._echo, None, logprobs=self._logprobs(scored))
            self._offset += len(self._echo)
            self._echo = ""
        if isinstance(event, TextDelta):
            if self._piece_of is None:
                yield {"data": self._text.render(event.text)}
                return
            yield self._chunk(event.text, None, logprobs=self._logprobs(list(event.logprobs)))
            self._offset += len(event.text)
            return
        yield self._chunk("", event.finish_reason)
        if self.include_usage:
            yield self._chunk("", None, usage_info(event))
