"""What every tool-call format is: how calls are written, found, rendered and constrained.

A model family writes its calls in its own wrapper (``<tool_call>{…}</tool_call>``,
``[TOOL_CALLS][…]``, bare ``{"name": …, "parameters": …}``, DeepSeek's ``<｜tool▁calls▁begin｜>``
blocks). Each family is one ``ToolFormat``: a few literals and three small matchers (a call's
head up to its arguments, its tail after them, what comes between calls). From those, this
module derives everything else the same way for all of them:

- ``scan``: the output read into content and calls, also while it is still being generated
  (text that may still become a wrapper is held back; a call is reported as soon as its name
  is known, its arguments as they arrive); whole-output parsing and streaming are the same
  scan, so they cannot disagree;
- ``grammar``: GBNF for one call (or several) in the family's canonical text, arguments
  constrained by each tool's parameter schema;
- ``prefill`` / ``trigger``: the known start of a forced call, and the lazy-grammar marker
  for ``auto``.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from server.chat.json_grammar import GRAMMAR_CACHE_SIZE, JsonConverter
from server.chat.tools.spec import ToolSpec, ToolSpecError
from server.engine.types import GrammarTrigger


class _Partial:
    """The text ends where a match could still succeed: wait for more."""

    def __repr__(self) -> str:
        return "PARTIAL"


PARTIAL: Final = _Partial()
# A matcher's answer: the position after the match, PARTIAL, or None (it cannot match).
Match = int | _Partial | None

_SCHEMA_ERRORS = (AssertionError, KeyError, ValueError, TypeError, IndexError, RecursionError)
_NAME_LIMIT = 64  # tool names are 1-64 characters (spec.check_tools)


def skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def literal(text: str, pos: int, expected: str, *, space: bool = True) -> Match:
    """``expected`` at ``pos`` (after optional whitespace): the end, PARTIAL or None."""
    if space:
        pos = skip_space(text, pos)
    rest = text[pos : pos + len(expected)]
    if rest == expected:
        return pos + len(expected)
    return PARTIAL if expected.startswith(rest) else None


def json_string(text: str, pos: int) -> tuple[str, int] | _Partial | None:
    """A JSON string at ``pos`` (after whitespace): (value, end), PARTIAL or None."""
    pos = skip_space(text, pos)
    if pos >= len(text):
        return PARTIAL
    if text[pos] != '"':
        return None
    end, escaped = pos + 1, False
    while end < len(text):
        char = text[end]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            try:
                return json.loads(text[pos : end + 1]), end + 1
            except json.JSONDecodeError:
                return None
        elif char < " ":
            return None
        end += 1
    return PARTIAL if end - pos <= _NAME_LIMIT + 16 else None


@dataclass(frozen=True)
class Head:
    """A call's head matched: the function name and where its arguments start."""

    name: str
    end: int


HeadMatch = Head | _Partial | None


def json_head(text: str, pos: int, argument_keys: tuple[str, ...]) -> HeadMatch:
    """``{"name": "<name>", "<argument key>": `` (whitespace-tolerant), as written by the
    Hermes, Qwen, Llama and Mistral families."""
    step = literal(text, pos, "{")
    if not isinstance(step, int):
        return step
    key = json_string(text, step)
    if not isinstance(key, tuple):
        return _partial_key(text, step, ("name",)) if key is PARTIAL else None
    if key[0] != "name":
        return None
    step = literal(text, key[1], ":")
    if not isinstance(step, int):
        return step
    name = json_string(text, step)
    if not isinstance(name, tuple):
        return name
    step = literal(text, name[1], ",")
    if not isinstance(step, int):
        return step
    key = json_string(text, step)
    if not isinstance(key, tuple):
        return _partial_key(text, step, argument_keys) if key is PARTIAL else None
    if key[0] not in argument_keys:
        return None
    step = literal(text, key[1], ":")
    if not isinstance(step, int):
        return step
    start = skip_space(text, step)
    if start >= len(text):
        return PARTIAL
    return Head(name[0], start) if text[start] == "{" else None


def _partial_key(text: str, pos: int, keys: tuple[str, ...]) -> _Partial | None:
    """An unfinished JSON key at ``pos`` is PARTIAL only if it may still become one of
    ``keys``."""
    rest = text[skip_space(text, pos) :]
    return PARTIAL if any(f'"{key}"'.startswith(rest) for key in keys) else None


