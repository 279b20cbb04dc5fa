"""A store in a temporary folder and a helper that captures interactions into it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from server.feedback.records import Interaction, ModelVersion
from server.feedback.store import FeedbackStore

MODEL = ModelVersion("smollm2-135m", "ab" * 32)


def interaction(
    response_id: str, question: str = "What is the capital of Zembla?", **kw: object
) -> Interaction:
    """A fully captured /v1/ask response."""
    fields: dict[str, object] = {
        "key_id": "k1",
        "route": "/v1/ask",
        "model": MODEL,
        "level": "full",
        "messages": [{"role": "user", "content": question}],
        "answer": "The capital of Zembla is Paris.",
        "latency_ms": 120.0,
        "prompt_tokens": 30,
        "completion_tokens": 9,
        "finish_reason": "stop",
        **kw,
    }
    return Interaction(response_id=response_id, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    return FeedbackStore(tmp_path / "feedback.db")


@pytest.fixture
def add(store: FeedbackStore) -> Callable[..., Interaction]:
    def _add(
        response_id: str, question: str = "What is the capital of Zembla?", **kw: object
    ) -> Interaction:
        record = interaction(response_id, question, **kw)
        store.add_interactions([record])
        return record

    return _add
