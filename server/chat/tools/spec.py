"""Tool definitions and tool calls as plain values, validated before they reach a grammar."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from server.chat.json_grammar import check_answer, strict_violations
from server.engine.types import InvalidRequestError

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# "auto": the model decides; "none": tools are only context; "required": at least one call;
# a str naming a function: exactly that function.
ToolChoice = Literal["auto", "none", "required"] | str


class ToolSpecError(InvalidRequestError):
    """A tool definition or tool choice the server cannot use; ``param`` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ToolSpec:
    """One function the model may call: its name, description and JSON-schema parameters."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    # OpenAI's ``strict``: the arguments are guaranteed to match ``parameters``; a call that
    # does not is never returned as a call (``strict_call_problem``).
    strict: bool = False

    def as_openai(self) -> dict[str, Any]:
        """The ``{"type": "function", "function": {...}}`` form templates and preambles show."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = self.parameters
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolCall:
    """One call the model made; ``arguments`` is the JSON text of the arguments object."""

    id: str
    name: str
    arguments: str


def check_tools(tools: list[ToolSpec]) -> None:
    """Raise ``ToolSpecError`` for bad names, duplicates or non-object parameter schemas."""
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if not _NAME_RE.match(tool.name):
            raise ToolSpecError(
                f"Tool name {tool.name!r} is invalid: use 1-64 letters, digits, '_' or '-'.",
                f"tools[{index}].function.name",
            )
        if tool.name in seen:
            raise ToolSpecError(
                f"Tool name {tool.name!r} is defined twice.", f"tools[{index}].function.name"
            )
        seen.add(tool.name)
        if tool.strict:
            unenforced = next(strict_violations(tool.parameters, "parameters"), None)
            if unenforced is not None:
                raise ToolSpecError(
                    f"Tool {tool.name!r} is strict, but {unenforced} is a keyword the grammar "
                    "cannot enforce: drop it, or set strict: false to have the arguments "
                    "returned as generated.",
                    f"tools[{index}].function.{unenforced}",
                )
        schema_type = tool.parameters.get("type", "object")
        if schema_type != "object":
            raise ToolSpecError(
                f"Tool {tool.name!r}: parameters must be a JSON schema of type 'object' "
                f"(got type {schema_type!r}).",
                f"tools[{index}].function.parameters",
            )


def resolve_choice(tools: list[ToolSpec], choice: ToolChoice) -> list[ToolSpec]:
    """The tools a call may use under ``choice`` ([] for 'none'); unknown names raise."""
    if choice == "none":
        return []
    if choice in ("auto", "required"):
        return tools
    chosen = [tool for tool in tools if tool.name == choice]
    if not chosen:
        names = ", ".join(tool.name for tool in tools) or "none"
        raise ToolSpecError(
            f"tool_choice names the function {choice!r}, which is not in tools ({names}).",
            "tool_choice",
        )
    return chosen


def strict_call_problem(calls: list[ToolCall], tools: list[ToolSpec]) -> str | None:
    """Why one of ``calls`` to a ``strict`` tool is not a valid call (its arguments are not
    a JSON object valid under the tool's parameters), or None.

    Non-strict tools' calls are not checked: as with OpenAI, their arguments are returned as
    generated (the grammar shapes them, but keywords it cannot enforce are not checked), and
    the client validates them.
    """
    strict = {tool.name: tool.parameters for tool in tools if tool.strict}
    for call in calls:
        if call.name in strict:
            problem = check_answer(call.arguments, strict[call.name])
            if problem:
                return f"the call to {call.name!r} does not match its parameters ({problem})"
    return None
