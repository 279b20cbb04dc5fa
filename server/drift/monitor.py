"""The server's drift state: the two windows, embeddings filled in lazily, the last report.

``observe`` is what the request path calls: an append under a lock, nothing else. The costly
part — embedding the queries that arrived since the last run, and the tests — happens in
``evaluate``, which the background loop runs in a worker thread on a schedule.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from server.drift.config import DriftConfig
from server.drift.observation import FeedbackSource, Observation, Rating
from server.drift.report import DriftReport
from server.drift.windows import WindowSample, evaluate

Vectors = npt.NDArray[np.float32]
T = TypeVar("T")


class TextEmbedder(Protocol):
    """What drift needs from an embedder (the real one is :class:`server.rag.embedder.Embedder`)."""

    def embed(self, texts: Sequence[str]) -> Vectors: ...


@dataclass
class _Entry:
    observation: Observation
    vector: Vectors | None = None  # filled by the next evaluation


class _Windows(Generic[T]):
    """A reference that fills first and then freezes, and a sliding current window after it."""

    def __init__(self, reference_size: int, window_size: int) -> None:
        self.reference_size = reference_size
        self.reference: list[T] = []
        self.current: deque[T] = deque(maxlen=window_size)
        self.frozen = False

    def add(self, item: T) -> None:
        if self.frozen:
            self.current.append(item)
            return
        self.reference.append(item)
        self.frozen = len(self.reference) >= self.reference_size

    def clear(self) -> None:
        self.reference = []
        self.current.clear()
        self.frozen = False


class DriftMonitor:
    """Observations in, :class:`DriftReport` out; thread-safe, one per app."""

    def __init__(
        self,
        config: DriftConfig,
        embedder: TextEmbedder | None = None,
        feedback: FeedbackSource | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._embedder = embedder
        self._feedback = feedback
        self._clock = clock
        self._lock = threading.Lock()
        self._evaluating = threading.Lock()
        self._observations: _Windows[_Entry] = _Windows(config.reference_size, config.window_size)
        self._ratings: _Windows[Rating] = _Windows(config.reference_size, config.window_size)
        self._ratings_after = clock()
        self._reference_source = "traffic"
        self.latest: DriftReport | None = None
        self.evaluations = 0
        self.observed = 0

    # --- inputs ---------------------------------------------------------------------------
    def observe(self, observation: Observation, vector: Vectors | None = None) -> None:
        """Record one answered request (cheap: called on the request path). ``vector`` is the
        question's embedding when the caller already has it (retrieval made one): it must come
        from the same embedder, and then the question is not embedded again."""
        with self._lock:
            self._observations.add(_Entry(observation, vector))
            self.observed += 1

    @property
    def has_embedder(self) -> bool:
        """Whether the query-embedding signal can be computed."""
        return self._embedder is not None

    def attach_embedder(self, embedder: TextEmbedder | None) -> None:
        """Use ``embedder`` for the query-embedding signal from the next evaluation on
        (the server's embedder loads after the app starts)."""
        self._embedder = embedder

    def attach_feedback(self, source: FeedbackSource | None) -> None:
        """Read ratings from ``source`` (the feedback store) from the next evaluation on."""
        self._feedback = source

    def set_reference(self, observations: Iterable[Observation], source: str) -> int:
        """Replace the reference with ``observations`` (e.g. a file of reference questions) and
        freeze it; the current window starts empty. Returns how many were kept."""
        entries = [_Entry(o) for o in observations][: self.config.reference_size]
        with self._lock:
            self._observations.clear()
            self._observations.reference = entries
            self._observations.frozen = True
            self._reference_source = source
        return len(entries)

    def reset_reference(self) -> None:
        """Start a new reference from the next requests (call when a new model version is
        promoted: what it is judged against is the traffic it starts serving)."""
        with self._lock:
            self._observations.clear()
            self._ratings.clear()
            self._ratings_after = self._clock()
            self._reference_source = "traffic"
            self.latest = None

    def model_promoted(self) -> bool:
        """A new model version serves: a reference taken from traffic starts over (the new
        version is judged against what it sees first); a reference file stays, since it
        describes the questions expected whatever the model. Returns True when reset."""
        with self._lock:
            from_traffic = self._reference_source == "traffic"
        if from_traffic:
            self.reset_reference()
        return from_traffic

    # --- evaluation -----------------------------------------------------------------------
    def _pull_ratings(self) -> None:
        if self._feedback is None:
            return
        limit = self.config.reference_size + self.config.window_size
        fresh: Sequence[Rating] = self._feedback.ratings_since(self._ratings_after, limit)
        with self._lock:
            for rating in fresh:
                self._ratings.add(rating)
                self._ratings_after = max(self._ratings_after, rating.at)

    def evaluate(self) -> DriftReport:
        """Embed what is new, run every test, keep and return the report (blocking: run it
        in a worker thread)."""
        with self._evaluating:
            self._pull_ratings()
            with self._lock:
                reference = list(self._observations.reference)
                current = list(self._observations.current)
                frozen = self._observations.frozen
                source = self._reference_source
                ratings_ref = list(self._ratings.reference)
                ratings_cur = list(self._ratings.current)
            embedder = self._embedder
            if embedder is not None:
                _embed_missing(embedder, reference + current)
            report = evaluate(
                _sample(reference, ratings_ref, embedder is not None),
                _sample(current, ratings_cur, embedder is not None),
                self.config,
                reference_source=source,
                reference_frozen=frozen,
                clock=self._clock,
            )
            self.latest = report
            self.evaluations += 1
            return report


def _embed_missing(embedder: TextEmbedder, entries: list[_Entry]) -> None:
    """Embed the queries of ``entries`` that have no vector yet (each is embedded once)."""
    todo = [e for e in entries if e.vector is None]
    if not todo:
        return
    vectors = embedder.embed([e.observation.query for e in todo])
    for entry, vector in zip(todo, vectors, strict=True):
        entry.vector = vector


def _sample(entries: list[_Entry], ratings: list[Rating], embedded: bool) -> WindowSample:
    vectors = [e.vector for e in entries if e.vector is not None]
    embeddings = np.vstack(vectors) if embedded and vectors else None
    if embedded and embeddings is None:
        embeddings = np.empty((0, 0), dtype=np.float32)
    return WindowSample([e.observation for e in entries], embeddings, ratings)
