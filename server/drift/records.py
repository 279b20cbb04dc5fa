"""Observations from JSON Lines: a file of reference questions, or exported interactions.

A line is a JSON object with the question under ``question`` (or ``query``); the output
fields are optional, so a plain list of questions feeds the embedding signal alone:

    {"question": "How do I reset the pump?"}
    {"question": "...", "finish_reason": "stop", "answer_tokens": 84, "top_score": 0.61,
     "no_context": false, "route": "ask", "at": 1764460000.0}

Chat-format records (``{"messages": [...]}``, as ``ggserve feedback export`` writes) are read
too: the question is the last user message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

from server.drift.observation import Observation, observation

# A reference file is read into memory whole; beyond this a line is certainly not a question.
MAX_LINE_BYTES = 64 * 1024


class RecordError(ValueError):
    """A line of a records file cannot be used; the message names the file and line."""


def _number(record: dict[str, object], name: str, where: str) -> float | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"{where}: '{name}' must be a finite number, got {value!r:.40}")
    return float(value)


def _count(record: dict[str, object], name: str, where: str) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{where}: '{name}' must be a non-negative integer, got {value!r:.40}")
    return value


def _text(record: dict[str, object], name: str, where: str, default: str) -> str:
    value = record.get(name, default)
    if not isinstance(value, str) or len(value) > 64:
        raise RecordError(f"{where}: '{name}' must be a short string, got {value!r:.40}")
    return value


def _flag(record: dict[str, object], name: str, where: str) -> bool | None:
    value = record.get(name)
    if value is not None and not isinstance(value, bool):
        raise RecordError(f"{where}: '{name}' must be true or false, got {value!r:.40}")
    return value


def _last_user_message(messages: list[object]) -> object:
    """The question of a chat-format record (``ggserve feedback export`` writes these)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message.get("content")
    return None


def parse_record(line: str, where: str) -> Observation:
    """One JSON line as an :class:`Observation`; :class:`RecordError` says what is wrong."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{where}: not JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(record).__name__}")
    question = record.get("question", record.get("query"))
    if question is None and isinstance(record.get("messages"), list):
        question = _last_user_message(record["messages"])
    if not isinstance(question, str) or not question.strip():
        raise RecordError(f"{where}: needs a non-empty string 'question' (or user 'messages')")
    tokens = _count(record, "answer_tokens", where)
    if tokens is None:
        tokens = _count(record, "completion_tokens", where) or 0
    return observation(
        at=_number(record, "at", where) or 0.0,
        route=_text(record, "route", where, "ask"),
        query=question,
        finish_reason=_text(record, "finish_reason", where, "stop"),
        answer_tokens=tokens,
        top_score=_number(record, "top_score", where),
        no_context=_flag(record, "no_context", where),
    )


def iter_records(path: Path) -> Iterator[Observation]:
    """The observations of a JSON Lines file, in order; blank lines are skipped."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            if len(raw) > MAX_LINE_BYTES:
                raise RecordError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise RecordError(f"{where}: not valid UTF-8 ({exc.reason})") from exc
            if line.strip():
                yield parse_record(line, where)


def read_records(path: Path, limit: int | None = None) -> list[Observation]:
    """Up to ``limit`` observations from ``path`` (all when None)."""
    out: list[Observation] = []
    for item in iter_records(path):
        if limit is not None and len(out) >= limit:
            break
        out.append(item)
    return out
