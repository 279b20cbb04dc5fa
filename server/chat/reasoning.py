"""Reasoning models' thinking, kept apart from the answer.

DeepSeek-R1, Qwen3, QwQ and others write ``<think>…</think>`` before their answer. With
``reasoning_format: "deepseek"`` (the default when the model's chat template knows the tags)
that text goes to ``message.reasoning_content`` / ``delta.reasoning_content`` instead of
``content``, as llama.cpp's server and vLLM do; ``"none"`` leaves it in the content.

Some templates (DeepSeek-R1's distills) end the generation prompt with ``<think>\n`` themselves:
the output then starts inside the thinking, with no opening tag (``opened``), as llama.cpp's
"thinking forced open".
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Literal

from server.chat.template import ChatTemplate
from server.engine.types import InvalidRequestError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ReasoningFormat = Literal["none", "deepseek"]


def template_thinks(template_source: str) -> bool:
    """Whether the model's chat template knows the thinking tags (a reasoning model)."""
    return THINK_OPEN in template_source or THINK_CLOSE in template_source


@functools.lru_cache(maxsize=8)
def template_opens_thinking(template_source: str) -> bool:
    """Whether the template's generation prompt ends inside an open ``<think>`` block."""
    if not template_thinks(template_source):
        return False
    try:
        template = ChatTemplate(template_source, bos_token="", eos_token="")
        prompt = template.render([{"role": "user", "content": "Hi"}])
    except (ValueError, InvalidRequestError):
        return False
    return THINK_OPEN in prompt and THINK_CLOSE not in prompt.rpartition(THINK_OPEN)[2]


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


@dataclass
class ReasoningSplit:
    """Splits one choice's streamed output into (reasoning, content) pieces.

    Thinking counts only where the answer starts with ``<think>`` (after whitespace); text that
    could still become the tag or its closing is held back until it is known.
    """

    opened: bool = False  # the prompt already opened <think>: the output starts inside it
    _state: Literal["start", "reasoning", "content"] = "start"
    _buffer: str = ""
    _after_open: bool = field(default=False)  # newlines right after <think> are not reasoning
    _after_close: bool = field(default=False)  # newlines right after </think> are not content

    def __post_init__(self) -> None:
        if self.opened:
            self._state, self._after_open = "reasoning", True

    def feed(self, text: str) -> tuple[str, str]:
        """The reasoning and the content that ``text`` (the next piece of output) completes."""
        self._buffer += text
        reasoning = content = ""
        if self._state == "start":
            head = self._buffer.lstrip()
            if head.startswith(THINK_OPEN):
                self._state, self._buffer = "reasoning", head[len(THINK_OPEN) :]
                self._after_open = True
            elif THINK_OPEN.startswith(head):
                return "", ""  # only whitespace or a partial tag so far
            else:
                self._state = "content"
        if self._state == "reasoning":
            if self._after_open:
                self._buffer = self._buffer.lstrip("\n")
                self._after_open = not self._buffer
            end = self._buffer.find(THINK_CLOSE)
            if end < 0:
                keep = _partial_suffix(self._buffer, THINK_CLOSE)
                reasoning = self._buffer[: len(self._buffer) - keep]
                self._buffer = self._buffer[len(reasoning) :]
                return reasoning, ""
            reasoning = self._buffer[:end]
            self._state, self._after_close = "content", True
            self._buffer = self._buffer[end + len(THINK_CLOSE) :]
        if self._after_close:
            self._buffer = self._buffer.lstrip("\n")
            self._after_close = not self._buffer
        content, self._buffer = self._buffer, ""
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What is held back at the end: unclosed thinking (cut short) stays reasoning."""
        rest, self._buffer = self._buffer, ""
        if self._state == "reasoning":
            return rest, ""
        return "", rest


def split_reasoning(text: str, *, opened: bool = False) -> tuple[str, str]:
    """A whole answer as (reasoning, content); ``opened``: the prompt opened ``<think>``."""
    split = ReasoningSplit(opened=opened)
    reasoning, content = split.feed(text)
    more_reasoning, more_content = split.finish()
    return reasoning + more_reasoning, content + more_content
