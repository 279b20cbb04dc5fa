"""The capture writer never blocks or raises into the caller, whatever the disk does."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from server.feedback.capture import CaptureWriter
from server.feedback.records import CaptureLevel, Interaction
from server.feedback.store import FeedbackStore
from tests.unit.feedback.conftest import interaction


class Outcomes(Counter[str]):
    def __call__(self, outcome: str, n: int) -> None:
        self[outcome] += n


def writer(
    store: FeedbackStore | None, level: CaptureLevel = "full", **kw: object
) -> tuple[CaptureWriter, Outcomes]:
    outcomes = Outcomes()

    def open_store() -> FeedbackStore:
        if store is None:
            raise OSError("cannot open")
        return store

    w = CaptureWriter(open_store, level=level, on_outcome=outcomes, **kw)  # type: ignore[arg-type]
    w.start()
    return w, outcomes


@pytest.fixture
def closing() -> Iterator[list[CaptureWriter]]:
    writers: list[CaptureWriter] = []
    yield writers
    for w in writers:
        w.close()


def test_records_are_written_at_full_level(
    store: FeedbackStore, closing: list[CaptureWriter]
) -> None:
    w, outcomes = writer(store)
    closing.append(w)
    for i in range(20):
        assert w.submit(interaction(f"r{i}"))
    assert w.flush(5)
    assert outcomes["written"] == 20 and store.count_interactions() == 20
    stored = store.get_interaction("r3")
    assert stored is not None and stored.answer and stored.messages


def test_metadata_level_keeps_no_content(
    store: FeedbackStore, closing: list[CaptureWriter]
) -> None:
    w, _ = writer(store, "metadata")
    closing.append(w)
    w.submit(interaction("r1", params={"temperature": 0.5}, sources=[{"n": 1}], prompt="raw"))
    w.flush(5)
    stored = store.get_interaction("r1")
    assert stored is not None and stored.level == "metadata"
    assert (stored.messages, stored.answer, stored.sources, stored.params, stored.prompt) == (
        None,
        None,
        None,
        None,
        None,
    )
    assert stored.latency_ms == 120.0 and stored.completion_tokens == 9 and stored.key_id == "k1"


def test_off_level_stores_nothing(store: FeedbackStore, closing: list[CaptureWriter]) -> None:
    w, outcomes = writer(store, "off")
    closing.append(w)
    assert not w.submit(interaction("r1"))
    w.flush(5)
    assert store.count_interactions() == 0 and not outcomes


class ReadOnlyStore(FeedbackStore):
    """SQLite refuses every write, as on a read-only mount (root ignores chmod, so the
    connection is made query-only: the same SQLITE_READONLY error a mount gives)."""

    def _open(self, create: bool) -> sqlite3.Connection:
        conn = super()._open(create)
        conn.execute("PRAGMA query_only=ON")
        return conn


class FullDiskStore(FeedbackStore):
    """The database cannot grow by one page: SQLITE_FULL, 'database or disk is full'."""

    def _open(self, create: bool) -> sqlite3.Connection:
        conn = super()._open(create)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")
        return conn


@pytest.mark.parametrize("store_class", [ReadOnlyStore, FullDiskStore])
def test_unwritable_disk_is_counted_and_submit_still_returns(
    tmp_path: Path, store_class: type[FeedbackStore], closing: list[CaptureWriter]
) -> None:
    FeedbackStore(tmp_path / "fb.db")  # the schema exists; writes are what fail
    w, outcomes = writer(store_class(tmp_path / "fb.db", create=False))
    closing.append(w)
    big = "x" * 200_000  # more than the few free pages a fresh file may have
    for i in range(5):
        w.submit(interaction(f"r{i}", answer=big))
    assert w.flush(5)
    assert outcomes["failed"] == 5 and outcomes["written"] == 0
    assert FeedbackStore(tmp_path / "fb.db").count_interactions() == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod; covered by ReadOnlyStore")
def test_read_only_file_is_counted(tmp_path: Path, closing: list[CaptureWriter]) -> None:
    path = tmp_path / "fb.db"
    FeedbackStore(path)
    for name in os.listdir(tmp_path):
        os.chmod(tmp_path / name, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        w, outcomes = writer(FeedbackStore(path, create=False))
        closing.append(w)
        w.submit(interaction("r1"))
        w.flush(5)
        assert outcomes["failed"] == 1
    finally:
        os.chmod(tmp_path, 0o755)


def test_unopenable_store_is_counted(closing: list[CaptureWriter]) -> None:
    w, outcomes = writer(None)
    closing.append(w)
    w.submit(interaction("r1"))
    assert w.flush(5)
    assert outcomes["failed"] == 1


class SlowStore(FeedbackStore):
    """A disk that hangs until released."""

    release = threading.Event()

    def add_interactions(self, records: Sequence[Interaction]) -> int:
        self.release.wait(10)
        return super().add_interactions(records)


def test_full_queue_drops_without_waiting(tmp_path: Path, closing: list[CaptureWriter]) -> None:
    slow = SlowStore(tmp_path / "fb.db")
    w, outcomes = writer(slow, max_queue=2)
    closing.append(w)
    started = time.perf_counter()
    accepted = [w.submit(interaction(f"r{i}")) for i in range(50)]
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"submit waited on a hung disk ({elapsed:.2f}s for 50 calls)"
    assert accepted.count(False) >= 45 and outcomes["dropped"] == accepted.count(False)
    slow.release.set()
    assert w.flush(5)
    assert slow.count_interactions() == accepted.count(True)


def test_retention_purges_old_records_on_start(
    store: FeedbackStore, closing: list[CaptureWriter]
) -> None:
    store.add_interactions(
        [interaction("ancient", created_at=time.time() - 3 * 86400), interaction("fresh")]
    )
    w, outcomes = writer(store, retention_days=2)
    closing.append(w)
    deadline = time.monotonic() + 5
    while outcomes["purged"] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert outcomes["purged"] == 1
    assert store.get_interaction("ancient") is None and store.get_interaction("fresh") is not None


def test_zero_retention_keeps_everything(
    store: FeedbackStore, closing: list[CaptureWriter]
) -> None:
    store.add_interactions([interaction("ancient", created_at=1.0)])
    w, _ = writer(store, retention_days=0)
    closing.append(w)
    w.submit(interaction("new"))
    w.flush(5)
    assert store.get_interaction("ancient") is not None


def test_wait_settled_sees_the_record_written(
    store: FeedbackStore, closing: list[CaptureWriter]
) -> None:
    w, _ = writer(store)
    closing.append(w)
    w.submit(interaction("r1"))
    w.wait_settled("r1", timeout=5)
    assert store.get_interaction("r1") is not None


def test_close_writes_what_is_queued(store: FeedbackStore) -> None:
    w, _ = writer(store)
    for i in range(100):
        w.submit(interaction(f"r{i}"))
    w.close()
    assert store.count_interactions() == 100


def test_the_writer_survives_a_failing_callback(store: FeedbackStore) -> None:
    calls: list[str] = []

    def explode(outcome: str, n: int) -> None:
        calls.append(outcome)
        raise RuntimeError("metrics backend broke")

    w = CaptureWriter(lambda: store, level="full", on_outcome=explode)  # type: ignore[arg-type]
    w.start()
    try:
        w.submit(interaction("r1"))
        assert w.flush(5)
        w.submit(interaction("r2"))
        assert w.flush(5)
        assert store.count_interactions() == 2 and calls == ["written", "written"]
    finally:
        w.close()
