"""Llama 3.1 / 3.2 / 3.3: a call is the bare JSON object, optionally after ``<|python_tag|>``.

    {"name": "get_weather", "parameters": {"city": "Paris"}}

The templates ask for exactly this (``"parameters"``, not ``"arguments"``) and allow one call
per assistant turn. Detected by the ``ipython`` role the templates render tool results as
(llama.cpp's detection too). A call is recognised where such an object starts (the output's
start, as vLLM's Llama 3 JSON parser reads it, or later) or after ``<|python_tag|>``. Built-in
tool calls (``<|python_tag|>brave_search.call(...)``) are not JSON and stay content.
"""

from __future__ import annotations

import json

from server.chat.tools.formats.base import HeadMatch, Match, ToolFormat, json_head, literal
from server.chat.tools.spec import ToolSpec

PYTHON_TAG = "<|python_tag|>"


class Llama3Format(ToolFormat):
    name = "llama3"
    # The lazy grammar triggers on the start of a call's JSON (bare calls have no wrapper).
    markers = ('{"name": ', PYTHON_TAG)
    preserved = (PYTHON_TAG,)
    separator = None  # the templates refuse more than one call per turn
    call_close = "}"
    bare_start = True

    @classmethod
    def detect(cls, template_source: str) -> bool:
        return "<|start_header_id|>" in template_source and (
            "ipython" in template_source or PYTHON_TAG in template_source
        )

    def head(self, tool: ToolSpec) -> str:
        return '{"name": ' + json.dumps(tool.name) + ', "parameters": '

    def _find_marker(self, text: str, pos: int) -> tuple[int, int] | None:
        # '{"name": ' is the trigger, not a marker to consume: the call's JSON starts there.
        found = super()._find_marker(text, pos)
        if found is None:
            return None
        start, _end = found
        return (start, start) if text.startswith("{", start) else found

    def match_head(self, text: str, pos: int) -> HeadMatch:
        return json_head(text, pos, ("parameters", "arguments"))

    def match_tail(self, text: str, pos: int) -> Match:
        return literal(text, pos, "}")
