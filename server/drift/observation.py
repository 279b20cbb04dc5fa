"""What drift is fed: one :class:`Observation` per answered request, one :class:`Rating` per
piece of feedback. Producers (the api layer, the CLI reading a file, the feedback store) build
these; drift never reaches into their storage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Longer questions are cut before they are kept: the embedder reads 256 tokens at most, and a
# window of observations must stay small in memory whatever clients send.
MAX_QUERY_CHARS = 2000

# finish_reason values meaning the model produced no answer of its own.
REFUSAL_REASONS = frozenset({"content_filter"})
NOT_GENERATED = frozenset({"content_filter", "no_context"})


@dataclass(frozen=True)
class Observation:
    """One answered request, as drift sees it.

    ``top_score`` is the best retrieval score *before* the threshold (None: nothing was
    retrieved, e.g. chat or no index); ``no_context`` is None where retrieval did not run.
    """

    at: float  # unix time
    route: str  # "ask", "chat", "completions", ...
    query: str
    finish_reason: str
    answer_tokens: int
    top_score: float | None = None
    no_context: bool | None = None

    @property
    def refused(self) -> bool:
        """The guardrails answered instead of the model."""
        return self.finish_reason in REFUSAL_REASONS

    @property
    def generated(self) -> bool:
        """The model produced the answer (so its length and finish reason mean something)."""
        return self.finish_reason not in NOT_GENERATED


def observation(
    *,
    at: float,
    route: str,
    query: str,
    finish_reason: str,
    answer_tokens: int,
    top_score: float | None = None,
    no_context: bool | None = None,
) -> Observation:
    """An :class:`Observation` with the query bounded to :data:`MAX_QUERY_CHARS`."""
    return Observation(
        at=at,
        route=route,
        query=query[:MAX_QUERY_CHARS],
        finish_reason=finish_reason,
        answer_tokens=max(0, answer_tokens),
        top_score=top_score,
        no_context=no_context,
    )


@dataclass(frozen=True)
class Rating:
    """One piece of user feedback: when, and whether it was negative."""

    at: float
    negative: bool


class FeedbackSource(Protocol):
    """Where ratings come from (the feedback store). Drift asks for those newer than a time."""

    def ratings_since(self, after: float, limit: int) -> Sequence[Rating]:
        """Up to ``limit`` ratings with ``at > after``, oldest first."""
        ...
