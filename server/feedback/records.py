"""What the flywheel stores: one ``Interaction`` per response, at most one ``Feedback`` on it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

CaptureLevel = Literal["off", "metadata", "full"]
CorrectionStatus = Literal["pending", "accepted", "rejected"]
RatingScale = Literal["thumbs", "stars"]
CAPTURE_LEVELS: tuple[CaptureLevel, ...] = ("off", "metadata", "full")
CORRECTION_STATUSES: tuple[CorrectionStatus, ...] = ("pending", "accepted", "rejected")


class RatingError(ValueError):
    """A rating that is neither a thumb (+1/-1) nor a star count (1–5)."""


@dataclass(frozen=True)
class ModelVersion:
    """The model that produced a response: its name and the sha256 of its GGUF file."""

    name: str
    sha256: str | None = None

    @property
    def label(self) -> str:
        """``name@sha12`` as shown by the CLI and the dataset card."""
        return f"{self.name}@{self.sha256[:12]}" if self.sha256 else self.name


@dataclass(frozen=True)
class Rating:
    """A thumb (+1/-1) or a star count (1–5), with the polarity used for KTO labels.

    ``1`` alone is ambiguous: it is read as a thumb up unless ``scale`` says stars.
    """

    value: int
    scale: RatingScale

    @classmethod
    def parse(cls, value: int, scale: RatingScale | None = None) -> Rating:
        """Check ``value`` against ``scale`` (inferred when None); raise RatingError."""
        if isinstance(value, bool) or not isinstance(value, int):
            raise RatingError("rating must be an integer: +1/-1 (thumbs) or 1-5 (stars)")
        if scale is None:
            scale = "thumbs" if value in (-1, 1) else "stars"
        if scale == "thumbs" and value not in (-1, 1):
            raise RatingError(f"a thumbs rating is +1 or -1, not {value}")
        if scale == "stars" and not 1 <= value <= 5:
            raise RatingError(f"a star rating is 1 to 5, not {value}")
        return cls(value, scale)

    @property
    def polarity(self) -> int:
        """+1 good, -1 bad, 0 neutral (three stars)."""
        if self.scale == "thumbs":
            return self.value
        return 1 if self.value >= 4 else -1 if self.value <= 2 else 0

    @property
    def label(self) -> str:
        """Metric label: ``up``/``down`` for thumbs, ``1``–``5`` for stars."""
        if self.scale == "thumbs":
            return "up" if self.value > 0 else "down"
        return f"{self.value}star"


@dataclass(frozen=True)
class Interaction:
    """One response as captured. Content fields are None below the ``full`` capture level."""

    response_id: str
    key_id: str
    route: str
    model: ModelVersion
    level: CaptureLevel
    created_at: float = field(default_factory=time.time)
    latency_ms: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None  # the raw prompt of a text completion (no messages)
    answer: str | None = None
    sources: list[dict[str, Any]] | None = None
    params: dict[str, Any] | None = None
    variant: str | None = None  # "ro-…:challenger": the rollout arm that answered, if any

    def at_level(self, level: CaptureLevel) -> Interaction:
        """This record with the content dropped unless ``level`` is ``full``."""
        if level == "full":
            return replace(self, level=level)
        return replace(
            self, level=level, messages=None, prompt=None, answer=None, sources=None, params=None
        )


@dataclass(frozen=True)
class Feedback:
    """A rating of one response by the key that asked for it."""

    response_id: str
    key_id: str
    rating: Rating
    comment: str | None = None
    correction: str | None = None
    tags: tuple[str, ...] = ()
