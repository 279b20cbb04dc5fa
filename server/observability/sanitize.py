"""Make client-supplied values safe to write into a log line.

A path, header or name a client chose can be huge (filling the disk), or carry newlines and
terminal escapes (forging log records in text logs, corrupting a terminal). Everything a client
controls goes through ``for_log`` before it is logged.
"""

from __future__ import annotations

from server.engine.boundary import encodes_as_utf8

MAX_LOG_VALUE_CHARS = 200


def for_log(value: object, limit: int = MAX_LOG_VALUE_CHARS) -> str:
    """``value`` as printable text of at most ``limit`` characters (plus a truncation mark).

    Control characters (newlines, ESC, NUL...) and lone surrogates become ``\\xNN``/``\\uNNNN``
    escapes, so one value can never span log lines or reach a terminal raw.
    """
    text = value if isinstance(value, str) else str(value)
    extra = len(text) - limit
    text = text[:limit]
    if not text.isprintable() or not encodes_as_utf8(text):
        text = "".join(_escape(char) for char in text)
    return f"{text}...(+{extra} chars)" if extra > 0 else text


def _escape(char: str) -> str:
    if char.isprintable() and encodes_as_utf8(char):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
