"""Eval suites: questions and the text a good answer must contain.

A suite is a JSONL file; each line is one of

- the exported eval split, ``{"messages": [..., {"role": "assistant", "content": TARGET}]}``:
  the messages before the target are the prompt; the target is the expected text unless the
  row also has ``"expected"``;
- ``{"question": "...", "expected": "..."}`` (``"fact"`` is read as ``"expected"`` too, so the
  RAG eval set ``eval/rag/questions.jsonl`` is a suite as it is).

``expected`` may be a list: the answer passes when it contains any of them. Matching ignores
case, repeated whitespace and trailing punctuation.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

MAX_ITEMS = 2_000
MAX_TEXT_CHARS = 8_000

Message = dict[str, str]


class SuiteError(ValueError):
    """A suite file is missing or malformed; the message names the file, line and fix."""


@dataclass(frozen=True)
class EvalItem:
    """One question (as chat messages) and the texts any of which a passing answer contains."""

    suite: str
    messages: list[Message]
    expected: tuple[str, ...]

    @property
    def question(self) -> str:
        """The last user message: what the RAG eval asks."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")

    def passes(self, answer: str) -> bool:
        """True when ``answer`` contains one of the expected texts (normalised)."""
        text = normalise(answer)
        return any(normalise(e) in text for e in self.expected)


def normalise(text: str) -> str:
    """Lower case, single spaces, no trailing sentence punctuation."""
    return re.sub(r"\s+", " ", text).strip().lower().rstrip(".!?;:")


def load_suite(path: Path) -> list[EvalItem]:
    """Every item of the suite at ``path``; SuiteError on the first bad line."""
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise SuiteError(f"suite {path} does not exist") from exc
    except OSError as exc:
        raise SuiteError(f"cannot read suite {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise SuiteError(f"suite {path} is not UTF-8 (byte {exc.start})") from exc
    items: list[EvalItem] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(items) >= MAX_ITEMS:
            raise SuiteError(f"suite {path} has more than {MAX_ITEMS} items")
        items.append(_parse(line, path.stem, f"{path.name} line {number}"))
    if not items:
        raise SuiteError(f"suite {path} has no items")
    return items


def _parse(line: str, suite: str, where: str) -> EvalItem:
    fix = 'each line must be {"messages": [...]} or {"question": "...", "expected": "..."}'
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SuiteError(f"{where}: not JSON ({exc.msg}); {fix}") from exc
    if not isinstance(row, dict):
        raise SuiteError(f"{where}: not a JSON object; {fix}")
    expected_field = row.get("expected", row.get("fact"))
    if "messages" in row:
        messages = _messages(row["messages"], where)
        if messages[-1]["role"] == "assistant":
            target, messages = messages[-1]["content"], messages[:-1]
            expected_field = expected_field if expected_field is not None else target
    elif isinstance(row.get("question"), str):
        messages = [{"role": "user", "content": _text(row["question"], f"{where}: question")}]
    else:
        raise SuiteError(f"{where}: no 'messages' or 'question'; {fix}")
    if not any(m["role"] == "user" for m in messages):
        raise SuiteError(f"{where}: no user message to ask")
    if expected_field is None:
        raise SuiteError(f'{where}: no expected text (add "expected" or an assistant message)')
    values = expected_field if isinstance(expected_field, list) else [expected_field]
    expected = tuple(_text(v, f"{where}: expected") for v in values)
    if not expected or not all(normalise(e) for e in expected):
        raise SuiteError(f"{where}: the expected text is empty")
    return EvalItem(suite=suite, messages=messages, expected=expected)


def _messages(value: object, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where}: messages must be a non-empty list")
    out: list[Message] = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or item.get("role") not in ("system", "user", "assistant"):
            raise SuiteError(f"{where}: messages[{index}] needs a role system/user/assistant")
        out.append(
            {"role": item["role"], "content": _text(item.get("content"), f"{where}: content")}
        )
    return out


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SuiteError(f"{where} must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise SuiteError(f"{where} is {len(value)} characters (limit {MAX_TEXT_CHARS})")
    return value
