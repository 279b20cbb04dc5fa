"""Retention that holds whether capture is on or not.

With capture on, the capture writer purges at start and every hour. With capture off nothing
wrote recently, but records captured before (``GGSERVE_CAPTURE=full`` last month) must still
leave on time: the server purges once at start, and ``ggserve feedback purge`` does the same
with the server down (run it from cron or a Kubernetes CronJob for a server that stays up with
capture off).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from loguru import logger

from server.feedback.store import FeedbackStore, StoreError

DAY_S = 86400.0


def purge_expired(db: Path, retention_days: float, *, now: float | None = None) -> int:
    """Delete responses (and feedback) older than ``retention_days`` from ``db``; the count.

    0 without touching anything when retention is off (0) or there is no database. Raises
    StoreError when the database cannot be opened or written.
    """
    if retention_days <= 0 or not db.is_file():
        return 0
    cutoff = (time.time() if now is None else now) - retention_days * DAY_S
    try:
        return FeedbackStore(db, create=False).purge_before(cutoff)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot purge {db}: {exc}") from exc


def purge_at_start(db: Path, retention_days: float) -> int:
    """``purge_expired`` for a server starting with capture off: logged, never fatal."""
    try:
        purged = purge_expired(db, retention_days)
    except StoreError as exc:
        logger.bind(event="capture_purge_failed").error(
            "retention purge at start failed (capture is off): {}", exc
        )
        return 0
    if purged:
        logger.bind(event="capture_purge", purged=purged).info(
            "purged {} captured response(s) past retention (capture is off)", purged
        )
    return purged
