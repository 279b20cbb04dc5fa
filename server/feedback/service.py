"""What one app holds for the flywheel: the capture writer and the store behind /v1/feedback."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from server.feedback.capture import CaptureOutcome, CaptureWriter
from server.feedback.records import CaptureLevel, Feedback, Interaction
from server.feedback.store import FeedbackStore, PutOutcome, StoreError


class FeedbackService:
    """Capture on the way out, feedback on the way in; created and closed by the app lifespan."""

    def __init__(
        self,
        db_path: Path,
        *,
        level: CaptureLevel,
        retention_days: float,
        max_queue: int = 1000,
        on_capture: Callable[[CaptureOutcome, int], None] = lambda outcome, n: None,
    ) -> None:
        self.db_path = db_path
        self.level = level
        self._store: FeedbackStore | None = None
        self._lock = threading.Lock()
        self.capture = CaptureWriter(
            self.store,
            level=level,
            max_queue=max_queue,
            retention_days=retention_days,
            on_outcome=on_capture,
        )

    def start(self) -> None:
        """Start the capture writer (it also purges past-retention records)."""
        if self.level != "off":
            self.capture.start()

    def close(self) -> None:
        """Write what is queued and stop."""
        self.capture.close()

    def store(self) -> FeedbackStore:
        """The store, opened (and created) on first use; StoreError when the disk refuses."""
        with self._lock:
            if self._store is None:
                self._store = FeedbackStore(self.db_path)
            return self._store

    def submit_capture(self, record: Interaction) -> None:
        """Queue one response for capture; never blocks, never raises."""
        self.capture.submit(record)

    def put_feedback(self, feedback: Feedback) -> PutOutcome:
        """Store feedback (blocking: run in a worker thread). Raises StoreError subclasses.

        The rated response may still sit in the capture queue when a fast client rates it,
        so this waits (briefly) for that record to be written first.
        """
        if self.level == "off":
            raise CaptureOffError(
                "capture is off on this server (GGSERVE_CAPTURE=off): responses are not "
                "stored, so they cannot be rated"
            )
        self.capture.wait_settled(feedback.response_id, timeout=2.0)
        try:
            return self.store().put_feedback(feedback)
        except (sqlite3.Error, OSError) as exc:  # full or read-only disk, locked file
            raise StoreError(f"cannot write feedback to {self.db_path}: {exc}") from exc


class CaptureOffError(StoreError):
    """Feedback was sent to a server that stores no responses."""
