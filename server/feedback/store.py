"""The SQLite store of captured interactions and their feedback (WAL mode, stdlib ``sqlite3``).

Every method opens its own short-lived connection, so the store is safe to share between the
capture writer thread, request handlers running in worker threads and the CLI. Text is redacted
here, on the way in, so no path can store what redaction would have removed.

What is deleted is gone from the disk, not only from the tables: every connection runs with
``secure_delete`` (freed pages are zeroed), and a purge checkpoints the WAL and truncates it,
since the WAL still holds the pages as they were written. The database and its ``-wal`` and
``-shm`` files are readable by their owner only (0600, whatever the umask).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from server.feedback.records import (
    CaptureLevel,
    CorrectionStatus,
    Feedback,
    Interaction,
    ModelVersion,
    Rating,
    RatingScale,
)
from server.feedback.redaction import redact, redact_value

SCHEMA_VERSION = 2  # 2: interactions.variant (the rollout arm that answered)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    response_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    key_id TEXT NOT NULL,
    route TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_sha256 TEXT,
    capture_level TEXT NOT NULL,
    latency_ms REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    finish_reason TEXT,
    messages TEXT,
    prompt TEXT,
    answer TEXT,
    sources TEXT,
    params TEXT,
    variant TEXT
);
CREATE INDEX IF NOT EXISTS interactions_created_at ON interactions(created_at);
CREATE TABLE IF NOT EXISTS feedback (
    response_id TEXT PRIMARY KEY
        REFERENCES interactions(response_id) ON DELETE CASCADE,
    key_id TEXT NOT NULL,
    rating INTEGER NOT NULL,
    scale TEXT NOT NULL,
    polarity INTEGER NOT NULL,
    comment TEXT,
    correction TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    correction_status TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    labelled_at REAL,
    labelled_by TEXT
);
CREATE INDEX IF NOT EXISTS feedback_updated_at ON feedback(updated_at);
"""

PutOutcome = Literal["created", "updated"]


class StoreError(Exception):
    """The store cannot do what was asked; the message says why and what to do."""


class UnknownResponseError(StoreError):
    """No captured response with this id belongs to the asking key."""


class FeedbackLockedError(StoreError):
    """The feedback's correction was already accepted or rejected by a curator."""


@dataclass(frozen=True)
class StoredFeedback:
    """A feedback row joined with the interaction it rates."""

    interaction: Interaction
    feedback: Feedback
    correction_status: CorrectionStatus | None
    created_at: float
    updated_at: float
    labelled_at: float | None = None
    labelled_by: str | None = None


@dataclass(frozen=True)
class FeedbackFilter:
    """Which feedback rows ``FeedbackStore.list_feedback`` returns (all fields optional)."""

    rating: int | None = None
    polarity: int | None = None
    since: float | None = None
    until: float | None = None
    route: str | None = None
    model: str | None = None  # model name, or a prefix of its sha256
    status: CorrectionStatus | None = None
    limit: int | None = None


