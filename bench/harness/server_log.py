"""Read a ggserve log written with ``GGSERVE_LOG_FORMAT=json``: its ERROR records, whole.

The server writes one JSON object per line (``server/observability/logging.py``): ``time``,
``level``, ``message``, ``logger``, the bound fields (``request_id``, …) and, for a record
logged with an exception, ``exception``: the formatted traceback. Lines that are not JSON
(llama.cpp's own output, a crash dump) are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})
# Shown first, in this order; every other field follows as key=value.
_HEAD = ("time", "level", "request_id", "logger", "message", "exception")


def records(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The JSON object of every line that holds one, in order."""
    out: list[dict[str, Any]] = []
    for line in lines:
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def error_records(path: Path) -> list[dict[str, Any]]:
    """The ERROR and CRITICAL records of the log at ``path``."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        return [r for r in records(lines) if r.get("level") in ERROR_LEVELS]


def format_record(record: dict[str, Any]) -> str:
    """One record for a person: a header line, every other field, then the traceback in full."""
    head = " ".join(
        str(record[k]) for k in ("time", "level", "request_id", "logger") if k in record
    )
    lines = [f"{head}: {record.get('message', '')}"]
    lines += [f"    {k}={v!r}" for k, v in record.items() if k not in _HEAD]
    exception = record.get("exception")
    if exception:
        lines += ["    " + line for line in str(exception).rstrip("\n").splitlines()]
    return "\n".join(lines)
