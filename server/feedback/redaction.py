"""Scrub personal data and secrets from text before it is stored.

What is replaced (in this order, so a key that contains digits is not half-read as a phone):

- ``[SECRET]``: strings that look like credentials — PEM private-key blocks; the value of an
  ``Authorization:`` header (any scheme); the value after a credential-named field
  (``password=…``, ``"password": "…"``, ``api_key: …``, ``aws_secret_access_key = …``,
  ``AccountKey=…``); ``Basic <base64 of user:pass>``; ``Bearer <token>``; JWTs
  (``eyJ….….…``); prefixed keys holding digits (``sk-``, ``ggs-``, ``ghp_``, ``xox?-``,
  ``hf_``…, ``AKIA…``/``ASIA…``, Google ``AIza…``); base64 runs of 40+ characters mixing
  upper case, lower case and digits (AWS secret access keys, Azure account keys); and any run
  of 32+ letters/digits/``_-`` mixing letters and digits (digests, random tokens);
- ``[EMAIL]``: ``local@domain.tld``, Unicode local parts and internationalized domains
  included (``josé@correo.españa``, ``xn--…`` labels);
- ``[IBAN]``: an IBAN, compact or grouped in fours, whose ISO 7064 check digits are right
  (the check keeps product codes of the same shape);
- ``[CARD]``: 13–19 digits, optionally grouped by spaces, dashes, dots or slashes (dots and
  slashes only in groups of 4–6, so versions and dates stay; no Luhn check, since a mistyped
  card number is still one);
- ``[PHONE]``: 9–15 digits with an optional leading ``+`` and spaces, dots, dashes or
  parentheses between them (dates such as ``2026-11-29`` have 8 digits and stay).

It errs on the side of privacy: an order number of 9+ digits is removed too.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

_PEM = re.compile(
    r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----[A-Za-z0-9+/=\s:,]{0,10000}?"
    r"-----END [A-Z ]{0,40}PRIVATE KEY-----"
)
# "Authorization: Basic dXNlcjpw…", "authorization=Token abc": the whole credential goes.
_AUTH_HEADER = re.compile(
    r"(?i)(\b(?:proxy-)?authorization[\"']?\s{0,5}[:=]\s{0,5}[\"']?)"
    r"(?:[A-Za-z][\w-]{0,20}\s{1,5})?[^\s\"',;]{8,4096}"
)
# A field whose name says it holds a credential; the name and separator stay, the value goes.
_CREDENTIAL_FIELD = re.compile(
    r"(?i)((?<![\w-])[\w-]{0,40}?"
    r"(?:pass(?:word|wd|phrase)|pwd|secret|api[_-]?key|apikey|access[_-]?key|account[_-]?key"
    r"|private[_-]?key|(?:access|refresh|auth|id|session)[_-]?token|credentials?)"
    r"[\"']?\s{0,5}[:=]\s{0,5})"
    r"(\"(?:[^\"\\\n]|\\.){1,1024}\"|'[^'\n]{1,1024}'|[^\s,;&\"'}\])]{1,1024})"
)
_BASIC = re.compile(r"(?i)\bbasic\s+([A-Za-z0-9+/]{8,4096}={0,2})(?![A-Za-z0-9+/=])")
_BEARER = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/=\-]{8,4096})")
_PREFIXED_KEY = re.compile(
    r"\b(?:(?:sk|pk|rk|ggs|ghp|gho|ghs|ghu|github_pat|glpat|hf|xox[abprs])[-_]"
    r"[A-Za-z0-9_\-]{8,}|(?:AKIA|ASIA)[A-Z0-9]{16}|AIza[A-Za-z0-9_\-]{35})\b"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}")
_BASE64_KEY = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{40,}={0,2}(?![A-Za-z0-9+/=])")
_LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{32,}(?![A-Za-z0-9_\-])")
# Bounded repeats (RFC lengths) keep a hostile "aaaa…@@@@" linear instead of quadratic. ``\w``
# is Unicode-aware: accented and non-Latin local parts and domains are emails too.
_EMAIL = re.compile(
    r"(?<![\w.%+\-])[\w.%+\-]{1,64}@"
    r"[\w\-]{1,63}(?:\.[\w\-]{1,63}){0,8}\.(?:[^\W\d_]{2,24}|xn--[A-Za-z0-9\-]{1,59})(?![\w\-])"
)
_IBAN = re.compile(r"(?i)(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
# Cards written with dots or slashes: 3–5 groups of 4–6 digits, one separator throughout.
_GROUPED_CARD = re.compile(r"(?<![\w./\-])\d{4,6}([./])\d{4,6}(?:\1\d{1,6}){1,3}(?![\w]|[./\-]\d)")
# A digit run with optional separators; how many digits it holds decides card, phone or neither.
_NUMBER = re.compile(r"(?<![\w+(])[+(]?\d(?:[\s().\-]{0,2}\d){7,22}(?!\w)")

SECRET, EMAIL, IBAN, CARD, PHONE = "[SECRET]", "[EMAIL]", "[IBAN]", "[CARD]", "[PHONE]"


def _token_like(match: re.Match[str]) -> str:
    text = match.group(0)
    has_letter = any(c.isalpha() for c in text)
    has_digit = any(c.isdigit() for c in text)
    return SECRET if has_letter and has_digit else text


def _credential_value(match: re.Match[str]) -> str:
    return match.group(1) + SECRET


def _basic(match: re.Match[str]) -> str:
    """``Basic <b64>`` only when it decodes to ``user:password`` ("basic understanding" stays)."""
    token = match.group(1)
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        text = decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return match.group(0)
    return SECRET if ":" in text and text.isprintable() else match.group(0)


def _bearer(match: re.Match[str]) -> str:
    """``Bearer <token>`` when the token holds a digit or a symbol ("bearer securities" stays)."""
    token = match.group(1).rstrip(".")  # a sentence's full stop is not part of the token
    return SECRET if any(not c.isalpha() for c in token) else match.group(0)


def _base64_key(match: re.Match[str]) -> str:
    text = match.group(0)
    mixed = (
        any(c.isupper() for c in text)
        and any(c.islower() for c in text)
        and any(c.isdigit() for c in text)
    )
    return SECRET if mixed else text


def _iban_valid(compact: str) -> bool:
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _iban(match: re.Match[str]) -> str:
    """The longest prefix of the match that is a valid IBAN (a trailing word may be caught)."""
    text = match.group(0)
    for end in range(len(text), 14, -1):
        if end < len(text) and text[end] != " ":
            continue  # a cut must fall between groups, not inside one
        if _iban_valid(text[:end].replace(" ", "").upper()):
            return IBAN + text[end:]
    return text


def _grouped_card(match: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in match.group(0))
    return CARD if 13 <= digits <= 19 else match.group(0)


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
    """``text`` with secrets, emails, IBANs, card-like and phone-like numbers replaced."""
    text = _PEM.sub(SECRET, text)
    text = _AUTH_HEADER.sub(_credential_value, text)
    text = _CREDENTIAL_FIELD.sub(_credential_value, text)
    text = _BASIC.sub(_basic, text)
    text = _BEARER.sub(_bearer, text)
    text = _JWT.sub(SECRET, text)
    text = _PREFIXED_KEY.sub(_token_like, text)
    text = _BASE64_KEY.sub(_base64_key, text)
    text = _LONG_TOKEN.sub(_token_like, text)
    text = _EMAIL.sub(EMAIL, text)
    text = _IBAN.sub(_iban, text)
    text = _GROUPED_CARD.sub(_grouped_card, text)
    return _NUMBER.sub(_number, text)


_CREDENTIAL_KEY = re.compile(
    r"(?i)(?:pass(?:word|wd|phrase)|pwd|secret|api[_-]?key|apikey|access[_-]?key"
    r"|account[_-]?key|private[_-]?key|(?:access|refresh|auth|id|session)[_-]?token"
    r"|credentials?|authorization)$"
)


def redact_value(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, scalars); keys stay.

    A string under a credential-named key (``{"password": "…"}``, ``{"api_key": "…"}``) is
    replaced whole: the value alone may look like any word.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            key: SECRET
            if isinstance(key, str) and isinstance(item, str) and _CREDENTIAL_KEY.search(key[-60:])
            else redact_value(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    return value
