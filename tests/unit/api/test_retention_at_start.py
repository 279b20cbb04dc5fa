"""A server started with capture off still applies retention to what was captured before."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.feedback.store import FeedbackStore
from tests.unit.feedback.test_retention import SECRET_TEXT, _fill, _raw_bytes


def test_a_server_starting_with_capture_off_purges_what_was_captured_before(
    tmp_path: Path, make_client: Callable[..., object]
) -> None:
    db = tmp_path / "feedback.db"
    _fill(FeedbackStore(db))
    make_client(capture="off", feedback_db=db, capture_retention_days=30)
    assert FeedbackStore(db, create=False).count_interactions() == 2
    assert SECRET_TEXT.encode() not in _raw_bytes(db)
