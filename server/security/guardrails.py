"""Guardrails: a configurable policy of blocked topics checked on input and on output.

The policy file holds one case-insensitive regular expression per line (``#`` comments
allowed), optionally named ``name: regex``. A match on input refuses the request; a match on
output stops the generation. Both end with finish_reason ``content_filter``. Off when unset.

The output is checked as it grows, token by token. Rescanning the whole text at every token
costs O(length²) per generation on the event loop; ``OutputScanner`` scans only the new tail
plus an overlap as long as the longest match a rule can make, and gives the same answer as a
whole-text scan would at every step (tested on random texts and splits). A rule whose match
has no bound (``.*``, ``+``), or that looks ahead or refers back to a group, is still rescanned
whole: write bounded rules (``\\bbomb\\w{0,20}``) to keep the check cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REFUSAL = "I can't help with that request: it touches a topic this service is configured to refuse."


class GuardrailConfigError(ValueError):
    """The policy file is missing or holds an invalid pattern."""


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    # The longest text a match can span, or None when unbounded (or when a lookahead or a
    # backreference makes the matched span a poor guide): then the whole text is rescanned.
    max_width: int | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_width", _max_width(self.pattern))


_UNBOUNDED_WIDTH = 1 << 16  # wider than this is treated as unbounded


def _max_width(pattern: re.Pattern[str]) -> int | None:
    """The longest span a match of ``pattern`` covers, from the regex parser; None when it
    has no useful bound. ``re._parser`` is CPython's own parser (private, so any surprise
    there means "unbounded": correct, only slower)."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        parsed = _parser.parse(pattern.pattern, pattern.flags)
        if _peeks_past_or_back(parsed, _parser):
            return None
        width = int(parsed.getwidth()[1])
    except Exception:
        return None
    return width if width <= _UNBOUNDED_WIDTH else None


def _peeks_past_or_back(node: Any, parser: Any) -> bool:
    """Whether the parsed pattern has a lookahead or a group reference anywhere."""
    lookahead_ops = (parser.ASSERT, parser.ASSERT_NOT)
    groupref_ops = tuple(
        getattr(parser, name)
        for name in (
            "GROUPREF",
            "GROUPREF_EXISTS",
            "GROUPREF_IGNORE",
            "GROUPREF_LOC_IGNORE",
            "GROUPREF_UNI_IGNORE",
        )
        if hasattr(parser, name)
    )
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, parser.SubPattern):
            for op, av in item.data:
                if op in groupref_ops:
                    return True
                if op in lookahead_ops and av[0] == 1:  # direction 1: lookahead
                    return True
                stack.append(av)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return False


class Guardrails:
    """Checks text against the blocked patterns; ``None`` means the text is allowed."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules

    @classmethod
    def from_file(cls, path: Path) -> Guardrails:
        if not path.is_file():
            raise GuardrailConfigError(f"guardrails file {path} does not exist")
        rules: list[Rule] = []
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            name, _, regex = line.partition(": ")
            if not regex:
                name, regex = f"rule{number}", line
            try:
                rules.append(Rule(name.strip(), re.compile(regex, re.IGNORECASE)))
            except re.error as exc:
                raise GuardrailConfigError(f"{path}:{number}: invalid pattern ({exc})") from exc
        return cls(rules)

    def violation(self, text: str) -> str | None:
        """The name of the first rule ``text`` breaks, or None."""
        for rule in self.rules:
            if rule.pattern.search(text):
                return rule.name
        return None

    def output_scanner(self) -> OutputScanner:
        """A scanner for one generated text, fed piece by piece."""
        return OutputScanner(self.rules)


class OutputScanner:
    """The output guardrail for one growing text: ``feed`` each new piece, get the first rule
    the text so far breaks (as ``Guardrails.violation`` on the whole text would say), or None.

    Once no rule matched text[:n], a new match must end at or after n (the pieces before are
    unchanged; a ``\\b`` or ``$`` at n may only now see its next character), so it starts at
    or after n - max_width. The search runs over the whole string from there
    (``pattern.search(text, pos)``), so ``\\b``, ``^`` and lookbehinds still see the
    characters before ``pos``.
    """

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self.text = ""

    def feed(self, piece: str) -> str | None:
        scanned = len(self.text)
        self.text += piece
        if not piece:
            return None
        for rule in self.rules:
            start = 0 if rule.max_width is None else max(0, scanned - rule.max_width)
            if rule.pattern.search(self.text, start):
                return rule.name
        return None
