"""Checks that a conversation follows the tool protocol before it is rendered.

OpenAI's rules: a ``tool`` message answers a call of the assistant message just before it (only
other tool messages in between), by its ``tool_call_id``; every call of that assistant message
is answered before the conversation goes on; call arguments are JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from server.chat.tools.spec import ToolSpecError


def _check_calls(index: int, calls: Any) -> list[str]:
    if not isinstance(calls, list) or not calls:
        raise ToolSpecError(
            "tool_calls must be a non-empty list of calls.", f"messages[{index}].tool_calls"
        )
    ids: list[str] = []
    for j, call in enumerate(calls):
        where = f"messages[{index}].tool_calls[{j}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name"):
            raise ToolSpecError("Each tool call needs function.name.", f"{where}.function.name")
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise ToolSpecError(
                "function.arguments must be a string of JSON.", f"{where}.function.arguments"
            )
        if arguments:
            try:
                json.loads(arguments)
            except json.JSONDecodeError as exc:
                raise ToolSpecError(
                    f"function.arguments is not valid JSON ({exc.msg}).",
                    f"{where}.function.arguments",
                ) from exc
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ToolSpecError("Each tool call needs an id.", f"{where}.id")
        ids.append(call_id)
    return ids


def check_tool_history(messages: Sequence[Mapping[str, Any]]) -> None:
    """Raise ``ToolSpecError`` naming the first message that breaks the tool protocol."""
    pending: list[str] = []  # calls of the last assistant message not answered yet
    open_index = -1
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise ToolSpecError(
                    "A tool message needs tool_call_id.", f"messages[{index}].tool_call_id"
                )
            if call_id not in pending:
                raise ToolSpecError(
                    f"This tool message answers {call_id!r}, which is not an unanswered call of "
                    "the assistant message before it.",
                    f"messages[{index}].tool_call_id",
                )
            pending.remove(call_id)
            continue
        if pending:
            raise ToolSpecError(
                f"The assistant message at messages[{open_index}] made tool calls "
                f"({', '.join(pending)}) that are not answered by tool messages before this one.",
                f"messages[{index}]",
            )
        if role == "assistant" and message.get("tool_calls") is not None:
            pending = _check_calls(index, message["tool_calls"])
            open_index = index
