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
from starlette.requests import Request

from server.api.errors import BadRequestError, ServiceUnavailableError
from server.api.generation import (
    Completed,
    GenerationItem,
    GenerationService,
    PromptScores,
    RequestContext,
    ResponseRecord,
    TextDelta,
    collect_all,
    last_user_message,
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
from server.api.streaming import Frame, SseResponse, open_stream
from server.chat.tools import ToolCall
from server.chat.tools.parser import (
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
    ) -> ChatCompletionResponse | SseResponse:
        generation.check_choices(request.n)
        chat = prepare_chat(request, generation)
        ctx.record = ResponseRecord(
            f"chatcmpl-{ctx.request_id}",
            "chat",
            last_user_message(chat.transcript),
            messages=chat.transcript,
        )
        items = generation.stream(
            ctx, chat.prompt, chat.params, input_text=chat.input_text, n=request.n
        )
        model = self.services.model_id
        if request.stream:
            fmt = ChatChunkFormat(
                f"chatcmpl-{ctx.request_id}",
                model,
                _include_usage(request),
                parse_calls=chat.parse_calls,
                piece_of=generation.token_piece if request.logprobs else None,
                n=request.n,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        done = whole.done
        choices = []
        for index, (text, reason) in enumerate(zip(whole.texts, done.finish_reasons, strict=True)):
            content: str | None = text
            calls: list[ToolCallOut] | None = None
            if chat.parse_calls and not done.refused:
                parsed = parse_output(text)
                if parsed.calls:
                    content = parsed.content or None
                    calls = [tool_call_out(call) for call in parsed.calls]
            logprobs = None
            if request.logprobs:
                entries = chat_logprobs(whole.logprobs[index], generation.token_piece)
                logprobs = ChoiceLogprobs(content=entries)
            message = ChatResponseMessage(
                content=content, refusal=text if done.refused else None, tool_calls=calls
            )
            choices.append(
                ChatChoice(
                    index=index,
                    message=message,
                    finish_reason=tool_finish(reason, bool(calls)),
                    logprobs=logprobs,
                )
            )
        return ChatCompletionResponse(
            id=f"chatcmpl-{ctx.request_id}", model=model, choices=choices, usage=usage_info(done)
        )

    async def completions(
        self,
        request: CompletionRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> CompletionResponse | SseResponse:
        generation.check_choices(request.n)
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
            return _echo_only(f"cmpl-{ctx.request_id}", model, prompt_text, len(prompt), request.n)
        max_tokens = generation.resolve_max_tokens(request.max_tokens, len(prompt))
        params = replace(
            sampling_params(request, max_tokens),
            logprobs=request.logprobs,
            prompt_logprobs=request.logprobs if scoring else None,
        )
        ctx.record = ResponseRecord(
            f"cmpl-{ctx.request_id}", "completions", prompt_text, prompt=prompt_text
        )
        items = generation.stream(ctx, prompt, params, input_text=prompt_text, n=request.n)
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
                n=request.n,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        choices = []
        for index, (text, reason) in enumerate(
            zip(whole.texts, whole.done.finish_reasons, strict=True)
        ):
            logprobs = None
            if piece_of is not None:
                entries: list[TokenLogprob | tuple[int, None]] = []
                if scoring:  # the prompt is scored once; every choice echoes it
                    entries += [(prompt[0], None), *whole.prompt_logprobs]
                entries += whole.logprobs[index]
                logprobs = completion_logprobs(entries, piece_of)
            choices.append(
                CompletionChoice(
                    index=index, text=echo + text, finish_reason=reason, logprobs=logprobs
                )
            )
        return CompletionResponse(
            id=f"cmpl-{ctx.request_id}", model=model, choices=choices, usage=usage_info(whole.done)
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


def _echo_only(
    chunk_id: str, model: str, prompt_text: str, n_prompt: int, n: int
) -> CompletionResponse:
    """``echo`` with ``max_tokens: 0`` and no logprobs: the prompt back, nothing run."""
    return CompletionResponse(
        id=chunk_id,
        model=model,
        choices=[
            CompletionChoice(index=index, text=prompt_text, finish_reason="length")
            for index in range(n)
        ],
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
    With ``piece_of`` (logprobs asked for) each chunk carries its tokens' logprobs. With ``n``
    choices every chunk carries its choice's ``index``; each choice gets its role chunk first
    and its finish chunk at the end, then one usage chunk covers the request.
    """

    def __init__(
        self,
        chunk_id: str,
        model: str,
        include_usage: bool,
        *,
        parse_calls: bool = False,
        piece_of: PieceOf | None = None,
        n: int = 1,
    ) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self.n = n
        self._started = False
        self._calls = [ToolCallStream() for _ in range(n)] if parse_calls else None
        self._piece_of = piece_of
        self._content: dict[int, _ContentTemplate] = {}

    def _chunk(
        self,
        delta: ChatDelta,
        finish: str | None = None,
        usage: UsageInfo | None = None,
        logprobs: ChoiceLogprobs | None = None,
        index: int = 0,
    ) -> Frame:
        choices = (
            []
            if usage
            else [
                ChatChunkChoice(index=index, delta=delta, finish_reason=finish, logprobs=logprobs)
            ]
        )
        body = ChatCompletionChunk(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def _plain(self, text: str, index: int) -> Frame:
        """The hot path: a content chunk from the choice's pre-rendered template."""
        template = self._content.get(index)
        if template is None:
            marked = self._chunk(ChatDelta(content=_MARKER), index=index)
            template = self._content[index] = _ContentTemplate(marked["data"])
        return {"data": template.render(text)}

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if not self._started:
            self._started = True
            for index in range(self.n):
                yield self._chunk(ChatDelta(role="assistant", content=""), index=index)
        if isinstance(event, PromptScores):
            return
        if isinstance(event, TextDelta):
            index = event.index
            if self._calls is None and self._piece_of is None:
                yield self._plain(event.text, index)
                return
            logprobs = None
            if self._piece_of is not None:
                logprobs = ChoiceLogprobs(content=chat_logprobs(event.logprobs, self._piece_of))
            deltas = (
                [ChatDelta(content=event.text)]
                if self._calls is None
                else _tool_deltas(self._calls[index].feed(event.text))
            )
            if not deltas and logprobs is not None:  # text held back: logprobs go now anyway
                deltas = [ChatDelta(content="")]
            for delta in deltas:
                yield self._chunk(delta, logprobs=logprobs, index=index)
                logprobs = None  # a delta's logprobs go out once, with its first chunk
            return
        for index, reason in enumerate(event.finish_reasons):
            has_calls = False
            if self._calls is not None:
                for delta in _tool_deltas(self._calls[index].finish()):
                    yield self._chunk(delta, index=index)
                has_calls = bool(self._calls[index].calls)
            yield self._chunk(ChatDelta(), tool_finish(reason, has_calls), index=index)
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
    """``text_completion`` frames: the echo (with prompt logprobs), text deltas, finish, usage.

    With ``n`` choices every chunk carries its choice's ``index``; each choice echoes the
    prompt (scored once) before its first text.
    """

    def __init__(
        self,
        chunk_id: str,
        model: str,
        include_usage: bool,
        *,
        echo: str = "",
        prompt: list[int] | None = None,
        piece_of: PieceOf | None = None,
        n: int = 1,
    ) -> None:
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self.n = n
        self._echo = echo
        self._prompt = prompt or []
        self._prompt_scores: list[TokenLogprob] = []
        self._piece_of = piece_of
        self._offsets = [0] * n  # characters sent so far per choice (next token's text_offset)
        self._text: dict[int, _ContentTemplate] = {}

    def _chunk(
        self,
        text: str,
        finish: str | None,
        usage: UsageInfo | None = None,
        logprobs: CompletionLogprobs | None = None,
        index: int = 0,
    ) -> Frame:
        choices = (
            []
            if usage
            else [CompletionChoice(index=index, text=text, finish_reason=finish, logprobs=logprobs)]
        )
        body = CompletionResponse(
            id=self.chunk_id, created=self.created, model=self.model, choices=choices, usage=usage
        )
        return {"data": body.model_dump_json()}

    def _plain(self, text: str, index: int) -> Frame:
        template = self._text.get(index)
        if template is None:
            marked = self._chunk(_MARKER, None, index=index)
            template = self._text[index] = _ContentTemplate(marked["data"])
        return {"data": template.render(text)}

    def _logprobs(
        self, entries: list[TokenLogprob | tuple[int, None]], index: int
    ) -> CompletionLogprobs | None:
        if self._piece_of is None:
            return None
        return completion_logprobs(entries, self._piece_of, text_offset=self._offsets[index])

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if isinstance(event, PromptScores):
            self._prompt_scores.extend(event.entries)
            return
        if self._echo:
            scored: list[TokenLogprob | tuple[int, None]] = []
            if self._prompt_scores:
                scored = [(self._prompt[0], None), *self._prompt_scores]
            for index in range(self.n):
                logprobs = self._logprobs(scored, index)
                yield self._chunk(self._echo, None, logprobs=logprobs, index=index)
                self._offsets[index] += len(self._echo)
            self._echo = ""
        if isinstance(event, TextDelta):
            index = event.index
            if self._piece_of is None:
                yield self._plain(event.text, index)
                return
            logprobs = self._logprobs(list(event.logprobs), index)
            yield self._chunk(event.text, None, logprobs=logprobs, index=index)
            self._offsets[index] += len(event.text)
            return
        for index, reason in enumerate(event.finish_reasons):
            yield self._chunk("", reason, index=index)
        if self.include_usage:
            yield self._chunk("", None, usage_info(event))
