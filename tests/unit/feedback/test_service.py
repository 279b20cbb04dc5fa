"""FeedbackService: feedback right after the response finds it; capture off refuses clearly."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from server.feedback.records import Feedback, Interaction, Rating
from server.feedback.service import CaptureOffError, FeedbackService
from server.feedback.store import FeedbackStore, StoreError
from tests.unit.feedback.conftest import interaction


def test_feedback_sent_before_the_capture_write_still_finds_the_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_write = FeedbackStore.add_interactions

    def add_slowly(self: FeedbackStore, records: Sequence[Interaction]) -> int:
        time.sleep(0.3)  # a slow disk: the client rates before the record is on it
        return slow_write(self, records)

    monkeypatch.setattr(FeedbackStore, "add_interactions", add_slowly)
    service = FeedbackService(tmp_path / "fb.db", level="full", retention_days=0)
    service.start()
    try:
        service.submit_capture(interaction("r1"))
        assert service.put_feedback(Feedback("r1", "k1", Rating.parse(-1))) == "created"
    finally:
        service.close()


def test_capture_off_stores_nothing_and_refuses_feedback(tmp_path: Path) -> None:
    service = FeedbackService(tmp_path / "fb.db", level="off", retention_days=0)
    service.start()
    service.submit_capture(interaction("r1"))
    with pytest.raises(CaptureOffError, match="capture is off"):
        service.put_feedback(Feedback("r1", "k1", Rating.parse(1)))
    service.close()
    assert not (tmp_path / "fb.db").exists()


def test_an_unopenable_database_is_a_store_error_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    service = FeedbackService(blocker / "fb.db", level="full", retention_days=0)
    service.start()
    try:
        service.submit_capture(interaction("r1"))  # counted as failed, never raises
        with pytest.raises(StoreError):
            service.put_feedback(Feedback("r1", "k1", Rating.parse(1)))
    finally:
        service.close()
