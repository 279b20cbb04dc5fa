"""DeepSeek V3 and R1 (and the R1 distills): calls between DeepSeek's own special markers.

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

Detected by ``<｜tool▁calls▁begin｜>`` in the template. The templates concatenate the history's
call arguments as text, so they get the JSON string, not a mapping. R1 writes ``<think>``
first (split off before calls are read). The R1 templates never list the tools; they go into
the system message with an example call in this format (``render.tool_preamble``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from server.chat.tools.formats.base import (
    PARTIAL,
    Between,
    Head,
    HeadMatch,
    Match,
    ToolFormat,
    literal,
    native_message,
)
from server.chat.tools.spec import ToolSpec

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
_NAME_LIMIT = 64


class DeepSeekFormat(ToolFormat):
    name = "deepseek"
    markers = (CALLS_BEGIN,)
    preserved = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)
    section_open = CALLS_BEGIN
    call_open = CALL_BEGIN + "function" + SEP
    call_close = "\n```" + CALL_END
    separator = "\n"
    section_close = CALLS_END
    thinks = True

    @classmethod
    def detect(cls, template_source: str) -> bool:
        return CALLS_BEGIN in template_source

    def render_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = [native_message(m, arguments_as_text=True) for m in messages]
        for message in out:
            # The templates write a call turn and then, for non-null content, a second
            # (empty) assistant turn: a call without text has null content.
            if message.get("tool_calls") and not message["content"]:
                message["content"] = None
        return out

    def head(self, tool: ToolSpec) -> str:
        return tool.name + "\n```json\n"

    def match_head(self, text: str, pos: int) -> HeadMatch:
        step = literal(text, pos, CALL_BEGIN)
        if not isinstance(step, int):
            return step
        sep = text.find(SEP, step, step + 32)  # the call type ("function") comes first
        if sep < 0:
            rest = text[step:]
            return PARTIAL if len(rest) < 32 and not rest.startswith("<") else None
        name_start = sep + len(SEP)
        newline = text.find("\n", name_start, name_start + _NAME_LIMIT + 1)
        if newline < 0:
            return PARTIAL if len(text) - name_start <= _NAME_LIMIT else None
        name = text[name_start:newline].strip()
        fence = literal(text, newline, "```json")
        if not isinstance(fence, int):
            return fence
        start = literal(text, fence, "{")
        if not isinstance(start, int):
            return start
        return Head(name, start - 1) if name else None

    def match_tail(self, text: str, pos: int) -> Match:
        step = literal(text, pos, "```")
        return literal(text, step, CALL_END) if isinstance(step, int) else step

    def match_between(self, text: str, pos: int) -> Between:
        more = literal(text, pos, CALL_BEGIN)
        if isinstance(more, int):
            return ("more", pos)
        end = literal(text, pos, CALLS_END)
        if isinstance(end, int):
            return ("end", end)
        if more is PARTIAL or end is PARTIAL:
            return PARTIAL
        return None
