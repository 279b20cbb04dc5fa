"""Responses API input → a chat completion request (one path for tools, formats, sampling).

Error ``param`` names from the chat path are translated back to the Responses fields.
"""

from __future__ import annotations

import re
from typing import Any

from server.api.errors import BadRequestError
from server.api.openai.protocol import ChatCompletionRequest
from server.api.responses.protocol import (
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningInputItem,
    ResponsesRequest,
)


def _messages(request: ResponsesRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """Chat messages, and for each the Responses field it came from (for error names)."""
    messages: list[dict[str, Any]] = []
    origin: list[str] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
        origin.append("instructions")
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
        origin.append("input")
        return messages, origin
    for index, item in enumerate(request.input):
        where = f"input[{index}]"
        if isinstance(item, ReasoningInputItem):
            continue  # earlier thinking is not part of the prompt
        if isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and last.get("_calls_only"):
                last["tool_calls"].append(call)  # consecutive calls: one assistant turn
                continue
            messages.append(
                {"role": "assistant", "content": None, "tool_calls": [call], "_calls_only": True}
            )
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        origin.append(where)
    for message in messages:
        message.pop("_calls_only", None)
    return messages, origin


def to_chat_request(request: ResponsesRequest) -> tuple[ChatCompletionRequest, list[str]]:
    """The equivalent chat completion request, and the origin of each of its messages."""
    if request.previous_response_id is not None:
        raise BadRequestError(
            "previous_response_id is not supported: this server stores no responses "
            "(store is always false). Send the whole conversation in 'input'.",
            code="unsupported_value",
            param="previous_response_id",
        )
    messages, origin = _messages(request)
    if not messages:
        raise BadRequestError("input is empty: send text or at least one item.", param="input")
    body: dict[str, Any] = {
        "messages": messages,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "parallel_tool_calls": request.parallel_tool_calls,
        "max_tokens": request.max_output_tokens,
        "reasoning_format": request.reasoning_format,
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                    "strict": tool.strict,
                },
            }
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            choice
            if isinstance(choice, str)
            else {"type": "function", "function": {"name": choice.name}}
        )
    fmt = request.text.format if request.text else None
    if fmt is not None and fmt.type == "json_schema":
        if fmt.schema_ is None:
            raise BadRequestError(
                "text.format type 'json_schema' needs a schema.", param="text.format.schema"
            )
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": fmt.name or "response",
                "schema": fmt.schema_,
                "strict": fmt.strict,
            },
        }
    elif fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    return ChatCompletionRequest.model_validate(body), origin


_MESSAGE = re.compile(r"^messages\[(\d+)\]")


def responses_param(param: str | None, origin: list[str]) -> str | None:
    """A chat-path field name (``messages[3].tool_call_id``) as a Responses one (``input[2]``)."""
    if param is None:
        return None
    match = _MESSAGE.match(param)
    if match:
        index = int(match.group(1))
        return origin[index] if index < len(origin) else "input"
    if param.startswith("response_format"):
        return "text.format" + param[len("response_format") :].replace(".json_schema", "")
    return re.sub(r"^tools\[(\d+)\]\.function\.", r"tools[\1].", param).replace(
        "max_tokens", "max_output_tokens"
    )
