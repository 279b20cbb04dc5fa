"""Guardrails: a configurable policy of blocked topics checked on input and on output.

The policy file holds one case-insensitive regular expression per line (``#`` comments
allowed), optionally named ``name: regex``. A match on input refuses the request; a match on
output stops the generation. Both end with finish_reason ``content_filter``. Off when unset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REFUSAL = "I can't help with that request: it touches a topic this service is configured to refuse."


class GuardrailConfigError(ValueError):
    """The policy file is missing or holds an invalid pattern."""


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]


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
