"""Retention that really removes data: purged rows leave no bytes behind, files are 0600,
and purging runs with capture off (server start) and with the server down (CLI)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from server.feedback.records import Feedback, Rating
from server.feedback.retention import DAY_S, purge_at_start, purge_expired
from server.feedback.store import FeedbackStore, StoreError
from tests.unit.feedback.conftest import interaction

SECRET_TEXT = "zq-purged-marker-7f3a91"  # no digits run/key shape: redaction keeps it verbatim
OLD = time.time() - 40 * DAY_S


def _raw_bytes(db: Path) -> bytes:
    """Everything SQLite keeps on disk for ``db``: the file, its WAL and its shared memory."""
    return b"".join(
        candidate.read_bytes()
        for candidate in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"))
        if candidate.exists()
    )


def _fill(store: FeedbackStore, *, old: int = 3, new: int = 2) -> None:
    store.add_interactions(
        [interaction(f"old-{i}", f"{SECRET_TEXT} {i}", created_at=OLD) for i in range(old)]
        + [interaction(f"new-{i}", f"fresh question {i}") for i in range(new)]
    )
    store.put_feedback(
        Feedback(
            response_id="old-0",
            key_id="k1",
            rating=Rating.parse(-1),
            comment=f"comment {SECRET_TEXT}",
        )
    )


def test_a_purged_secret_is_in_neither_the_database_file_nor_the_wal(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "feedback.db")
    # A running server keeps connections open, so the WAL is not folded back and deleted at
    # each close: hold one the whole time, as the capture writer and request handlers do.
    with store._connect() as held:
        held.execute("SELECT COUNT(*) FROM interactions").fetchone()
        _fill(store)
        assert SECRET_TEXT.encode() in _raw_bytes(store.path)  # the check sees it when present
        assert store.purge_before(time.time() - 30 * DAY_S) == 3
        assert SECRET_TEXT.encode() not in _raw_bytes(store.path)
        assert store.count_interactions() == 2
        assert b"fresh question" in _raw_bytes(store.path)  # what is kept is still there


@pytest.fixture(params=[0o000, 0o022, 0o002])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_the_database_wal_and_shm_are_created_owner_only_whatever_the_umask(
    tmp_path: Path, umask: int
) -> None:
    store = FeedbackStore(tmp_path / "sub" / "feedback.db")
    _fill(store, old=1, new=1)
    with store._connect() as conn:  # an open connection keeps the -wal and -shm files
        conn.execute("SELECT COUNT(*) FROM interactions").fetchone()
        files = [store.path, *(Path(f"{store.path}{s}") for s in ("-wal", "-shm"))]
        for path in files:
            assert path.exists(), path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(umask))


def test_a_world_readable_database_from_before_is_tightened_on_open(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    _fill(FeedbackStore(db), old=1, new=0)
    db.chmod(0o644)
    FeedbackStore(db, create=False)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_purge_expired_is_a_no_op_without_a_database_or_with_retention_off(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "none.db"
    assert purge_expired(missing, 30) == 0
    assert not missing.exists()  # a purge never creates a database
    store = FeedbackStore(tmp_path / "feedback.db")
    _fill(store)
    assert purge_expired(store.path, 0) == 0
    assert store.count_interactions() == 5
    assert purge_expired(store.path, 30) == 3


def test_a_start_purge_logs_a_broken_database_and_does_not_raise(tmp_path: Path) -> None:
    broken = tmp_path / "feedback.db"
    broken.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError):
        purge_expired(broken, 30)
    assert purge_at_start(broken, 30) == 0


def test_feedback_purge_works_with_the_server_down(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    _fill(FeedbackStore(db))
    runner = CliRunner()
    result = runner.invoke(app, ["feedback", "purge", "--db", str(db), "--older-than-days", "30"])
    assert result.exit_code == 0, result.output
    assert "purged 3" in result.output
    assert FeedbackStore(db, create=False).count_interactions() == 2
    again = runner.invoke(app, ["feedback", "purge", "--db", str(db), "--older-than-days", "0"])
    assert again.exit_code == 0 and "nothing purged" in again.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--older-than-days", "-1"], "older-than-days"),
        (["--older-than-days", "lots"], "older-than-days"),
        (["--older-than-days", "1e400"], ""),
    ],
)
def test_feedback_purge_rejects_bad_ages(tmp_path: Path, args: list[str], needle: str) -> None:
    db = tmp_path / "feedback.db"
    _fill(FeedbackStore(db))
    result = CliRunner().invoke(app, ["feedback", "purge", "--db", str(db), *args])
    if args[1] == "1e400":  # infinity days ago: nothing is that old, nothing is lost
        assert result.exit_code == 0 and "purged 0" in result.output
    else:
        assert result.exit_code == 2 and needle in result.output
    assert FeedbackStore(db, create=False).count_interactions() >= 2


def test_feedback_purge_of_a_missing_database_fails_without_creating_it(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(app, ["feedback", "purge", "--db", str(missing)])
    assert result.exit_code == 1 and "no feedback database" in result.output
    assert not missing.exists()