def json_object_end(text: str, pos: int) -> int | None:
    """The offset just past the JSON object that starts at ``pos`` (None: not closed yet)."""
    depth, in_string, escaped = 0, False, False
    for offset in range(pos, len(text)):
        char = text[offset]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return offset + 1
    return None


@dataclass(frozen=True)
class ScannedCall:
    """A call found in the output; ``arguments`` is the raw JSON text so far."""

    name: str
    arguments: str
    done: bool  # the arguments object is complete


@dataclass(frozen=True)
class Scan:
    """Output read so far: the content that is certain, and the calls."""

    content: str
    calls: tuple[ScannedCall, ...]


Between = tuple[Literal["more", "end"], int] | _Partial | None


class ToolFormat:
    """One family's tool-call format. Subclasses set the literals and the matchers.

    Canonical text of ``n`` calls (what the grammar allows)::

        section_open  call_open head(t1) <args> call_close  separator  call_open head(t2) …
        section_close
    """

    name: ClassVar[str]
    # Whether the family's chat template renders ``tools`` itself (else: the generic preamble).
    native: ClassVar[bool] = True
    # Where a section of calls starts in free text (the lazy grammar's trigger is the first).
    markers: ClassVar[tuple[str, ...]]
    section_open: ClassVar[str] = ""
    call_open: ClassVar[str] = ""
    call_close: ClassVar[str] = ""
    separator: ClassVar[str | None] = "\n"  # None: one call per answer
    section_close: ClassVar[str] = ""
    # A section may also start, without a marker, at the very start of the output.
    bare_start: ClassVar[bool] = False
    thinks: ClassVar[bool] = False  # the family writes <think>…</think> first
    # Texts of the family's special (control) tokens the parser must see in the output. The
    # engine renders control tokens as "" except those a request lists as preserved (as
    # llama.cpp's server does); chat_request lists these while a request parses tool calls.
    preserved: ClassVar[tuple[str, ...]] = ()

    # A format has no state: two of the same family are the same format (and one cache key).
    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    # -- detection and rendering ---------------------------------------------------------

    @classmethod
    def detect(cls, template_source: str) -> bool:
        """Whether a chat template is this family's."""
        raise NotImplementedError

    def render_messages(self, messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Messages as this family's template wants them (assistant calls, tool results)."""
        return [native_message(m) for m in messages]

    # -- the canonical text ----------------------------------------------------------------

    def head(self, tool: ToolSpec) -> str:
        """The text of a call to ``tool`` from after ``call_open`` up to its arguments."""
        raise NotImplementedError

    def call_text(self, name: str, arguments: str) -> str:
        """One whole call in canonical form (``arguments``: JSON text of an object)."""
        return self.call_open + self.head(ToolSpec(name)) + arguments + self.call_close

    def calls_text(self, calls: Sequence[tuple[str, str]]) -> str:
        """A whole answer holding ``calls`` (name, arguments JSON) in canonical form."""
        sep = self.separator if self.separator is not None else ""
        body = sep.join(self.call_text(name, arguments) for name, arguments in calls)
        return self.section_open + body + self.section_close

    # -- matchers (whitespace-tolerant: unconstrained models vary) ---------------------------

    def match_section_open(self, text: str, pos: int) -> Match:
        """What follows a marker before the first call (e.g. Mistral's ``[``)."""
        return pos

    def match_head(self, text: str, pos: int) -> HeadMatch:
        raise NotImplementedError

    def match_tail(self, text: str, pos: int) -> Match:
        """What follows a call's arguments object."""
        raise NotImplementedError

    def match_between(self, text: str, pos: int) -> Between:
        """After a call: another call follows ("more") or the section ends ("end")."""
        return ("end", pos)

    # -- reading output ------------------------------------------------------------------------

    def _find_marker(self, text: str, pos: int) -> tuple[int, int] | None:
        found = [(i, i + len(m)) for m in self.markers if (i := text.find(m, pos)) >= 0]
        return min(found) if found else None

    def _held_marker_prefix(self, text: str, pos: int) -> int:
        """Length of the end of ``text`` that may still become a marker."""
        longest = 0
        for marker in self.markers:
            for length in range(min(len(marker) - 1, len(text) - pos), 0, -1):
                if text.endswith(marker[:length]):
                    longest = max(longest, length)
                    break
        return longest

    def scan(self, text: str, *, final: bool) -> Scan:
        """Content and calls in ``text`` (``final``: nothing more will come)."""
        content: list[str] = []
        calls: list[ScannedCall] = []
        pos = 0
        if self.bare_start:
            start = skip_space(text, 0)
            section = self._scan_section(text, start, calls, final)
            if section is PARTIAL:
                return Scan("", tuple(calls))
            if isinstance(section, int):
                pos = _skip_newlines(text, section)
        while True:
            found = self._find_marker(text, pos)
            if found is None:
                keep = 0 if final else self._held_marker_prefix(text, pos)
                content.append(text[pos : len(text) - keep])
                break
            start, after = found
            content.append(text[pos:start])
            opened = self.match_section_open(text, after)
            section = (
                self._scan_section(text, opened, calls, final)
                if isinstance(opened, int)
                else opened
            )
            if section is PARTIAL and not final:
                break  # hold everything from the marker on
            if not isinstance(section, int):  # not a call after all: the marker was text
                after = max(after, start + 1)
                content.append(text[start:after])
                pos = after
                continue
            pos = _skip_newlines(text, section)
        return Scan("".join(content), tuple(calls))

    def _scan_section(
        self, text: str, pos: int, calls: list[ScannedCall], final: bool
    ) -> int | _Partial | None:
        """Calls from ``pos``: the end of the section, PARTIAL (wait; or a call is cut off at
        the end of the text) or None (no call here)."""
        first = True
        while True:
            head = self.match_head(text, pos)
            if head is PARTIAL:  # a call is starting; at the end, it was cut off: no content
                return PARTIAL if not final else len(text)
            if not isinstance(head, Head):
                return None if first else pos  # no call here / the section ends
            first = False
            end = json_object_end(text, head.end)
            if end is None:  # arguments still coming (or cut off by the budget)
                calls.append(ScannedCall(head.name, text[head.end :], False))
                return PARTIAL if not final else len(text)
            arguments = text[head.end : end]
            tail = self.match_tail(text, end)
            if tail is PARTIAL and not final:
                calls.append(ScannedCall(head.name, arguments, False))
                return PARTIAL
            # The arguments are whole: the call is, whatever happened to its closing wrapper.
            calls.append(ScannedCall(head.name, arguments, True))
            if not isinstance(tail, int):
                return end if tail is None else len(text)
            between = self.match_between(text, tail)
            if not isinstance(between, tuple):
                return PARTIAL if between is PARTIAL and not final else tail
            kind, pos = between
            if kind == "end":
                return pos

    # -- constraining output -------------------------------------------------------------------

    def prefill(self, tools: Sequence[ToolSpec], named: bool) -> str:
        """The known start of a forced call: the wrapper and the head up to the name, plus
        the name itself when ``named`` (``required`` picks it under the grammar)."""
        before_name = _common_prefix([self.head(ToolSpec("a")), self.head(ToolSpec("b"))])
        known = self.head(tools[0]) if named else before_name
        return self.section_open + self.call_open + known

    def trigger(self, tools: Sequence[ToolSpec]) -> GrammarTrigger:
        """The lazy grammar for ``auto``: it applies once the model writes the first marker."""
        opening = self.section_open + self.call_open
        heads = tuple(opening + self.head(tool) for tool in tools)
        marker = self.markers[0]
        if not all(head.startswith(marker) for head in heads):
            raise ValueError(f"{self.name}: the trigger {marker!r} does not open its calls")
        return GrammarTrigger(marker, heads)

    def grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, prefill: str = "") -> str:
        """GBNF for one call (or, with ``parallel``, one or more) to any of ``tools``.

        ``prefill`` is the start of the first call, already in the prompt; the grammar covers
        only the rest. Raises ``ToolSpecError`` naming a tool whose schema cannot become one.
        Memoized (an LRU keyed by the family and the tools' canonical JSON), as agents send
        the same tools with every request.
        """
        try:
            key = json.dumps(
                [[t.name, t.description, t.parameters] for t in tools],
                allow_nan=False,
                sort_keys=True,
            )
        except (TypeError, ValueError):  # not plain JSON: the uncached path says why
            return self._grammar(tools, parallel=parallel, prefill=prefill)
        return _cached_grammar(self, key, parallel, prefill)

    def _grammar(self, tools: Sequence[ToolSpec], *, parallel: bool, prefill: str) -> str:
        if not tools:
            raise ValueError("a call grammar needs at least one tool")
        opening = self.section_open + self.call_open
        if prefill and not prefill.startswith(opening):
            raise ValueError(f"a {self.name} call prefill starts with {opening!r}")
        known = prefill[len(opening) :]
        converter = JsonConverter()
        alternatives: list[str] = []
        firsts: list[str] = []
        close = _literal(self.call_close) if self.call_close else ""
        for index, tool in enumerate(tools):
            arguments = _arguments_rule(converter, tool, index)
            head = self.head(tool)
            alternatives.append(
                converter._add_rule(
                    f"{tool.name}-call", f"{_literal(head)} {arguments} {close}".strip()
                )
            )
            if head.startswith(known):
                rest = head[len(known) :]
                firsts.append(f"{_literal(rest) if rest else ''} {arguments} {close}".strip())
        if not firsts:
            raise ValueError(f"no tool's call starts with the prefill {prefill!r}")
        call_open = f"{_literal(self.call_open)} " if self.call_open else ""
        lines = [
            f"tool-call ::= {call_open}( {' | '.join(alternatives)} )",
            converter.format_grammar(),
        ]
        first = "tool-call"
        if prefill:
            first = "first-call"
            lines.insert(0, f"first-call ::= ( {' | '.join(firsts)} )")
        body = first
        if parallel and self.separator is not None:
            body = f"{first} ( {_literal(self.separator)} tool-call )*"
        if self.section_open and not prefill:
            body = f"{_literal(self.section_open)} {body}"
        if self.section_close:
            body = f"{body} {_literal(self.section_close)}"
        return "\n".join((f"root ::= {body}", *lines))


