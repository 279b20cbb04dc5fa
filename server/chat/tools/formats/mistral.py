"""Mistral (7B v0.3, Nemo, Small): ``[TOOL_CALLS]`` and a JSON list of calls.

    [TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]

Detected by ``[TOOL_CALLS]`` in the template. The templates insist on call ids of exactly nine
letters and digits (``tool_call.id|length != 9`` raises), so the history's OpenAI ids are
mapped to such ids, the same way for a call and the tool message that answers it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from server.chat.tools.formats.base import (
    PARTIAL,
    Between,
    HeadMatch,
    Match,
    ToolFormat,
    json_head,
    json_string,
    literal,
    native_message,
)
from server.chat.tools.spec import ToolSpec

TOOL_CALLS = "[TOOL_CALLS]"


def mistral_call_id(call_id: str) -> str:
    """A nine-character alphanumeric id standing for ``call_id`` (stable, so a call and its
    result keep matching)."""
    if len(call_id) == 9 and call_id.isalnum():
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


class MistralFormat(ToolFormat):
    name = "mistral"
    markers = (TOOL_CALLS,)
    preserved = (TOOL_CALLS,)
    section_open = TOOL_CALLS + "["
    call_close = "}"
    separator = ", "
    section_close = "]"

    @classmethod
    def detect(cls, template_source: str) -> bool:
        return TOOL_CALLS in template_source

    def render_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for message in messages:
            copy = native_message(message)
            for call in copy.get("tool_calls") or []:
                call["id"] = mistral_call_id(str(call.get("id") or ""))
            if copy.get("role") == "tool":
                copy["tool_call_id"] = mistral_call_id(str(copy.get("tool_call_id") or ""))
            out.append(copy)
        return out

    def head(self, tool: ToolSpec) -> str:
        return '{"name": ' + json.dumps(tool.name) + ', "arguments": '

    def match_section_open(self, text: str, pos: int) -> Match:
        return literal(text, pos, "[")

    def match_head(self, text: str, pos: int) -> HeadMatch:
        return json_head(text, pos, ("arguments",))

    def match_tail(self, text: str, pos: int) -> Match:
        # The templates write the call id back after the arguments: `, "id": "abcdef123"}`.
        comma = literal(text, pos, ",")
        if comma is PARTIAL:
            return PARTIAL
        if isinstance(comma, int):
            key = json_string(text, comma)
            if not isinstance(key, tuple):
                return key
            if key[0] != "id":
                return None
            colon = literal(text, key[1], ":")
            if not isinstance(colon, int):
                return colon
            value = json_string(text, colon)
            if not isinstance(value, tuple):
                return value
            pos = value[1]
        return literal(text, pos, "}")

    def match_between(self, text: str, pos: int) -> Between:
        more = literal(text, pos, ",")
        if isinstance(more, int):
            return ("more", more)
        end = literal(text, pos, "]")
        if isinstance(end, int):
            return ("end", end)
        return more if more is not None else end
