"""A chat request made ready for the engine: messages, tools, grammar, logprobs, prompt.

Chat completions and the Responses API both come through here, so tools, formats and logprobs
mean the same on both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from server.api.errors import BadRequestError
from server.api.generation import GenerationService
from server.api.openai.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    SamplingFields,
    tool_choice_value,
    tool_specs,
)
from server.chat.json_grammar import (
    check_answer,
    json_object_grammar,
    json_schema_grammar,
    strict_violations,
)
from server.chat.reasoning import THINK_CLOSE, template_opens_thinking, template_thinks
from server.chat.tools import ToolSpec, ToolSpecError
from server.chat.tools.formats import GENERIC, ToolFormat
from server.chat.tools.plan import plan_tools
from server.engine.types import InvalidRequestError, SamplingParams

# What a JSON answer that fails its response_format says instead of the answer.
INVALID_ANSWER = "The model's answer does not satisfy response_format"
# What a strict tool's call whose arguments break its parameters says instead of the call.
INVALID_CALL = "The model's tool call does not satisfy the tool's strict parameters"


@dataclass(frozen=True)
class JsonAnswer:
    """The answer must be JSON: an object (``json_object``) or valid under ``schema``."""

    schema: dict[str, Any] | None

    def problem(self, text: str) -> str | None:
        """Why ``text`` is not such an answer, or None."""
        return check_answer(text, self.schema)


def answer_problem(
    json_answer: JsonAnswer | None, text: str, reason: str, not_an_answer: bool
) -> str | None:
    """Why a finished choice's text breaks its JSON format (None: it does not, or there is
    nothing to check: text format, cut by the budget, refused, or a tool call). Chat
    completions and the Responses API both ask this, so ``stop`` means valid on both."""
    if json_answer is None or reason != "stop" or not_an_answer:
        return None
    return json_answer.problem(text)


@dataclass(frozen=True)
class PreparedChat:
    """What a chat request becomes before it is run."""

    prompt: list[int]
    params: SamplingParams
    parse_calls: bool  # read tool calls out of the output
    input_text: str  # for the input guardrail
    transcript: list[dict[str, str]]  # role and text of each message, for the capture record
    json_answer: JsonAnswer | None = None  # response_format json_object / json_schema
    prefill: str = ""  # a forced call's known start, in the prompt (read back with the output)
    reasoning: bool = False  # split <think>…</think> into reasoning_content
    thinking_open: bool = False  # the prompt ends inside <think>: the output starts thinking
    tool_format: ToolFormat = GENERIC  # the model family's call format (how calls are read)
    tools: list[ToolSpec] = field(default_factory=list)  # the request's tools (strict checks)


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": message.text(),
    }
    if message.name:
        out["name"] = message.name
    if message.tool_calls is not None:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
    return out


def format_grammar(request: ChatCompletionRequest) -> str | None:
    """GBNF for ``response_format`` (json_object / json_schema), or None for text."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return json_object_grammar()
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise BadRequestError(
            "response_format type 'json_schema' needs json_schema.schema",
            param="response_format.json_schema",
        )
    if fmt.json_schema.strict:
        unenforced = list(strict_violations(fmt.json_schema.schema_))
        if unenforced:
            raise BadRequestError(
                f"strict: true needs a schema whose every keyword the grammar enforces; "
                f"{unenforced[0]} is not one (drop it, or set strict: false to have the answer "
                "checked after generation instead).",
                param=f"response_format.json_schema.{unenforced[0]}",
            )
    try:
        return json_schema_grammar(fmt.json_schema.schema_)
    except InvalidRequestError as exc:
        raise BadRequestError(
            f"response_format.json_schema.schema cannot be used: {exc}",
            param="response_format.json_schema.schema",
        ) from exc


def logit_bias(raw: dict[str, float] | None) -> tuple[tuple[int, float], ...]:
    """``{"token id": bias}`` → pairs (ids are range-checked by the engine)."""
    if not raw:
        return ()
    try:
        return tuple((int(token), float(bias)) for token, bias in raw.items())
    except ValueError as exc:
        raise BadRequestError(
            "logit_bias keys must be token ids (integers as strings)", param="logit_bias"
        ) from exc


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
        logit_bias=logit_bias(request.logit_bias),
        speculative=request.speculative,
    )


