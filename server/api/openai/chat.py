"""``/v1/chat/completions``: a prepared chat through the generation pipeline, as a whole
response or as ``chat.completion.chunk`` frames (content and tool-call deltas).
"""

import time
from collections.abc import Iterable

from starlette.requests import Request

from server.api.errors import OutputRejectedError
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
from server.api.openai.chat_request import (
    INVALID_ANSWER,
    INVALID_CALL,
    JsonAnswer,
    answer_problem,
    prepare_chat_off_loop,
)
from server.api.openai.logprobs import PieceOf, chat_logprobs
from server.api.openai.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    ChoiceLogprobs,
    DeltaFunctionCall,
    DeltaToolCall,
    FunctionCall,
    ToolCallOut,
    UsageInfo,
)
from server.api.openai.wire import (
    CONTENT_MARKER,
    ContentTemplate,
    OpenAIFormat,
    include_usage,
    usage_info,
)
from server.api.streaming import Frame, SseResponse, open_stream
from server.chat.reasoning import ReasoningSplit, split_reasoning
from server.chat.tools import ToolCall, ToolSpec
from server.chat.tools.formats import GENERIC, ToolFormat
from server.chat.tools.parser import (
    CallStart,
    ContentDelta,
    StreamItem,
    ToolCallStream,
    parse_output,
)
from server.chat.tools.spec import strict_call_problem
from server.runtime.services import Services


