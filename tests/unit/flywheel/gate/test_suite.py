"""Eval suites: the export's eval split, {question, expected} rows, and malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.gate.suite import SuiteError, load_suite


def _suite(tmp_path: Path, *rows: object) -> Path:
    path = tmp_path / "facts.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return path


def test_exported_rows_use_the_assistant_target_and_rag_rows_the_fact(tmp_path: Path) -> None:
    path = _suite(
        tmp_path,
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Who painted it?"},
                {"role": "assistant", "content": "Marisol Quenby."},
            ]
        },
        {"question": "How fast?", "fact": "2,400"},
        {"question": "Capital?", "expected": ["Paris", "París"]},
    )
    items = load_suite(path)
    assert [i.suite for i in items] == ["facts"] * 3
    assert items[0].messages[-1] == {"role": "user", "content": "Who painted it?"}
    assert items[0].expected == ("Marisol Quenby.",)
    assert items[0].passes("It was painted by  MARISOL quenby!")
    assert not items[0].passes("It was painted by Vincent van Gogh.")
    assert items[1].passes("It moves 2,400 litres an hour.")
    assert items[2].passes("París, of course")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("nope", "not JSON"),
        ("[]", "not a JSON object"),
        ({"prompt": "x"}, "no 'messages' or 'question'"),
        ({"question": "Q?"}, "no expected text"),
        ({"question": "Q?", "expected": ""}, "expected text is empty"),
        ({"question": "Q?", "expected": 3}, "must be a string"),
        ({"question": 3, "expected": "x"}, "no 'messages' or 'question'"),
        ({"messages": [{"role": "system", "content": "S"}], "expected": "x"}, "no user message"),
        ({"messages": [{"role": "tool", "content": "S"}]}, "role system/user/assistant"),
        ({"question": "Q" * 9000, "expected": "x"}, "limit"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path: Path, row: object, message: str) -> None:
    good = {"question": "Q?", "expected": "A"}
    with pytest.raises(SuiteError, match=r"facts\.jsonl line 2") as error:
        load_suite(_suite(tmp_path, good, row if isinstance(row, str) else json.dumps(row)))
    assert message in str(error.value)


def test_missing_empty_and_non_utf8_suites_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(tmp_path / "absent.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(SuiteError, match="no items"):
        load_suite(tmp_path / "empty.jsonl")
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe{}")
    with pytest.raises(SuiteError, match="not UTF-8"):
        load_suite(tmp_path / "bin.jsonl")
