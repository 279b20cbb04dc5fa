"""The store: ratings, ownership, the overwrite/lock rule, filters, labels, retention."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from server.feedback.records import Feedback, Interaction, Rating, RatingError
from server.feedback.store import (
    FeedbackFilter,
    FeedbackLockedError,
    FeedbackStore,
    StoreError,
    UnknownResponseError,
)
from tests.unit.feedback.conftest import MODEL, interaction

Add = Callable[..., Interaction]


def thumbs(response_id: str, value: int = -1, key_id: str = "k1", **kw: object) -> Feedback:
    return Feedback(response_id, key_id, Rating.parse(value), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "scale", "polarity", "label"),
    [
        (1, None, 1, "up"),
        (-1, None, -1, "down"),
        (1, "stars", -1, "1star"),
        (3, None, 0, "3star"),
        (5, None, 1, "5star"),
        (4, "stars", 1, "4star"),
    ],
)
def test_rating_scales_and_polarity(
    value: int, scale: str | None, polarity: int, label: str
) -> None:
    rating = Rating.parse(value, scale)  # type: ignore[arg-type]
    assert (rating.polarity, rating.label) == (polarity, label)


@pytest.mark.parametrize(
    ("value", "scale"),
    [
        (0, None),
        (6, None),
        (-2, None),
        (2, "thumbs"),
        (-1, "stars"),
        (True, None),
        (1.0, None),
        ("1", None),
    ],
)
def test_rating_out_of_range_or_wrong_type_is_refused(value: object, scale: str | None) -> None:
    with pytest.raises(RatingError):
        Rating.parse(value, scale)  # type: ignore[arg-type]


def test_database_is_in_wal_mode(store: FeedbackStore) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_interaction_round_trips_with_content_redacted(store: FeedbackStore, add: Add) -> None:
    add(
        "r1",
        "Soy ana@example.com, ¿cuál es la capital?",
        sources=[{"snippet": "tel 612345678"}],
        params={"temperature": 0.2},
    )
    stored = store.get_interaction("r1")
    assert stored is not None
    assert stored.model == MODEL and stored.level == "full" and stored.latency_ms == 120.0
    assert stored.messages == [{"role": "user", "content": "Soy [EMAIL], ¿cuál es la capital?"}]
    assert stored.sources == [{"snippet": "tel [PHONE]"}]
    assert stored.params == {"temperature": 0.2}


def test_first_feedback_creates_then_overwrites(store: FeedbackStore, add: Add) -> None:
    add("r1")
    assert store.put_feedback(thumbs("r1", -1, correction="Madrid"), now=100.0) == "created"
    assert store.put_feedback(thumbs("r1", 1, comment="ok now"), now=200.0) == "updated"
    stored = store.get_feedback("r1")
    assert stored is not None
    assert stored.feedback.rating == Rating(1, "thumbs")
    assert stored.feedback.correction is None and stored.correction_status is None
    assert (stored.created_at, stored.updated_at) == (100.0, 200.0)


def test_curated_feedback_is_locked(store: FeedbackStore, add: Add) -> None:
    add("r1")
    store.put_feedback(thumbs("r1", correction="Madrid"))
    store.label("r1", "accepted", by="curator")
    with pytest.raises(FeedbackLockedError):
        store.put_feedback(thumbs("r1", 1))
    stored = store.get_feedback("r1")
    assert stored is not None and stored.feedback.correction == "Madrid"
    assert stored.correction_status == "accepted" and stored.labelled_by == "curator"


def test_a_key_cannot_rate_another_keys_response(store: FeedbackStore, add: Add) -> None:
    add("r1", key_id="alice")
    with pytest.raises(UnknownResponseError):
        store.put_feedback(thumbs("r1", key_id="mallory"))
    with pytest.raises(UnknownResponseError):
        store.put_feedback(thumbs("never-captured"))
    assert store.get_feedback("r1") is None


def test_feedback_text_is_redacted(store: FeedbackStore, add: Add) -> None:
    add("r1")
    store.put_feedback(
        thumbs(
            "r1", comment="reach me at x@y.org", correction="Call 612 345 678", tags=("pii a@b.co",)
        )
    )
    stored = store.get_feedback("r1")
    assert stored is not None
    assert stored.feedback.comment == "reach me at [EMAIL]"
    assert stored.feedback.correction == "Call [PHONE]"
    assert stored.feedback.tags == ("pii [EMAIL]",)


def test_filters(store: FeedbackStore, add: Add) -> None:
    add("old", created_at=1000.0)
    add("chat", route="/v1/chat/completions", created_at=2000.0)
    add("v2", model=type(MODEL)("smollm2-v2", "cd" * 32), created_at=3000.0)
    store.put_feedback(thumbs("old", -1, correction="x"))
    store.put_feedback(thumbs("chat", 1))
    store.put_feedback(Feedback("v2", "k1", Rating.parse(2)))

    def ids(**kw: object) -> list[str]:
        return sorted(s.interaction.response_id for s in store.list_feedback(FeedbackFilter(**kw)))  # type: ignore[arg-type]

    assert ids() == ["chat", "old", "v2"]
    assert ids(rating=-1) == ["old"]
    assert ids(polarity=-1) == ["old", "v2"]
    assert ids(since=1500.0) == ["chat", "v2"]
    assert ids(until=1500.0) == ["old"]
    assert ids(route="/v1/chat/completions") == ["chat"]
    assert ids(model="smollm2-v2") == ["v2"]
    assert ids(model="cdcd") == ["v2"]
    assert ids(model="%") == []  # LIKE wildcards are escaped
    assert ids(status="pending") == ["old"]
    assert len(store.list_feedback(FeedbackFilter(limit=1))) == 1


def test_label_needs_a_correction_or_an_answer_rated_good(store: FeedbackStore, add: Add) -> None:
    add("r1")
    store.put_feedback(thumbs("r1", -1))
    with pytest.raises(StoreError, match="nothing to label"):
        store.label("r1", "accepted", by="me")
    add("r2")
    store.put_feedback(thumbs("r2", 1))  # a 👍 is curated before it can train anything
    assert store.label("r2", "accepted", by="me").correction_status == "accepted"
    with pytest.raises(UnknownResponseError):
        store.label("nope", "accepted", by="me")


def test_label_can_be_reopened(store: FeedbackStore, add: Add) -> None:
    add("r1")
    store.put_feedback(thumbs("r1", correction="Madrid"))
    store.label("r1", "rejected", by="me")
    reopened = store.label("r1", "pending", by="me")
    assert reopened.correction_status == "pending" and reopened.labelled_at is None
    assert store.put_feedback(thumbs("r1", correction="Madrid!")) == "updated"


def test_purge_removes_old_interactions_and_their_feedback(store: FeedbackStore, add: Add) -> None:
    add("old", created_at=1000.0)
    add("new", created_at=5000.0)
    store.put_feedback(thumbs("old"))
    assert store.purge_before(2000.0) == 1
    assert store.get_interaction("old") is None and store.get_feedback("old") is None
    assert store.count_interactions() == 1


def test_opening_without_create_never_makes_a_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no feedback database"):
        FeedbackStore(tmp_path / "typo.db", create=False)
    assert not (tmp_path / "typo.db").exists()


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        FeedbackStore(path)


def test_hostile_ids_are_just_strings(store: FeedbackStore, add: Add) -> None:
    hostile = "r1'; DROP TABLE feedback; --"
    add(hostile)
    store.put_feedback(thumbs(hostile))
    assert store.get_feedback(hostile) is not None
    assert store.count_interactions() == 1


def test_a_reused_response_id_never_overwrites_the_first_record(
    store: FeedbackStore, add: Add
) -> None:
    add("same-id", key_id="alice")
    store.put_feedback(thumbs("same-id", key_id="alice", correction="Onhava"))
    # Response ids are the server's own, but the store does not rely on it: a reused id (a bug,
    # a replayed import) from another key must not replace the first record.
    assert store.add_interactions([replace(interaction("same-id"), key_id="mallory")]) == 0
    stored = store.get_feedback("same-id")
    assert stored is not None and stored.interaction.key_id == "alice"
    assert stored.feedback.correction == "Onhava"


def test_an_empty_file_is_not_read_as_a_database(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    path.touch()  # e.g. a server that is creating it right now
    with pytest.raises(StoreError, match="not a feedback database"):
        FeedbackStore(path, create=False)
    assert FeedbackStore(path).count_interactions() == 0  # creating it is fine


def test_the_rollout_variant_round_trips(store: FeedbackStore) -> None:
    record = replace(interaction("r-variant"), variant="ro-1:challenger")
    store.add_interactions([record])
    found = store.get_interaction("r-variant")
    assert found is not None and found.variant == "ro-1:challenger"


def test_a_schema_1_database_gains_the_variant_column_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    FeedbackStore(path).add_interactions([interaction("r-old")])
    with sqlite3.connect(path) as conn:  # back to how schema 1 wrote the file
        conn.execute("ALTER TABLE interactions DROP COLUMN variant")
        conn.execute("PRAGMA user_version=1")
    reopened = FeedbackStore(path, create=False)  # the CLI opens without create
    old = reopened.get_interaction("r-old")
    assert old is not None and old.variant is None
    reopened.add_interactions([replace(interaction("r-new"), variant="ro-2:champion")])
    new = reopened.get_interaction("r-new")
    assert new is not None and new.variant == "ro-2:champion"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
