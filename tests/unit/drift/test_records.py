"""Reading observations from JSON Lines: good lines, and every way a line can be bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.drift.observation import MAX_QUERY_CHARS
from server.drift.records import MAX_LINE_BYTES, RecordError, read_records


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "records.jsonl"
    path.write_bytes(data)
    return path


def test_questions_only_and_full_records(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        b'{"question": "how do I bake bread?"}\n\n'
        b'{"query": "what is a subnet?", "finish_reason": "length", "completion_tokens": 12,'
        b' "top_score": 0.5, "no_context": false, "route": "chat", "at": 10}\n',
    )
    first, second = read_records(path)
    assert (first.query, first.finish_reason, first.top_score, first.no_context) == (
        "how do I bake bread?",
        "stop",
        None,
        None,
    )
    assert (second.route, second.answer_tokens, second.top_score, second.at) == (
        "chat",
        12,
        0.5,
        10.0,
    )
    assert second.no_context is False
    assert read_records(path, limit=1) == [first]


def test_chat_format_records_give_their_last_user_message(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        b'{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "first"},'
        b' {"role": "assistant", "content": "a"}, {"role": "user", "content": "second"}]}\n',
    )
    assert read_records(path)[0].query == "second"
    bad = _write(tmp_path, b'{"messages": [{"role": "assistant", "content": "no question"}]}\n')
    with pytest.raises(RecordError, match="messages"):
        read_records(bad)


def test_long_questions_are_cut(tmp_path: Path) -> None:
    path = _write(tmp_path, ('{"question": "' + "a" * 5000 + '"}\n').encode())
    assert len(read_records(path)[0].query) == MAX_QUERY_CHARS


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b"{}", "question"),
        (b'{"question": "  "}', "question"),
        (b'{"question": 3}', "question"),
        (b'{"question": "q", "top_score": "high"}', "top_score"),
        (b'{"question": "q", "top_score": NaN}', "top_score"),
        (b'{"question": "q", "answer_tokens": -1}', "answer_tokens"),
        (b'{"question": "q", "answer_tokens": true}', "answer_tokens"),
        (b'{"question": "q", "no_context": "no"}', "no_context"),
        (b'{"question": "q", "route": ["ask"]}', "route"),
        (b'{"question": "\xff\xfe"}', "UTF-8"),
    ],
)
def test_bad_lines_name_the_file_line_and_field(tmp_path: Path, line: bytes, message: str) -> None:
    path = _write(tmp_path, b'{"question": "fine"}\n' + line + b"\n")
    with pytest.raises(RecordError, match=message) as info:
        read_records(path)
    assert f"{path}:2" in str(info.value)


def test_a_huge_line_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"question": "' + b"a" * MAX_LINE_BYTES + b'"}\n')
    with pytest.raises(RecordError, match="longer than"):
        read_records(path)
