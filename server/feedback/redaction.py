"""Scrub personal data and secrets from text before it is stored.

What is replaced (in this order, so a key that contains digits is not half-read as a phone):

- ``[SECRET]``: strings that look like credentials — ``Bearer <token>``, JWTs (``eyJ….….…``),
  prefixed keys holding digits (``sk-``, ``ggs-``, ``ghp_``, ``xox?-``, ``hf_``…, ``AKIA…``),
  and any run of 32+ letters/digits/``_-`` mixing letters and digits (digests, random tokens);
- ``[EMAIL]``: ``local@domain.tld``;
- ``[CARD]``: 13–19 digits, optionally grouped by spaces or dashes (card-like; no Luhn check,
  since a mistyped card number is still one);
- ``[PHONE]``: 9–15 digits with an optional leading ``+`` and spaces, dots, dashes or
  parentheses between them (dates such as ``2026-11-29`` have 8 digits and stay).

It errs on the side of privacy: an order number of 9+ digits is removed too.
"""

from __future__ import annotations

import re
from typing import Any

_PREFIXED_KEY = re.compile(
    r"\b(?:(?:sk|pk|rk|ggs|ghp|gho|ghs|ghu|github_pat|glpat|hf|xox[abprs])[-_]"
    r"[A-Za-z0-9_\-]{8,}|(?:AKIA|ASIA)[A-Z0-9]{16})\b"
)
_BEARER = re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=\-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}")
_LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])")
# Bounded repeats (RFC lengths) keep a hostile "aaaa…@@@@" linear instead of quadratic.
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@"
    r"[A-Za-z0-9\-]{1,63}(?:\.[A-Za-z0-9\-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"
)
# A digit run with optional separators; how many digits it holds decides card, phone or neither.
_NUMBER = re.compile(r"(?<![\w+(])[+(]?\d(?:[\s().\-]{0,2}\d){7,22}(?!\w)")

SECRET, EMAIL, CARD, PHONE = "[SECRET]", "[EMAIL]", "[CARD]", "[PHONE]"


def _token_like(match: re.Match[str]) -> str:
    text = match.group(0)
    has_letter = any(c.isalpha() for c in text)
    has_digit = any(c.isdigit() for c in text)
    return SECRET if has_letter and has_digit else text


def _number(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(c.isdigit() for c in text)
    if text.count(".") == 1 and not any(c in " ()-+" for c in text):
        return text  # a decimal such as 3.14159265358979
    compact = not any(c in "().+" for c in text)
    if 13 <= digits <= 19 and compact:
        return CARD
    if 9 <= digits <= 15:
        return PHONE
    return text


def redact(text: str) -> str:
    """``text`` with secrets, emails, card-like and phone-like numbers replaced by markers."""
    text = _BEARER.sub(SECRET, text)
    text = _JWT.sub(SECRET, text)
    text = _PREFIXED_KEY.sub(_token_like, text)
    text = _LONG_TOKEN.sub(_token_like, text)
    text = _EMAIL.sub(EMAIL, text)
    return _NUMBER.sub(_number, text)


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, scalars); keys stay."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
