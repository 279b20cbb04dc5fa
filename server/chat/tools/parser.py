"""Reading tool calls out of generated text, all at once or as it streams.

What a call looks like depends on the model family (``formats``); both readers here use the
family's ``scan``, so a streamed answer and the same answer read whole always agree. A wrapper
that turns out not to hold a call stays content, so nothing the model wrote is lost; a call that
has begun is never content, even when the budget cuts it off.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from server.chat.tools.formats import HERMES, ToolFormat
from server.chat.tools.formats.base import ScannedCall
from server.chat.tools.spec import ToolCall


def new_call_id() -> str:
    """An OpenAI-style call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _normalized(arguments: str) -> str | None:
    """The arguments re-serialized, or None unless they are a JSON object."""
    try:
        value = json.loads(arguments)
    except json.JSONDecodeError:
        return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


@dataclass(frozen=True)
class ParsedOutput:
    """Generated text split into content and tool calls."""

    content: str
    calls: list[ToolCall]


def parse_output(text: str, *, prefill: str = "", fmt: ToolFormat = HERMES) -> ParsedOutput:
    """Split a finished generation into its text content and its whole tool calls.

    ``prefill`` is the start of a forced call that the prompt held (it was not generated): it is
    read as the output's start, and a forced output has no content: what the model wrote was
    the call (cut by ``max_tokens``, it is no call at all).
    """
    scan = fmt.scan(prefill + text, final=True)
    calls = [
        ToolCall(new_call_id(), call.name, arguments)
        for call in scan.calls
        if call.done and (arguments := _normalized(call.arguments)) is not None
    ]
    if prefill:
        return ParsedOutput("", calls)
    return ParsedOutput(scan.content.strip() if scan.calls else scan.content, calls)


@dataclass(frozen=True)
class ContentDelta:
    text: str


@dataclass(frozen=True)
class CallStart:
    """A call begins: its index among the message's calls, id and function name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsDelta:
    index: int
    text: str


StreamItem = ContentDelta | CallStart | ArgumentsDelta


@dataclass
class ToolCallStream:
    """Turns streamed text into content deltas and OpenAI-style tool-call deltas.

    Each piece re-reads the output so far with the family's scan and sends what is new: text
    that might still become a wrapper is held back until it is known not to be; a call is
    announced once its name is complete, then its arguments are passed on as they arrive.
    ``finish()`` returns what is left; ``calls`` then holds the calls (a call cut short keeps
    the arguments generated so far).
    """

    fmt: ToolFormat = field(default_factory=lambda: HERMES)
    prefill: str = ""  # a forced call's start, in the prompt: ``start()`` reads it
    calls: list[ToolCall] = field(default_factory=list)
    _text: str = ""
    _content_sent: int = 0
    _ids: list[str] = field(default_factory=list)
    _arguments_sent: list[int] = field(default_factory=list)

    def start(self) -> list[StreamItem]:
        """Items for the prefill, read as if generated (a named call starts at once)."""
        return self.feed("") if self.prefill else []

    def feed(self, text: str) -> list[StreamItem]:
        """Items for ``text``, the next piece of generated output."""
        self._text += text
        return self._emit(final=False)

    def finish(self) -> list[StreamItem]:
        """Flush held-back text at the end of the generation."""
        items = self._emit(final=True)
        scanned = self.fmt.scan(self.prefill + self._text, final=True).calls
        self.calls = [
            ToolCall(call_id, call.name, _normalized(call.arguments) or call.arguments)
            for call_id, call in zip(self._ids, scanned, strict=False)
        ]
        return items

    def _emit(self, *, final: bool) -> list[StreamItem]:
        scan = self.fmt.scan(self.prefill + self._text, final=final)
        items: list[StreamItem] = []
        content = "" if self.prefill else scan.content
        if len(content) > self._content_sent:
            items.append(ContentDelta(content[self._content_sent :]))
            self._content_sent = len(content)
        for index, call in enumerate(scan.calls):
            items += self._call_items(index, call)
        return items

    def _call_items(self, index: int, call: ScannedCall) -> list[StreamItem]:
        items: list[StreamItem] = []
        if index == len(self._ids):
            self._ids.append(new_call_id())
            self._arguments_sent.append(0)
            items.append(CallStart(index, self._ids[index], call.name))
        sent = self._arguments_sent[index]
        if len(call.arguments) > sent:
            items.append(ArgumentsDelta(index, call.arguments[sent:]))
            self._arguments_sent[index] = len(call.arguments)
        return items
