"""Putting tools and tool-call history into a chat prompt.

A chat template that knows about tools (it reads a ``tools`` variable, as Qwen 2.5, Hermes or
Llama 3.1 templates do) gets the tools and the messages as they are, with assistant
``tool_calls`` and ``role: "tool"`` messages. Any other template (SmolLM2's ChatML among them)
gets the generic preamble below as a system message, assistant calls written back in the call
format, and tool results as user messages wrapped in ``<tool_response>``: every template can
render that, including ones that insist on user/assistant alternation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from server.chat.tools.spec import CALL_CLOSE, CALL_OPEN, ToolSpec

_USES_TOOLS = re.compile(r"\btools\b")

PREAMBLE = (
    "You can call functions (tools) to help answer. To call one, reply with a block like:\n"
    f"{CALL_OPEN}\n"
    '{{"name": "<function name>", "arguments": {{<arguments as a JSON object>}}}}\n'
    f"{CALL_CLOSE}\n"
    "Use one block per call. Function results come back in <tool_response> blocks. "
    "If no function is needed, answer normally.\n"
    "Available functions:\n"
    "{tools}"
)


def template_supports_tools(template_source: str) -> bool:
    """Whether a Jinja chat template renders a ``tools`` variable itself."""
    return bool(_USES_TOOLS.search(template_source))


def tool_preamble(tools: Sequence[ToolSpec]) -> str:
    """The generic instruction listing ``tools`` (one JSON definition per line)."""
    listing = "\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in tools)
    return PREAMBLE.format(tools=listing)


def format_call(name: str, arguments: str) -> str:
    """One call in the wire format (the arguments JSON is re-serialized compactly if valid)."""
    try:
        args: Any = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        args = arguments
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def _call_parts(call: Mapping[str, Any]) -> tuple[str, str]:
    function = call.get("function") or {}
    return str(function.get("name", "")), str(function.get("arguments") or "")


def _generic_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if tools:
        preamble = tool_preamble(tools)
        if messages and messages[0]["role"] == "system":
            first = dict(messages[0])
            first["content"] = f"{first.get('content') or ''}\n\n{preamble}".lstrip()
            out.append(first)
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": preamble})
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [format_call(*_call_parts(call)) for call in message["tool_calls"]]
            text = "\n".join(([content] if content else []) + calls)
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool_results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool_results": True})
        else:
            out.append({"role": role, "content": content})
    for message in out:
        message.pop("_tool_results", None)
    return out


def _native_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        copy = dict(message)
        copy["content"] = copy.get("content") or ""
        if copy.get("tool_calls"):
            calls = []
            for call in copy["tool_calls"]:
                name, arguments = _call_parts(call)
                try:
                    parsed: Any = json.loads(arguments) if arguments else {}
                except json.JSONDecodeError:
                    parsed = arguments
                # Templates read call.function.arguments as a mapping (| tojson, .items()).
                calls.append(
                    {
                        "id": call.get("id"),
                        "type": "function",
                        "function": {"name": name, "arguments": parsed},
                    }
                )
            copy["tool_calls"] = calls
        out.append(copy)
    return out


def prepare_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[ToolSpec],
    *,
    native: bool,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and extra template variables for a chat that may involve tools.

    ``native``: the template renders tools itself (see ``template_supports_tools``).
    """
    if native:
        extra = {"tools": [tool.as_openai() for tool in tools]} if tools else {}
        return _native_messages(messages), extra
    return _generic_messages(messages, tools), {}
