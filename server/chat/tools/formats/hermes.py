"""Hermes 2 Pro / Hermes 3 / Qwen 2.5 and Qwen3: one ``<tool_call>`` block per call.

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

Detected by the ``<tool_call>`` text in the template (as llama.cpp's chat parser does); Qwen3
is the same wrapper in a template that also knows ``<think>`` (its reasoning is split off
before calls are read).
"""

from __future__ import annotations

import json

from server.chat.tools.formats.base import HeadMatch, Match, ToolFormat, json_head, literal
from server.chat.tools.spec import CALL_CLOSE, CALL_OPEN, ToolSpec


class HermesFormat(ToolFormat):
    name = "hermes"
    markers = (CALL_OPEN,)
    call_open = CALL_OPEN + "\n"
    call_close = "}\n" + CALL_CLOSE
    separator = "\n"

    @classmethod
    def detect(cls, template_source: str) -> bool:
        return CALL_OPEN in template_source

    def head(self, tool: ToolSpec) -> str:
        return '{"name": ' + json.dumps(tool.name) + ', "arguments": '

    def match_head(self, text: str, pos: int) -> HeadMatch:
        return json_head(text, pos, ("arguments", "parameters"))

    def match_tail(self, text: str, pos: int) -> Match:
        step = literal(text, pos, "}")
        return literal(text, step, CALL_CLOSE) if isinstance(step, int) else step


class Qwen3Format(HermesFormat):
    name = "qwen3"
    thinks = True

    @classmethod
    def detect(cls, template_source: str) -> bool:
        return CALL_OPEN in template_source and "<think>" in template_source
