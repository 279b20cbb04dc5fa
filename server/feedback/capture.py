"""Capture writes that never block or fail a request: a bounded queue drained by one thread.

``submit`` is called on the event loop and only does ``put_nowait``; the writer thread opens the
store, redacts (inside the store) and inserts in batches, and purges records older than the
retention window. A full queue, a read-only or full disk: the record is dropped, counted
through ``on_outcome`` (a metric in the server) and logged — at most once a minute per cause —
and the response has long gone out.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Literal

from loguru import logger

from server.feedback.records import CaptureLevel, Interaction
from server.feedback.store import FeedbackStore, StoreError

CaptureOutcome = Literal["written", "duplicate", "dropped", "failed", "purged"]
_BATCH = 256
_LOG_EVERY_S = 60.0


class CaptureWriter:
    """Owns the queue and the writer thread; one per app, started and closed by its lifespan."""

    def __init__(
        self,
        open_store: Callable[[], FeedbackStore],
        *,
        level: CaptureLevel,
        max_queue: int = 1000,
        retention_days: float = 0.0,
        purge_every_s: float = 3600.0,
        on_outcome: Callable[[CaptureOutcome, int], None] = lambda outcome, n: None,
    ) -> None:
        self.level = level
        self._open_store = open_store
        self._store: FeedbackStore | None = None
        self._queue: queue.Queue[Interaction | None] = queue.Queue(maxsize=max_queue)
        self._retention_s = retention_days * 86400.0
        self._purge_every_s = purge_every_s
        self._next_purge = 0.0
        self._on_outcome = on_outcome
        self._pending: set[str] = set()
        self._settled = threading.Condition()
        self._last_log: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``) and stop the thread."""
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            logger.warning("capture queue still full at shutdown; unwritten records are lost")
            return
        self._thread.join(timeout)

    def submit(self, record: Interaction) -> bool:
        """Queue ``record`` at this writer's level without waiting; False when dropped."""
        if self.level == "off":
            return False
        with self._settled:
            self._pending.add(record.response_id)
        try:
            self._queue.put_nowait(record.at_level(self.level))
        except queue.Full:
            self._settle([record.response_id])
            self._on_outcome("dropped", 1)
            self._log_limited("dropped", "capture queue full: a record was dropped")
            return False
        return True

    def wait_settled(self, response_id: str, timeout: float = 2.0) -> None:
        """Block until ``response_id`` is written or given up (no-op when not queued)."""
        deadline = time.monotonic() + timeout
        with self._settled:
            while response_id in self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._settled.wait(left)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is settled; True if it was in time."""
        deadline = time.monotonic() + timeout
        with self._settled:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._settled.wait(left)
        return True

    # --- writer thread -----------------------------------------------------------------------

    def _run(self) -> None:
        self._maybe_purge()
        while True:
            try:
                first = self._queue.get(timeout=min(self._purge_every_s, 60.0))
            except queue.Empty:
                self._maybe_purge()
                continue
            batch: list[Interaction] = []
            stop = first is None
            if first is not None:
                batch.append(first)
            while not stop and len(batch) < _BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            try:
                if batch:
                    self._write(batch)
                self._maybe_purge()
            except Exception as exc:  # a bug must not end the thread: the queue would fill
                logger.opt(exception=exc).error("capture writer error; it keeps running")
            if stop:
                return

    def _write(self, batch: list[Interaction]) -> None:
        try:
            added = self._ensure_store().add_interactions(batch)
        except (StoreError, sqlite3.Error, OSError, ValueError) as exc:
            self._store = None  # reopen next time: the disk may have been fixed
            self._on_outcome("failed", len(batch))
            self._log_limited("failed", f"capture write failed, {len(batch)} record(s) lost: {exc}")
        else:
            self._on_outcome("written", added)
            if added < len(batch):
                self._on_outcome("duplicate", len(batch) - added)
        finally:
            self._settle([record.response_id for record in batch])

    def _maybe_purge(self) -> None:
        now = time.time()
        if self._retention_s <= 0 or now < self._next_purge:
            return
        self._next_purge = now + self._purge_every_s
        try:
            purged = self._ensure_store().purge_before(now - self._retention_s)
        except (StoreError, sqlite3.Error, OSError) as exc:
            self._store = None
            self._log_limited("purge", f"capture retention purge failed: {exc}")
            return
        if purged:
            self._on_outcome("purged", purged)
            logger.bind(event="capture_purge", purged=purged).info(
                "purged {} captured response(s) past retention", purged
            )

    def _ensure_store(self) -> FeedbackStore:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _settle(self, response_ids: list[str]) -> None:
        with self._settled:
            self._pending.difference_update(response_ids)
            self._settled.notify_all()

    def _log_limited(self, cause: str, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log.get(cause, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[cause] = now
            logger.bind(event="capture_error", cause=cause).error(message)