def prepare_chat(request: ChatCompletionRequest, generation: GenerationService) -> PreparedChat:
    """Validate tools, history and logprobs; render the prompt; pick grammar and sampling."""
    messages = [_message_dict(m) for m in request.messages]
    tools = tool_specs(request.tools or [])
    if not tools and request.tool_choice not in (None, "none"):
        raise BadRequestError(
            "tool_choice needs tools: send the functions in 'tools'.", param="tool_choice"
        )
    if request.top_logprobs is not None and not request.logprobs:
        raise BadRequestError("top_logprobs needs logprobs: true.", param="top_logprobs")
    choice = tool_choice_value(request.tool_choice, bool(tools))
    try:
        plan = plan_tools(
            messages,
            tools,
            choice,
            parallel=request.parallel_tool_calls,
            template_source=generation.template_source,
        )
    except ToolSpecError as exc:
        raise BadRequestError(str(exc), code="invalid_value", param=exc.param) from exc
    response_grammar = format_grammar(request)
    if plan.grammar and response_grammar:
        raise BadRequestError(
            "response_format cannot be combined with tool calls: use tool_choice 'none', or "
            "let the tool's parameters schema shape the output.",
            param="response_format",
        )
    prompt = generation.chat_prompt(plan.messages, **plan.template_vars)
    opened = template_opens_thinking(generation.template_source)
    if plan.prefill:  # the assistant's answer starts with the forced call's known part
        # (after closing the thinking the template opened: a forced call needs none)
        closing = THINK_CLOSE + "\n\n" if opened else ""
        prompt += generation.tokenize(closing + plan.prefill, add_special=False)
        opened = False
    max_tokens = generation.resolve_max_tokens(request.requested_max_tokens(), len(prompt))
    params = replace(
        sampling_params(request, max_tokens, plan.grammar or response_grammar),
        grammar_trigger=plan.trigger,
        logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        preserved_tokens=_preserved_tokens(generation, plan.fmt.preserved)
        if plan.parse_calls
        else (),
    )
    transcript = [{"role": m["role"], "content": str(m["content"])} for m in messages]
    input_text = "\n".join(m["content"] for m in transcript)
    reasoning = _splits_reasoning(request, generation)
    return PreparedChat(
        prompt,
        params,
        plan.parse_calls,
        input_text,
        transcript,
        json_answer(request),
        plan.prefill,
        reasoning,
        reasoning and opened,
        plan.fmt,
        tools,
    )


def _preserved_tokens(generation: GenerationService, texts: Sequence[str]) -> tuple[int, ...]:
    """The ids of the control tokens spelled ``texts`` in this model's vocabulary (a text the
    tokenizer does not turn into one token is plain text already, and needs no keeping)."""
    ids: list[int] = []
    for text in texts:
        tokens = generation.tokenize(text, add_special=False, parse_special=True)
        if len(tokens) == 1:
            ids.append(tokens[0])
    return tuple(ids)


# Above this much schema text (response_format and tool parameters together), a request is
# prepared in a worker thread: an uncached conversion of a large schema takes tens to
# hundreds of milliseconds, which on the event loop would stall every other stream.
LARGE_SCHEMA_CHARS = 4096


def schema_chars(request: ChatCompletionRequest) -> int:
    """How much JSON-schema text the request carries (a cheap size of the conversion work)."""
    schemas: list[Any] = [t.function.parameters for t in request.tools or []]
    fmt = request.response_format
    if fmt is not None and fmt.json_schema is not None:
        schemas.append(fmt.json_schema.schema_)
    return sum(len(json.dumps(schema, default=str)) for schema in schemas if schema)


async def prepare_chat_off_loop(
    request: ChatCompletionRequest, generation: GenerationService
) -> PreparedChat:
    """``prepare_chat``, in a worker thread when the request's schemas are large (the grammar
    conversion would block the event loop); inline otherwise, where a thread hop costs more
    than the work. Converted grammars are cached, so a repeated large schema is cheap anyway."""
    if schema_chars(request) > LARGE_SCHEMA_CHARS:
        return await asyncio.to_thread(prepare_chat, request, generation)
    return prepare_chat(request, generation)


def _splits_reasoning(request: ChatCompletionRequest, generation: GenerationService) -> bool:
    if request.reasoning_format is not None:
        return request.reasoning_format == "deepseek"
    return template_thinks(generation.template_source)


def json_answer(request: ChatCompletionRequest) -> JsonAnswer | None:
    """What a JSON ``response_format`` requires of the answer (None for text)."""
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None
    return JsonAnswer(fmt.json_schema.schema_ if fmt.json_schema else None)
