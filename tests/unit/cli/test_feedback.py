"""``ggserve feedback``: list/show/label/export on a real store, and hostile arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from server.feedback.records import Feedback, Rating
from server.feedback.store import FeedbackStore
from tests.unit.feedback.conftest import interaction

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)
    store.add_interactions(
        [
            interaction("ask-1", "¿Capital de Zembla?", created_at=1_700_000_000.0),
            interaction("chat-1", route="/v1/chat/completions", created_at=1_800_000_000.0),
            interaction("silent", created_at=1_800_000_000.0),
        ]
    )
    store.put_feedback(Feedback("ask-1", "k1", Rating.parse(-1), correction="Onhava."))
    store.put_feedback(Feedback("chat-1", "k1", Rating.parse(5), comment="great"))
    return path


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["feedback", *args])
    return result.exit_code, result.output


def test_list_filters_and_json(db: Path) -> None:
    code, text = run("list", "--db", str(db), "--json")
    assert code == 0
    ids = [json.loads(line)["interaction"]["response_id"] for line in text.splitlines() if line]
    assert ids == ["chat-1", "ask-1"]  # newest feedback first; "silent" has none
    code, text = run("list", "--db", str(db), "--bad")
    assert code == 0 and "ask-1" in text and "chat-1" not in text
    code, text = run("list", "--db", str(db), "--route", "/v1/chat/completions", "--rating", "5")
    assert "chat-1" in text and "ask-1" not in text
    code, text = run("list", "--db", str(db), "--until", "2025-01-01")
    assert "ask-1" in text and "chat-1" not in text
    code, text = run("list", "--db", str(db), "--status", "pending", "--model", "smollm2-135m")
    assert "ask-1" in text and "chat-1" not in text


def test_show_prints_the_interaction_and_feedback(db: Path) -> None:
    code, text = run("show", "ask-1", "--db", str(db))
    data = json.loads(text)
    assert code == 0 and data["feedback"]["correction"] == "Onhava."
    assert data["feedback"]["rating"] == {"value": -1, "scale": "thumbs", "polarity": -1}
    code, text = run("show", "silent", "--db", str(db))
    assert code == 0 and json.loads(text)["feedback"] is None


def test_label_then_export(db: Path, tmp_path: Path) -> None:
    code, text = run("label", "ask-1", "--accept", "--by", "ana", "--db", str(db))
    assert code == 0 and "accepted" in text
    out = tmp_path / "sft"
    code, text = run("export", "--format", "sft", "--out", str(out), "--db", str(db))
    assert code == 0 and ("train 1" in text or "eval 1" in text)
    card = json.loads((out / "card.json").read_text())
    assert sum(card["counts"].values()) == 1 and card["dataset_sha256"] in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["list", "--rating", "0"], "--rating"),
        (["list", "--rating", "7"], "--rating"),
        (["list", "--rating", "abc"], "--rating"),
        (["list", "--since", "yesterday"], "--since"),
        (["list", "--until", "2026-13-45"], "--until"),
        (["list", "--status", "maybe"], "--status"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--limit", "-5"], "--limit"),
        (["list", "--route", "\udcff"], "--route"),
        (["show", "\udcff"], "RESPONSE_ID"),
        (["label", "ask-1"], "exactly one"),
        (["label", "ask-1", "--accept", "--reject"], "exactly one"),
        (["export", "--format", "orpo", "--out", "x"], "--format"),
        (["export", "--format", "sft", "--out", "x", "--eval-fraction", "1.5"], "--eval-fraction"),
        (["export", "--format", "sft", "--out", "x", "--eval-fraction", "nan"], "fraction"),
    ],
)
def test_bad_arguments_name_the_option(db: Path, args: list[str], needle: str) -> None:
    before = (db.stat().st_size, db.stat().st_mtime_ns)
    code, text = run(*args, "--db", str(db))
    assert code == 2, text
    assert needle in text
    assert (db.stat().st_size, db.stat().st_mtime_ns) == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["show", "nope"], "no captured response"),
        (["label", "nope", "--accept"], "no feedback"),
    ],
)
def test_unknown_or_unlabellable_ids_fail_clearly(db: Path, args: list[str], needle: str) -> None:
    code, text = run(*args, "--db", str(db))
    assert code == 1 and needle in text


def test_a_missing_database_is_reported_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for args in (
        ["list"],
        ["show", "x"],
        ["export", "--format", "sft", "--out", str(tmp_path / "o")],
    ):
        code, text = run(*args, "--db", str(missing))
        assert code == 1 and "no feedback database" in text
    assert not missing.exists() and not (tmp_path / "o").exists()


def test_a_corrupt_database_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"\x00garbage" * 500)
    code, text = run("list", "--db", str(bad))
    assert code == 1 and "cannot open" in text


def test_export_refuses_a_folder_with_other_files(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    code, text = run("export", "--format", "kto", "--out", str(out), "--db", str(db))
    assert code == 1 and "did not write" in text
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_list_shows_stored_text_without_markup_or_terminal_escapes(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    store = FeedbackStore(path)
    store.add_interactions([interaction("r1")])
    hostile = "[bold red]fake[/] \x1b]0;owned\x07 \x1b[2J done"
    store.put_feedback(Feedback("r1", "k1", Rating.parse(-1), correction=hostile))
    result = runner.invoke(app, ["feedback", "list", "--db", str(path)], env={"COLUMNS": "250"})
    code, text = result.exit_code, result.output
    assert code == 0
    assert "\x1b]" not in text and "\x1b[2J" not in text and "\x07" not in text
    assert "[bold red]fake[/]" in text  # shown literally, not interpreted
    assert "(pending)" in text and "r1" in text


def test_a_good_rating_can_be_curated_and_a_bad_one_without_correction_cannot(
    db: Path,
) -> None:
    code, text = run("label", "chat-1", "--accept", "--db", str(db))
    assert code == 0 and "accepted" in text
    FeedbackStore(db).put_feedback(Feedback("silent", "k1", Rating.parse(-1)))
    code, text = run("label", "silent", "--accept", "--db", str(db))
    assert code == 1 and "nothing to label" in text


@pytest.mark.parametrize("bad", ["", "   ", "k\x1b[31m", "x" * 500])
def test_export_refuses_a_malformed_key_id(db: Path, tmp_path: Path, bad: str) -> None:
    code, text = run(
        "export", "--format", "sft", "--out", str(tmp_path / "o"), "--key-id", bad, "--db", str(db)
    )
    assert code == 2 and "--key-id" in text
    assert not (tmp_path / "o").exists()


def test_export_filters_by_repeated_key_ids(db: Path, tmp_path: Path) -> None:
    run("label", "ask-1", "--accept", "--db", str(db))
    out = tmp_path / "o"
    args = ["export", "--format", "sft", "--out", str(out), "--db", str(db)]
    code, text = run(*args, "--key-id", "k9", "--key-id", "k1")
    assert code == 0, text
    card = json.loads((out / "card.json").read_text())
    assert card["key_ids"] == {"k1": 1} and card["key_filter"] == ["k1", "k9"]
