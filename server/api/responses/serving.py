"""``POST /v1/responses``: run the request through the chat path, answer in Responses shapes.

Nothing is stored (``store`` is always false in the reply); ``previous_response_id`` is a 400
that says to send the conversation in ``input``. Streams send OpenAI's typed events in the
order the official client's ``responses.stream`` expects: ``response.created``,
``response.in_progress``, then per output item ``output_item.added`` → (``reasoning_text.
delta``… → ``reasoning_text.done`` | ``content_part.added`` → ``output_text.delta``… →
``output_text.done`` → ``content_part.done`` | ``function_call_arguments.delta``… →
``function_call_arguments.done``) → ``output_item.done``, and last ``response.completed``
(``response.incomplete`` when ``max_output_tokens`` cut it short).

A reasoning model's ``<think>…</think>`` becomes a ``reasoning`` output item before the answer.
A ``text.format`` JSON answer passes the same check as chat's ``response_format``: one that
ends ``stop`` but does not validate comes back as a ``refusal`` part (a stream ends with an
``error`` event), never as ``output_text``; so does a ``strict`` tool's call whose arguments
break the tool's parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

from server.api.errors import BadRequestError, OutputRejectedError
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
from server.api.responses.convert import responses_param, to_chat_request
from server.api.responses.protocol import (
    IncompleteDetails,
    InputTokensDetails,
    OutputFunctionCall,
    OutputItem,
    OutputMessage,
    OutputReasoning,
    OutputRefusal,
    OutputText,
    ReasoningText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    new_id,
)
from server.api.streaming import Frame, SseResponse, open_stream
from server.chat.reasoning import ReasoningSplit, split_reasoning
from server.chat.tools import ToolSpec
from server.chat.tools.formats import GENERIC, ToolFormat
from server.chat.tools.parser import (
    ArgumentsDelta,
    CallStart,
    ContentDelta,
    StreamItem,
    ToolCallStream,
    parse_output,
)
from server.chat.tools.spec import strict_call_problem
from server.runtime.services import Services


def _usage(done: Completed) -> ResponseUsage:
    usage = done.usage
    return ResponseUsage(
        input_tokens=usage.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=usage.cached_prompt_tokens),
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _envelope(request: ResponsesRequest, model: str, response_id: str) -> ResponseObject:
    """The response object with the request's settings echoed back, before any output."""
    return ResponseObject(
        id=response_id,
        model=model,
        status="in_progress",
        instructions=request.instructions,
        max_output_tokens=request.max_output_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        tools=[tool.model_dump(exclude_none=True) for tool in request.tools or []],
        tool_choice=(
            request.tool_choice.model_dump()
            if request.tool_choice is not None and not isinstance(request.tool_choice, str)
            else request.tool_choice or ("auto" if request.tools else "none")
        ),
        parallel_tool_calls=request.parallel_tool_calls,
        text=(request.text.model_dump(by_alias=True, exclude_none=True) if request.text else None)
        or {"format": {"type": "text"}},
        metadata=request.metadata or {},
    )


def _finish(response: ResponseObject, done: Completed) -> None:
    response.usage = _usage(done)
    if done.finish_reason in ("length", "content_filter"):
        response.status = "incomplete"
        reason = "max_output_tokens" if done.finish_reason == "length" else "content_filter"
        response.incomplete_details = IncompleteDetails(reason=reason)
    else:
        response.status = "completed"


