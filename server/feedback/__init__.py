"""The serving side of the feedback loop: capture interactions, store feedback on them.

A domain package: it knows SQLite and JSON, never HTTP. The API layer calls
``CaptureWriter.submit`` after each response and ``FeedbackStore.put_feedback`` for
``POST /v1/feedback``; the CLI lists and labels through the same store, and
``flywheel/export.py`` turns the curated rows into datasets.
"""

from server.feedback.records import (
    CaptureLevel,
    CorrectionStatus,
    Feedback,
    Interaction,
    ModelVersion,
    Rating,
)
from server.feedback.store import FeedbackFilter, FeedbackStore, StoredFeedback

__all__ = [
    "CaptureLevel",
    "CorrectionStatus",
    "Feedback",
    "FeedbackFilter",
    "FeedbackStore",
    "Interaction",
    "ModelVersion",
    "Rating",
    "StoredFeedback",
]