@functools.lru_cache(maxsize=GRAMMAR_CACHE_SIZE)
def _cached_grammar(fmt: ToolFormat, key: str, parallel: bool, prefill: str) -> str:
    tools = [
        ToolSpec(name, description, parameters) for name, description, parameters in json.loads(key)
    ]
    return fmt._grammar(tools, parallel=parallel, prefill=prefill)


def _literal(text: str) -> str:
    """A GBNF string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def _common_prefix(texts: Sequence[str]) -> str:
    first, last = min(texts), max(texts)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


def _skip_newlines(text: str, pos: int) -> int:
    """Newlines right after a section separate it from what follows; they are not content."""
    while pos < len(text) and text[pos] in "\r\n":
        pos += 1
    return pos


def _arguments_rule(converter: JsonConverter, tool: ToolSpec, index: int) -> str:
    try:
        # Round-trip through JSON: the converter rewrites $refs in place, and the schema must
        # be plain JSON (no NaN, no non-string keys) to be shown to the model anyway.
        schema: dict[str, Any] = json.loads(json.dumps(tool.parameters, allow_nan=False))
        resolved = converter.resolve_refs(schema, f"tool{index}")
        return str(converter.visit(resolved, f"{tool.name}-arguments"))
    except _SCHEMA_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise ToolSpecError(
            f"Tool {tool.name!r}: its parameters schema cannot be turned into a grammar "
            f"({detail}). Use standard JSON Schema keywords (type, properties, required, "
            "items, enum, const, anyOf, $ref to #/$defs).",
            f"tools[{index}].function.parameters",
        ) from exc


def call_parts(call: Mapping[str, Any]) -> tuple[str, str]:
    """(name, arguments JSON text) of an OpenAI-shaped call in a request's history."""
    function = call.get("function") or {}
    return str(function.get("name", "")), str(function.get("arguments") or "")


def native_message(
    message: Mapping[str, Any], *, arguments_as_text: bool = False
) -> dict[str, Any]:
    """A message for a template that renders tool calls itself.

    Most templates read ``call.function.arguments`` as a mapping (``| tojson``, ``.items()``);
    some (DeepSeek's) concatenate it as text: ``arguments_as_text``.
    """
    copy = dict(message)
    copy["content"] = copy.get("content") or ""
    if copy.get("tool_calls"):
        calls = []
        for call in copy["tool_calls"]:
            name, arguments = call_parts(call)
            parsed: Any = arguments or "{}"
            if not arguments_as_text:
                with contextlib.suppress(json.JSONDecodeError):
                    parsed = json.loads(parsed)
            calls.append(
                {
                    "id": call.get("id"),
                    "type": "function",
                    "function": {"name": name, "arguments": parsed},
                }
            )
        copy["tool_calls"] = calls
    return copy
