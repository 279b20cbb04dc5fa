"""The fallback for chat templates with no known tool-call format (SmolLM2's ChatML among them).

The tools go into a system message (``render.tool_preamble``) that asks for Hermes-style
``<tool_call>`` blocks; calls in the history are written back that way and tool results become
``<tool_response>`` user turns, which any template can render. The lazy grammar holds the model
to the format from the moment it writes ``<tool_call>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from server.chat.tools.formats.hermes import HermesFormat


class GenericFormat(HermesFormat):
    name = "generic"
    native = False

    @classmethod
    def detect(cls, template_source: str) -> bool:
        return True

    def render_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError("the generic format renders through render.generic_messages")