class ResponsesServing:
    """Handler for ``POST /v1/responses``."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def create(
        self,
        request: ResponsesRequest,
        ctx: RequestContext,
        generation: GenerationService,
        http_request: Request,
    ) -> ResponseObject | SseResponse:
        chat_request, origin = to_chat_request(request)
        try:
            chat = await prepare_chat_off_loop(chat_request, generation)
        except BadRequestError as exc:
            exc.param = responses_param(exc.param, origin)
            raise
        response_id = f"resp_{ctx.request_id}"
        ctx.record = ResponseRecord(
            response_id, "responses", last_user_message(chat.transcript), messages=chat.transcript
        )
        generation.pick_adapter(ctx, request.model, request.user)
        items = generation.stream(ctx, chat.prompt, chat.params, input_text=chat.input_text)
        response = _envelope(request, ctx.adapter or self.services.model_id, response_id)
        if request.stream:
            fmt = ResponseEventFormat(
                response,
                parse_calls=chat.parse_calls,
                prefill=chat.prefill,
                tool_format=chat.tool_format,
                reasoning=chat.reasoning,
                thinking_open=chat.thinking_open,
                json_answer=chat.json_answer,
                tools=chat.tools,
            )
            return await open_stream(http_request, ctx, items, fmt)
        whole = await until_disconnected(http_request, collect_all(items))
        done = whole.done
        output: list[OutputItem] = []
        reasoning, text = ("", whole.text)
        if chat.reasoning and not done.refused:
            reasoning, text = split_reasoning(whole.text, opened=chat.thinking_open)
        calls = []
        if chat.parse_calls and not done.refused:
            parsed = parse_output(text, prefill=chat.prefill, fmt=chat.tool_format)
            text, calls = parsed.content, parsed.calls
        if reasoning:
            output.append(OutputReasoning(id=new_id("rs"), content=[ReasoningText(text=reasoning)]))
        problem = answer_problem(chat.json_answer, text, done.finish_reason, done.refused)
        if problem and not calls:  # never a success: say why instead
            ctx.log_fields["invalid_output"] = problem
            refusal = OutputRefusal(refusal=f"{INVALID_ANSWER}: {problem}.")
            output.append(OutputMessage(id=new_id("msg"), content=[refusal]))
        elif call_problem := strict_call_problem(calls, chat.tools):
            ctx.log_fields["invalid_output"] = call_problem
            refusal = OutputRefusal(refusal=f"{INVALID_CALL}: {call_problem}.")
            output.append(OutputMessage(id=new_id("msg"), content=[refusal]))
            calls = []
        elif text or not calls:
            output.append(OutputMessage(id=new_id("msg"), content=[OutputText(text=text)]))
        for call in calls:
            output.append(
                OutputFunctionCall(
                    id=new_id("fc"), call_id=call.id, name=call.name, arguments=call.arguments
                )
            )
        response.output = output
        _finish(response, whole.done)
        return response


class ResponseEventFormat:
    """Writes a generation as the Responses API's typed server-sent events."""

    def __init__(
        self,
        response: ResponseObject,
        *,
        parse_calls: bool,
        prefill: str = "",
        tool_format: ToolFormat = GENERIC,
        reasoning: bool = False,
        thinking_open: bool = False,
        json_answer: JsonAnswer | None = None,
        tools: list[ToolSpec] | None = None,
    ) -> None:
        self._tools = tools or []
        self._response = response
        self._calls = ToolCallStream(tool_format, prefill) if parse_calls else None
        self._reasoning = ReasoningSplit(opened=thinking_open) if reasoning else None
        self._thought: OutputReasoning | None = None  # the open reasoning item, if any
        self._json_answer = json_answer
        self._answer: list[str] = []  # the content, kept only for json_answer
        self._part = OutputText(text="")  # the open message's text
        self._sequence = 0
        self._started = False
        self._message: OutputMessage | None = None  # the open message item, if any
        self._call: OutputFunctionCall | None = None  # the open function-call item, if any
        self._index = -1  # output_index of the open item

    def _event(self, kind: str, **fields: Any) -> Frame:
        body = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return {"event": kind, "data": json.dumps(body, ensure_ascii=False)}

    def _snapshot(self) -> dict[str, Any]:
        return self._response.model_dump(mode="json")

    def frames(self, event: GenerationItem) -> Iterable[Frame]:
        if not self._started:
            self._started = True
            yield self._event("response.created", response=self._snapshot())
            yield self._event("response.in_progress", response=self._snapshot())
            for item in self._calls.start() if self._calls is not None else []:
                yield from self._item_frames(item)
        if isinstance(event, PromptScores):
            return
        if isinstance(event, TextDelta):
            thought, text = event.text, ""
            if self._reasoning is None:
                thought, text = "", event.text
            else:
                thought, text = self._reasoning.feed(event.text)
            yield from self._reasoning_frames(thought)
            yield from self._content_frames(text)
            return
        if self._reasoning is not None:
            thought, text = self._reasoning.finish()
            yield from self._reasoning_frames(thought)
            yield from self._content_frames(text)
        if self._calls is not None:
            for item in self._calls.finish():
                yield from self._item_frames(item)
        self._check_answer(event)
        yield from self._close_open()
        _finish(self._response, event)
        kind = (
            "response.completed" if self._response.status == "completed" else "response.incomplete"
        )
        yield self._event(kind, response=self._snapshot())

    def _content_frames(self, text: str) -> Iterable[Frame]:
        if self._json_answer is not None:
            self._answer.append(text)
        items: list[StreamItem] = (
            [ContentDelta(text)] if self._calls is None else self._calls.feed(text)
        )
        for item in items:
            yield from self._item_frames(item)

    def _check_answer(self, done: Completed) -> None:
        """A JSON answer that breaks ``text.format`` ends the stream with an error."""
        called = self._calls is not None and bool(self._calls.calls)
        text = "".join(self._answer)
        problem = answer_problem(
            self._json_answer, text, done.finish_reason, done.refused or called
        )
        if problem:
            raise OutputRejectedError(
                f"{INVALID_ANSWER}: {problem}.", code="invalid_json_answer", param="text.format"
            )
        if self._calls is not None and done.finish_reason == "stop":
            call_problem = strict_call_problem(self._calls.calls, self._tools)
            if call_problem:
                raise OutputRejectedError(
                    f"{INVALID_CALL}: {call_problem}.", code="invalid_tool_call", param="tools"
                )

    def _reasoning_frames(self, thought: str) -> Iterable[Frame]:
        if not thought:
            return
        if self._thought is None:
            yield from self._close_open()
            self._thought = OutputReasoning(id=new_id("rs"), status="in_progress")
            self._index += 1
            yield self._event(
                "response.output_item.added",
                output_index=self._index,
                item=self._thought.model_dump(mode="json"),
            )
        if not self._thought.content:
            self._thought.content.append(ReasoningText(text=""))
        self._thought.content[0].text += thought
        yield self._event(
            "response.reasoning_text.delta",
            item_id=self._thought.id,
            output_index=self._index,
            content_index=0,
            delta=thought,
        )

    def _item_frames(self, item: StreamItem) -> Iterable[Frame]:
        if isinstance(item, ContentDelta):
            if not item.text:
                return
            if self._message is None:
                yield from self._close_open()
                yield from self._open_message()
            assert self._message is not None
            self._part.text += item.text
            yield self._event(
                "response.output_text.delta",
                item_id=self._message.id,
                output_index=self._index,
                content_index=0,
                delta=item.text,
                logprobs=[],
            )
        elif isinstance(item, CallStart):
            yield from self._close_open()
            self._call = OutputFunctionCall(
                id=new_id("fc"), call_id=item.id, name=item.name, arguments="", status="in_progress"
            )
            self._index += 1
            yield self._event(
                "response.output_item.added",
                output_index=self._index,
                item=self._call.model_dump(mode="json"),
            )
        elif isinstance(item, ArgumentsDelta) and self._call is not None:
            self._call.arguments += item.text
            yield self._event(
                "response.function_call_arguments.delta",
                item_id=self._call.id,
                output_index=self._index,
                delta=item.text,
            )

    def _open_message(self) -> Iterable[Frame]:
        self._part = OutputText(text="")
        self._message = OutputMessage(id=new_id("msg"), status="in_progress", content=[self._part])
        self._index += 1
        added = self._message.model_copy(update={"content": []})
        yield self._event(
            "response.output_item.added",
            output_index=self._index,
            item=added.model_dump(mode="json"),
        )
        yield self._event(
            "response.content_part.added",
            item_id=self._message.id,
            output_index=self._index,
            content_index=0,
            part=OutputText(text="").model_dump(mode="json"),
        )

    def _close_open(self) -> Iterable[Frame]:
        """Finish the open item: its done events, and it joins the response's output."""
        if self._thought is not None:
            thought, self._thought = self._thought, None
            yield self._event(
                "response.reasoning_text.done",
                item_id=thought.id,
                output_index=self._index,
                content_index=0,
                text=thought.content[0].text if thought.content else "",
            )
            thought.status = "completed"
            self._response.output.append(thought)
            yield self._event(
                "response.output_item.done",
                output_index=self._index,
                item=thought.model_dump(mode="json"),
            )
        if self._message is not None:
            message, self._message = self._message, None
            part = self._part
            yield self._event(
                "response.output_text.done",
                item_id=message.id,
                output_index=self._index,
                content_index=0,
                text=part.text,
                logprobs=[],
            )
            yield self._event(
                "response.content_part.done",
                item_id=message.id,
                output_index=self._index,
                content_index=0,
                part=part.model_dump(mode="json"),
            )
            message.status = "completed"
            self._response.output.append(message)
            yield self._event(
                "response.output_item.done",
                output_index=self._index,
                item=message.model_dump(mode="json"),
            )
        if self._call is not None:
            call, self._call = self._call, None
            final = next(
                (
                    c.arguments
                    for c in (self._calls.calls if self._calls else [])
                    if c.id == call.call_id
                ),
                call.arguments,
            )
            call.arguments = final
            yield self._event(
                "response.function_call_arguments.done",
                item_id=call.id,
                output_index=self._index,
                name=call.name,
                arguments=final,
            )
            call.status = "completed"
            self._response.output.append(call)
            yield self._event(
                "response.output_item.done",
                output_index=self._index,
                item=call.model_dump(mode="json"),
            )

    def error_frames(self, body: dict[str, Any]) -> Iterable[Frame]:
        error = body.get("error", {})
        yield self._event(
            "error",
            code=error.get("code"),
            message=error.get("message"),
            param=error.get("param"),
        )

    def closing_frames(self) -> Iterable[Frame]:
        return ()