class ChatServing:
    """POST /v1/chat/completions."""

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
        generation.set_priority(ctx, request.priority)
        ctx.cache_salt = request.cache_salt or ""
        generation.pick_adapter(ctx, request.model, request.user)
        chat = await prepare_chat_off_loop(request, generation)
        ctx.record = ResponseRecord(
            f"chatcmpl-{ctx.request_id}",
            "chat",
            last_user_message(chat.transcript),
            messages=chat.transcript,
        )
        items = generation.stream(
            ctx, chat.prompt, chat.params, input_text=chat.input_text, n=request.n
        )
        model = ctx.adapter or self.services.model_id
        if request.stream:
            fmt = ChatChunkFormat(
                f"chatcmpl-{ctx.request_id}",
                model,
                include_usage(request),
                parse_calls=chat.parse_calls,
                piece_of=generation.token_piece if request.logprobs else None,
                n=request.n,
                json_answer=chat.json_answer,
                prefill=chat.prefill,
                reasoning=chat.reasoning,
                thinking_open=chat.thinking_open,
                tool_format=chat.tool_format,
                tools=chat.tools,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        done = whole.done
        choices = []
        for index, (output, reason) in enumerate(
            zip(whole.texts, done.finish_reasons, strict=True)
        ):
            reasoning, text = (
                split_reasoning(output, opened=chat.thinking_open)
                if chat.reasoning and not done.refused
                else ("", output)
            )
            content: str | None = text
            calls: list[ToolCallOut] | None = None
            if chat.parse_calls and not done.refused:
                parsed = parse_output(text, prefill=chat.prefill, fmt=chat.tool_format)
                if parsed.calls or chat.prefill:  # forced and cut short: no content, no call
                    content = parsed.content or None
                    calls = [tool_call_out(call) for call in parsed.calls] or None
            logprobs = None
            if request.logprobs:
                entries = chat_logprobs(whole.logprobs[index], generation.token_piece)
                logprobs = ChoiceLogprobs(content=entries)
            refusal = text if done.refused else None
            problem = answer_problem(chat.json_answer, text, reason, done.refused or bool(calls))
            if problem:  # never a success: say why instead
                ctx.log_fields["invalid_output"] = problem
                content, refusal = None, f"{INVALID_ANSWER}: {problem}."
            call_problem = strict_call_problem(parsed_calls(calls), chat.tools)
            if call_problem:  # a strict tool's call that breaks its schema is no call
                ctx.log_fields["invalid_output"] = call_problem
                content, refusal, calls = None, f"{INVALID_CALL}: {call_problem}.", None
            message = ChatResponseMessage(
                content=content,
                refusal=refusal,
                tool_calls=calls,
                reasoning_content=reasoning or None,
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


class ChatChunkFormat(OpenAIFormat):
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
        json_answer: JsonAnswer | None = None,
        prefill: str = "",
        reasoning: bool = False,
        thinking_open: bool = False,
        tool_format: ToolFormat = GENERIC,
        tools: list[ToolSpec] | None = None,
    ) -> None:
        self._tools = tools or []
        self.chunk_id, self.model, self.include_usage = chunk_id, model, include_usage
        self.created = int(time.time())
        self.n = n
        self._started = False
        self._calls = (
            [ToolCallStream(tool_format, prefill) for _ in range(n)] if parse_calls else None
        )
        self._piece_of = piece_of
        self._content: dict[int, ContentTemplate] = {}
        self._json_answer = json_answer
        self._texts: list[list[str]] = [[] for _ in range(n)]  # kept only for json_answer
        self._reasoning = (
            [ReasoningSplit(opened=thinking_open) for _ in range(n)] if reasoning else None
        )

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
            marked = self._chunk(ChatDelta(content=CONTENT_MARKER), index=index)
            template = self._content[index] = ContentTemplate(marked["data"])
        return {"data": template.render(text)}

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if not self._started:
            self._started = True
            for index in range(self.n):
                yield self._chunk(ChatDelta(role="assistant", content=""), index=index)
                if self._calls is not None:  # a forced call's known start: a named call opens
                    for delta in _tool_deltas(self._calls[index].start()):
                        yield self._chunk(delta, index=index)
        if isinstance(event, PromptScores):
            return
        if isinstance(event, TextDelta):
            index = event.index
            text = event.text
            if self._reasoning is not None:
                thought, text = self._reasoning[index].feed(text)
                if thought:
                    yield self._chunk(ChatDelta(reasoning_content=thought), index=index)
            yield from self._content_frames(event, text, index)
            return
        yield from self._finish_frames(event)

    def _content_frames(self, event: TextDelta, text: str, index: int) -> Iterable[Frame]:
        """Frames for ``text``, the content part of ``event`` (its thinking already sent)."""
        if self._json_answer is not None:
            self._texts[index].append(text)
        if self._calls is None and self._piece_of is None:
            if text:
                yield self._plain(text, index)
            return
        logprobs = None
        if self._piece_of is not None:
            logprobs = ChoiceLogprobs(content=chat_logprobs(event.logprobs, self._piece_of))
        deltas = (
            ([ChatDelta(content=text)] if text else [])
            if self._calls is None
            else _tool_deltas(self._calls[index].feed(text))
        )
        if not deltas and logprobs is not None:  # text held back: logprobs go now anyway
            deltas = [ChatDelta(content="")]
        for delta in deltas:
            yield self._chunk(delta, logprobs=logprobs, index=index)
            logprobs = None  # a delta's logprobs go out once, with its first chunk

    def _finish_frames(self, event: Completed) -> Iterable[Frame]:
        """The end: held-back text, each choice's finish chunk, then usage if asked for."""
        if self._reasoning is not None:
            for index, split in enumerate(self._reasoning):
                thought, text = split.finish()
                if thought:
                    yield self._chunk(ChatDelta(reasoning_content=thought), index=index)
                if text:
                    yield from self._content_frames(TextDelta(text, (), index), text, index)
        last_calls = [stream.finish() for stream in self._calls or []]
        self._check_answers(event)
        for index, reason in enumerate(event.finish_reasons):
            has_calls = False
            if self._calls is not None:
                for delta in _tool_deltas(last_calls[index]):
                    yield self._chunk(delta, index=index)
                has_calls = bool(self._calls[index].calls)
            yield self._chunk(ChatDelta(), tool_finish(reason, has_calls), index=index)
        if self.include_usage:
            yield self._chunk(ChatDelta(), usage=usage_info(event))

    def _check_answers(self, done: Completed) -> None:
        """A stream whose JSON answer is invalid ends with an error, never with ``stop``."""
        for index, reason in enumerate(done.finish_reasons):
            called = self._calls is not None and bool(self._calls[index].calls)
            text = "".join(self._texts[index])
            problem = answer_problem(self._json_answer, text, reason, done.refused or called)
            if problem:
                raise OutputRejectedError(
                    f"{INVALID_ANSWER}: {problem}.",
                    code="invalid_json_answer",
                    param="response_format",
                )
            if self._calls is not None and reason == "stop":
                call_problem = strict_call_problem(self._calls[index].calls, self._tools)
                if call_problem:
                    raise OutputRejectedError(
                        f"{INVALID_CALL}: {call_problem}.", code="invalid_tool_call", param="tools"
                    )


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


def parsed_calls(calls: list[ToolCallOut] | None) -> list[ToolCall]:
    """Response calls back as plain calls (for the strict check)."""
    return [ToolCall(c.id, c.function.name, c.function.arguments) for c in calls or []]


def tool_call_out(call: ToolCall) -> ToolCallOut:
    """A parsed call in the response shape."""
    return ToolCallOut(id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments))


def tool_finish(finish_reason: str, has_calls: bool) -> str:
    """OpenAI reports ``tool_calls`` when the model stopped after calling."""
    return "tool_calls" if has_calls and finish_reason == "stop" else finish_reason