class FeedbackStore:
    """Interactions and feedback in one SQLite file."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        """Open (and with ``create``, make) the database; StoreError when that fails."""
        self.path = path
        if not create and not path.is_file():
            raise StoreError(f"no feedback database at {path}; set GGSERVE_FEEDBACK_DB or --db")
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
                _create_private(path)
            _make_private(path)
            with self._connect(create=create) as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if create and version == 0:  # a new file
                    version = _create_schema(conn)
                elif version == 1:  # written before rollouts: one column more, in place
                    version = _migrate_to_2(conn)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open feedback database {path}: {exc}") from exc
        if version == 0:
            raise StoreError(f"{path} is not a feedback database (yet): it has no schema")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, this ggserve reads {SCHEMA_VERSION}"
            )

    def _open(self, create: bool) -> sqlite3.Connection:
        """A new connection; tests override this to simulate a full or read-only disk."""
        mode = "rwc" if create else "rw"
        return sqlite3.connect(f"file:{self.path}?mode={mode}", uri=True, timeout=5.0)

    @contextlib.contextmanager
    def _connect(self, *, create: bool = True) -> Iterator[sqlite3.Connection]:
        conn = self._open(create)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA secure_delete=ON")  # per connection: zero what is deleted
            conn.row_factory = sqlite3.Row
            yield conn
        finally:
            conn.close()

    # --- interactions ------------------------------------------------------------------------

    def add_interactions(self, records: Sequence[Interaction]) -> int:
        """Insert captured responses (redacted) in one transaction; how many were new.

        An id already stored is kept as it is: response ids derive from the client's
        ``X-Request-ID``, and one key must not be able to overwrite another key's record.
        Raises sqlite3.Error (full or read-only disk) for the caller to count.
        """
        rows = [_interaction_row(record) for record in records]
        with self._connect() as conn, conn:
            cursor = conn.executemany(
                "INSERT OR IGNORE INTO interactions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return cursor.rowcount

    def get_interaction(self, response_id: str) -> Interaction | None:
        """The captured response with this id, if any."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT * FROM interactions WHERE response_id = ?", (response_id,)
            ).fetchone()
        return None if row is None else _interaction(row)

    def count_interactions(self) -> int:
        """How many responses are stored."""
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM interactions").fetchone()[0])

    def purge_before(self, cutoff: float) -> int:
        """Delete responses (and their feedback) captured before ``cutoff``; the count.

        Deleted rows leave no copy behind: their pages are zeroed (``secure_delete``) and the
        WAL, which still holds them as first written, is checkpointed and truncated. A reader
        holding an old snapshot can delay the truncation; the next purge completes it.
        """
        with self._connect() as conn:
            with conn:
                purged = conn.execute(
                    "DELETE FROM interactions WHERE created_at < ?", (cutoff,)
                ).rowcount
            if purged:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return purged

    # --- feedback ----------------------------------------------------------------------------

    def put_feedback(self, feedback: Feedback, *, now: float | None = None) -> PutOutcome:
        """Store ``feedback``, replacing the key's earlier feedback on the same response.

        Raises UnknownResponseError when the response was not captured or belongs to another
        key, and FeedbackLockedError when a curator already accepted or rejected its correction.
        """
        now = time.time() if now is None else now
        correction = redact(feedback.correction) if feedback.correction else None
        comment = redact(feedback.comment) if feedback.comment else None
        tags = json.dumps([redact(tag) for tag in feedback.tags], ensure_ascii=False)
        with self._connect() as conn, conn:
            conn.execute("BEGIN IMMEDIATE")
            owner = conn.execute(
                "SELECT key_id FROM interactions WHERE response_id = ?", (feedback.response_id,)
            ).fetchone()
            if owner is None or owner["key_id"] != feedback.key_id:
                raise UnknownResponseError(
                    f"no response '{feedback.response_id}' from this key was captured"
                )
            existing = conn.execute(
                "SELECT correction_status, created_at FROM feedback WHERE response_id = ?",
                (feedback.response_id,),
            ).fetchone()
            if existing is not None and existing["correction_status"] in ("accepted", "rejected"):
                raise FeedbackLockedError(
                    f"feedback on '{feedback.response_id}' was already "
                    f"{existing['correction_status']} by a curator and can no longer change"
                )
            created_at = now if existing is None else existing["created_at"]
            conn.execute(
                "INSERT OR REPLACE INTO feedback VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL,NULL)",
                (
                    feedback.response_id,
                    feedback.key_id,
                    feedback.rating.value,
                    feedback.rating.scale,
                    feedback.rating.polarity,
                    comment,
                    correction,
                    tags,
                    "pending" if correction else None,
                    created_at,
                    now,
                ),
            )
        return "created" if existing is None else "updated"

    def get_feedback(self, response_id: str) -> StoredFeedback | None:
        """The feedback on one response, joined with the response."""
        found = self._select("WHERE f.response_id = ?", [response_id])
        return found[0] if found else None

    def list_feedback(self, where: FeedbackFilter | None = None) -> list[StoredFeedback]:
        """Feedback rows matching ``where``, newest first."""
        where = where or FeedbackFilter()
        clauses: list[str] = []
        args: list[Any] = []
        for column, value in (
            ("f.rating", where.rating),
            ("f.polarity", where.polarity),
            ("i.route", where.route),
            ("f.correction_status", where.status),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        if where.since is not None:
            clauses.append("i.created_at >= ?")
            args.append(where.since)
        if where.until is not None:
            clauses.append("i.created_at < ?")
            args.append(where.until)
        if where.model is not None:
            clauses.append("(i.model_name = ? OR i.model_sha256 LIKE ? ESCAPE '\\')")
            escaped = where.model.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            args += [where.model, escaped + "%"]
        sql = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        sql += " ORDER BY f.updated_at DESC, f.response_id"
        if where.limit is not None:
            sql += " LIMIT ?"
            args.append(where.limit)
        return self._select(sql, args)

    def all_feedback(self) -> list[StoredFeedback]:
        """Every feedback row, oldest interaction first (the export's stable order)."""
        return self._select("ORDER BY i.created_at, i.response_id", [])

    def label(self, response_id: str, status: CorrectionStatus, *, by: str) -> StoredFeedback:
        """Accept, reject or reopen (``pending``) the feedback on one response for training.

        What is curated is the correction when there is one, else the answer rated good: a
        client's 👍 alone never makes a positive training example (``flywheel/export.py``).
        A rating that is not good, without a correction, offers nothing to train on.
        """
        with self._connect() as conn, conn:
            row = conn.execute(
                "SELECT correction, polarity FROM feedback WHERE response_id = ?", (response_id,)
            ).fetchone()
            if row is None:
                raise UnknownResponseError(f"no feedback on response '{response_id}'")
            if not row["correction"] and row["polarity"] <= 0:
                raise StoreError(
                    f"the feedback on '{response_id}' has no correction and does not rate the "
                    "answer good: nothing to label for training"
                )
            conn.execute(
                "UPDATE feedback SET correction_status = ?, labelled_at = ?, labelled_by = ? "
                "WHERE response_id = ?",
                (status, time.time() if status != "pending" else None, by, response_id),
            )
        stored = self.get_feedback(response_id)
        assert stored is not None  # just updated inside the same database
        return stored

    def _select(self, tail: str, args: Sequence[Any]) -> list[StoredFeedback]:
        sql = (
            "SELECT i.*, f.key_id AS f_key_id, f.rating, f.scale, f.comment, f.correction, "
            "f.tags, f.correction_status, f.created_at AS f_created_at, "
            "f.updated_at AS f_updated_at, f.labelled_at, f.labelled_by "
            "FROM feedback f JOIN interactions i ON i.response_id = f.response_id " + tail
        )
        with self._connect(create=False) as conn:
            rows = conn.execute(sql, list(args)).fetchall()
        return [_stored_feedback(row) for row in rows]


_PRIVATE = 0o600
_SIDE_FILES = ("-wal", "-shm", "-journal")


def _create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist (before SQLite creates it).

    SQLite creates the ``-wal`` and ``-shm`` files with the main file's mode, so they follow.
    """
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _PRIVATE)
        try:
            os.fchmod(fd, _PRIVATE)  # the umask may have taken bits away; never adds any
        finally:
            os.close(fd)


def _make_private(path: Path) -> None:
    """Tighten a database made by an older ggserve (or by hand) to 0600, side files too."""
    for candidate in (path, *(path.with_name(path.name + s) for s in _SIDE_FILES)):
        with contextlib.suppress(OSError):  # absent, not ours, or a read-only mount
            if candidate.stat().st_mode & 0o777 != _PRIVATE:
                candidate.chmod(_PRIVATE)


def _create_schema(conn: sqlite3.Connection) -> int:
    """Tables and version in one transaction, so a reader never sees half a schema."""
    conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file; not inside a transaction
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # another process may have won the race
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return int(version)


def _migrate_to_2(conn: sqlite3.Connection) -> int:
    """Schema 1 → 2: ``interactions.variant``; one transaction, so a racing opener either
    sees version 1 (and migrates after this one commits, finding 2) or version 2."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version == 1:
            conn.execute("ALTER TABLE interactions ADD COLUMN variant TEXT")
            conn.execute("PRAGMA user_version=2")
            version = 2
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return version


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(redact_value(value), ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _interaction_row(record: Interaction) -> tuple[Any, ...]:
    return (
        record.response_id,
        record.created_at,
        record.key_id,
        record.route,
        record.model.name,
        record.model.sha256,
        record.level,
        record.latency_ms,
        record.prompt_tokens,
        record.completion_tokens,
        record.finish_reason,
        _dumps(record.messages),
        None if record.prompt is None else redact(record.prompt),
        None if record.answer is None else redact(record.answer),
        _dumps(record.sources),
        _dumps(record.params),
        record.variant,
    )


def _interaction(row: sqlite3.Row) -> Interaction:
    return Interaction(
        response_id=row["response_id"],
        key_id=row["key_id"],
        route=row["route"],
        model=ModelVersion(row["model_name"], row["model_sha256"]),
        level=cast(CaptureLevel, row["capture_level"]),
        created_at=row["created_at"],
        latency_ms=row["latency_ms"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        finish_reason=row["finish_reason"],
        messages=_loads(row["messages"]),
        prompt=row["prompt"],
        answer=row["answer"],
        sources=_loads(row["sources"]),
        params=_loads(row["params"]),
        variant=row["variant"],
    )


def _stored_feedback(row: sqlite3.Row) -> StoredFeedback:
    feedback = Feedback(
        response_id=row["response_id"],
        key_id=row["f_key_id"],
        rating=Rating(row["rating"], cast(RatingScale, row["scale"])),
        comment=row["comment"],
        correction=row["correction"],
        tags=tuple(json.loads(row["tags"])),
    )
    return StoredFeedback(
        interaction=_interaction(row),
        feedback=feedback,
        correction_status=cast(CorrectionStatus | None, row["correction_status"]),
        created_at=row["f_created_at"],
        updated_at=row["f_updated_at"],
        labelled_at=row["labelled_at"],
        labelled_by=row["labelled_by"],
    )
