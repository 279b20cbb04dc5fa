"""The feedback flywheel's data side: capture interactions, store feedback, export datasets.

A domain package: it knows SQLite and JSON, never HTTP. The API layer calls
``CaptureWriter.submit`` after each response and ``FeedbackStore.put_feedback`` for
``POST /v1/feedback``; the CLI lists, labels and exports through the same store.
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
