"""Reading tool calls out of generated text, all at once or as it streams.

A call is ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. Text outside call blocks
is the message content. A block that is not valid JSON of that shape stays content, so nothing
the model wrote is lost.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from server.chat.tools.spec import CALL_CLOSE, CALL_OPEN, ToolCall

_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.S)
_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*', re.S)


def new_call_id() -> str:
    """An OpenAI-style call id."""
    return f"call_{uuid.uuid4().hex[:24]}"


def _parse_block(body: str) -> tuple[str, str] | None:
    try:
        value: Any = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return value["name"], json.dumps(arguments, ensure_ascii=False)


@dataclass(frozen=True)
class ParsedOutput:
    """Generated text split into content and tool calls."""

    content: str
    calls: list[ToolCall]


def parse_output(text: str, *, prefill: str = "") -> ParsedOutput:
    """Split a finished generation into its text content and its tool calls.

    ``prefill`` is the start of a forced call that the prompt held (it was not generated): it is
    read as the output's start, and a forced output holding no complete call (cut by
    ``max_tokens``) has no content either: what the model wrote was the unfinished call.
    """
    if prefill:
        whole = parse_output(prefill + text)
        return whole if whole.calls else ParsedOutput("", [])
    calls: list[ToolCall] = []
    content: list[str] = []
    position = 0
    for match in _BLOCK.finditer(text):
        parsed = _parse_block(match.group(1))
        if parsed is None:
            continue
        content.append(text[position : match.start()])
        position = match.end()
        calls.append(ToolCall(new_call_id(), *parsed))
    content.append(text[position:])
    return ParsedOutput("".join(content).strip() if calls else "".join(content), calls)


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
class _ArgumentsScanner:
    """Tracks JSON nesting so the end of the arguments object is known without parsing."""

    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    started: bool = False

    def feed(self, text: str) -> int | None:
        """Consume ``text``; the offset just past the arguments' closing brace, if reached."""
        for offset, char in enumerate(text):
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                continue
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
                self.started = True
            elif char in "}]":
                self.depth -= 1
                if self.started and self.depth == 0:
                    return offset + 1
        return None


@dataclass
class ToolCallStream:
    """Turns streamed text into content deltas and OpenAI-style tool-call deltas.

    Text that might be the start of a call marker is held back until it is known not to be.
    Inside a call, the function name is reported once it is complete, then the arguments are
    passed on as they arrive. ``finish()`` returns what is left and the parsed calls.
    """

    _buffer: str = ""
    _in_call: bool = False
    _args: _ArgumentsScanner | None = None
    _args_done: bool = False
    _count: int = 0
    calls: list[ToolCall] = field(default_factory=list)
    _current: tuple[str, str] | None = None  # id, name
    _arguments: list[str] = field(default_factory=list)
    _after_call: bool = False  # newlines right after a call's end are separators, not content
    prefill: str = ""  # a forced call's start, in the prompt: ``start()`` reads it

    def start(self) -> list[StreamItem]:
        """Items for the prefill, read as if generated (a named call starts at once)."""
        return self.feed(self.prefill) if self.prefill else []

    def feed(self, text: str) -> list[StreamItem]:
        """Items for ``text``, the next piece of generated output."""
        self._buffer += text
        items: list[StreamItem] = []
        while True:
            before = (self._buffer, self._in_call, self._args_done)
            if not self._in_call:
                self._scan_content(items)
            else:
                self._scan_call(items)
            if (self._buffer, self._in_call, self._args_done) == before:
                return items

    def _scan_content(self, items: list[StreamItem]) -> None:
        if self._after_call:
            self._buffer = self._buffer.lstrip("\n")
            self._after_call = not self._buffer
        start = self._buffer.find(CALL_OPEN)
        if start >= 0:
            if self._buffer[:start]:
                items.append(ContentDelta(self._buffer[:start]))
            self._buffer = self._buffer[start + len(CALL_OPEN) :]
            self._in_call, self._args, self._args_done = True, None, False
            return
        keep = _partial_marker_length(self._buffer, CALL_OPEN)
        ready = self._buffer[: len(self._buffer) - keep]
        if ready:
            items.append(ContentDelta(ready))
            self._buffer = self._buffer[len(ready) :]

    def _scan_call(self, items: list[StreamItem]) -> None:
        if self._args is None:
            head = _HEAD.match(self._buffer)
            if head is None:
                return
            name = json.loads(f'"{head.group(1)}"')
            call_id = new_call_id()
            self._current = (call_id, name)
            self._arguments = []
            items.append(CallStart(self._count, call_id, name))
            self._buffer = self._buffer[head.end() :]
            self._args = _ArgumentsScanner()
        if not self._args_done:
            end = self._args.feed(self._buffer)
            piece = self._buffer if end is None else self._buffer[:end]
            if piece:
                items.append(ArgumentsDelta(self._count, piece))
                self._arguments.append(piece)
            self._buffer = self._buffer[len(piece) :]
            if end is None:
                return
            self._args_done = True
        close = self._buffer.find(CALL_CLOSE)
        if close < 0:
            return
        self._close_call()
        self._buffer = self._buffer[close + len(CALL_CLOSE) :]
        self._after_call = True

    def _close_call(self) -> None:
        assert self._current is not None
        call_id, name = self._current
        arguments = "".join(self._arguments)
        # Cut short (max_tokens): pass on what was generated, unnormalized.
        with contextlib.suppress(json.JSONDecodeError):
            arguments = json.dumps(json.loads(arguments), ensure_ascii=False)
        self.calls.append(ToolCall(call_id, name, arguments))
        self._count += 1
        self._in_call, self._args, self._args_done, self._current = False, None, False, None

    def finish(self) -> list[StreamItem]:
        """Flush held-back text at the end of the generation."""
        items: list[StreamItem] = []
        if self._in_call and self._current is not None:
            self._close_call()
        elif self._in_call and not self.prefill:  # a marker not followed by a call: it was text
            items.append(ContentDelta(CALL_OPEN + self._buffer))
        elif self._buffer:
            items.append(ContentDelta(self._buffer))
        self._buffer = ""
        return items


def _partial_marker_length(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0
