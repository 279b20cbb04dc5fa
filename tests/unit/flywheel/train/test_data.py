"""The training dataset reader refuses every malformed row with its line number, before torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convert.errors import ConvertError
from flywheel.train.data import MAX_CONTENT_CHARS, load_dataset

GOOD = {"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}


def _write(tmp_path: Path, *rows: object, raw: bytes | None = None) -> Path:
    path = tmp_path / "train.jsonl"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows))
    return path


def test_folder_with_train_jsonl_and_prompt_completion_rows_load(tmp_path: Path) -> None:
    split = {
        "prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q2?"}],
        "completion": [{"role": "assistant", "content": "A2."}],
    }
    _write(tmp_path, GOOD, "", split)
    dataset = load_dataset(tmp_path)
    assert len(dataset) == 2
    assert dataset.conversations[1][-1] == {"role": "assistant", "content": "A2."}
    assert len(dataset.sha256) == 64


def test_the_sha256_changes_with_one_byte(tmp_path: Path) -> None:
    first = load_dataset(_write(tmp_path, GOOD)).sha256
    changed = {"messages": [GOOD["messages"][0], {"role": "assistant", "content": "B."}]}
    assert load_dataset(_write(tmp_path, changed)).sha256 != first


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ([1, 2], "line 2: a row must be a JSON object"),
        ({"text": "plain"}, "no 'messages'"),
        ({"messages": []}, "non-empty list"),
        ({"messages": "hi"}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "Q"}]}, "last message must be the assistant"),
        ({"messages": [{"role": "assistant", "content": "A"}]}, "no user message"),
        (
            {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": " "}]},
            "answer is empty",
        ),
        ({"messages": [{"role": "hacker", "content": "Q"}]}, "role must be one of"),
        ({"messages": [{"role": "user", "content": 5}]}, "content must be a string"),
        ({"messages": [None]}, "is not an object"),
        (
            {"messages": [{"role": "user", "content": "x" * (MAX_CONTENT_CHARS + 1)}]},
            "characters (limit",
        ),
    ],
)
def test_bad_rows_are_refused_with_their_line(tmp_path: Path, row: object, message: str) -> None:
    path = _write(tmp_path, GOOD, row if isinstance(row, str) else json.dumps(row))
    with pytest.raises(ConvertError, match=r"line 2") as error:
        load_dataset(path)
    assert message in str(error.value)


def test_invalid_utf8_empty_and_missing_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="not UTF-8"):
        load_dataset(_write(tmp_path, raw=b'{"messages": "\xff\xfe"}'))
    with pytest.raises(ConvertError, match="has no rows"):
        load_dataset(_write(tmp_path, raw=b"\n\n"))
    with pytest.raises(ConvertError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(ConvertError, match=r"has no train\.jsonl"):
        load_dataset(empty_dir)


def test_a_replay_row_that_is_also_training_data_is_learned_not_anchored(tmp_path: Path) -> None:
    from flywheel.train.run import replay_rows

    kept = {
        "messages": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}]
    }
    (tmp_path / "data").mkdir()
    (tmp_path / "replay").mkdir()
    data = load_dataset(_write(tmp_path / "data", GOOD))
    replay = load_dataset(_write(tmp_path / "replay", GOOD, kept))  # what --include-positive writes
    assert replay_rows(data, replay) == [kept["messages"]]
    assert replay_rows(data, None) == []
