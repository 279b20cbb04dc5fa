"""Putting tools and tool-call history into a chat prompt.

A chat template of a known tool-call family (``formats``: Hermes/Qwen, Llama 3.x, Mistral,
DeepSeek) gets the tools as its ``tools`` variable and the messages with assistant
``tool_calls`` and ``role: "tool"`` messages, shaped as that family's template reads them. Any
other template (SmolLM2's ChatML among them) gets the generic preamble below as a system
message, assistant calls written back in the ``<tool_call>`` format, and tool results as user
messages wrapped in ``<tool_response>``: every template can render that, including ones that
insist on user/assistant alternation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from server.chat.tools.formats import GENERIC, ToolFormat
from server.chat.tools.formats.base import call_parts
from server.chat.tools.spec import CALL_CLOSE, CALL_OPEN, ToolSpec

PREAMBLE = (
    "You can call functions (tools) to help answer. To call one, reply with a block like:\n"
    "{example}\n"
    "{results}"
    "If no function is needed, answer normally.\n"
    "Available functions:\n"
    "{tools}"
)
_GENERIC_RESULTS = "Use one block per call. Function results come back in <tool_response> blocks. "
_USES_TOOLS = re.compile(r"\btools\b")


def template_shows_tools(template_source: str) -> bool:
    """Whether a Jinja chat template renders a ``tools`` variable itself (some templates of
    tool-calling families, DeepSeek R1's among them, write calls but never list the tools)."""
    return bool(_USES_TOOLS.search(template_source))


def tool_preamble(tools: Sequence[ToolSpec], fmt: ToolFormat = GENERIC) -> str:
    """The instruction listing ``tools`` (one JSON definition per line), with an example call
    in ``fmt``'s format."""
    listing = "\n".join(json.dumps(tool.as_openai(), ensure_ascii=False) for tool in tools)
    example = fmt.calls_text([("<function name>", "{<arguments as a JSON object>}")])
    results = _GENERIC_RESULTS if not fmt.native else ""
    return PREAMBLE.format(example=example, results=results, tools=listing)


def _with_preamble(messages: Sequence[Mapping[str, Any]], preamble: str) -> list[Mapping[str, Any]]:
    """``messages`` with ``preamble`` added to the system message (or as one, first)."""
    if messages and messages[0]["role"] == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{preamble}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": preamble}, *messages]


def format_call(name: str, arguments: str) -> str:
    """One call in the wire format (the arguments JSON is re-serialized compactly if valid)."""
    try:
        args: Any = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        args = arguments
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{CALL_OPEN}\n{body}\n{CALL_CLOSE}"


def _generic_messages(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[ToolSpec]
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if tools:
        messages = _with_preamble(messages, tool_preamble(tools))
    for message in messages:
        role = message["role"]
        content = message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [format_call(*call_parts(call)) for call in message["tool_calls"]]
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


def prepare_chat(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[ToolSpec],
    *,
    fmt: ToolFormat = GENERIC,
    shows_tools: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Messages and extra template variables for a chat that may involve tools, in the
    model family ``fmt``'s way (the generic preamble when the family has no native one).

    ``shows_tools``: the template lists ``tools`` itself; when it does not (but knows the
    family's calls), the tools go into the system message with an example in that format.
    """
    if fmt.native:
        if tools and not shows_tools:
            return fmt.render_messages(_with_preamble(messages, tool_preamble(tools, fmt))), {}
        extra = {"tools": [tool.as_openai() for tool in tools]} if tools else {}
        return fmt.render_messages(messages), extra
    return _generic_messages(messages, tools), {}
