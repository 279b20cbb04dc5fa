"""Drift in the running server: the monitor built from settings, and its background task."""

from __future__ import annotations

from collections.abc import Sequence

from loguru import logger

from server.drift.config import DriftConfig
from server.drift.monitor import DriftMonitor
from server.drift.observation import Rating
from server.drift.records import RecordError, read_records
from server.drift.schedule import run_drift_loop
from server.feedback.service import FeedbackService
from server.feedback.store import FeedbackFilter, StoreError
from server.rag.errors import RagError
from server.runtime.embedder import EmbedderProvider
from server.settings import Settings


def drift_config(settings: Settings) -> DriftConfig:
    """The drift settings as one value; raises ValueError on a combination that could never
    reach a verdict (e.g. a minimum sample larger than the windows)."""
    return DriftConfig(
        reference_size=settings.drift_reference_size,
        window_size=settings.drift_window_size,
        min_samples=settings.drift_min_samples,
        min_feedback=settings.drift_min_feedback,
        permutations=settings.drift_permutations,
        alpha=settings.drift_alpha,
        interval_s=settings.drift_interval_s,
    )


def build_drift(settings: Settings) -> DriftMonitor | None:
    """The app's monitor (None when drift is off), with the reference file loaded if one is
    set. Raises ValueError with the reason on bad settings or an unreadable reference file."""
    if not settings.drift_enabled:
        return None
    try:
        config = drift_config(settings)
    except ValueError as exc:
        raise ValueError(f"drift settings: {exc}") from exc
    monitor = DriftMonitor(config)
    path = settings.drift_reference_file
    if path is not None:
        if not path.is_file():
            raise ValueError(f"GGSERVE_DRIFT_REFERENCE_FILE {path} is not a file")
        try:
            kept = monitor.set_reference(read_records(path, config.reference_size), str(path))
        except RecordError as exc:
            raise ValueError(f"GGSERVE_DRIFT_REFERENCE_FILE: {exc}") from exc
        logger.info("drift reference: {} questions from {}", kept, path)
    return monitor


# Ratings usually follow their answer within minutes; a rating of an answer older than this
# reaches drift only if it is among the newest (the store filters by the answer's time).
RATING_LOOKBACK_S = 86_400.0


class StoredRatings:
    """The feedback store as drift's :class:`server.drift.observation.FeedbackSource`.

    A rating counts at the time it was last given (an overwritten rating counts again). A
    store that cannot be read yields nothing this time and says so in the log: drift goes on.
    """

    def __init__(self, feedback: FeedbackService) -> None:
        self._feedback = feedback

    def ratings_since(self, after: float, limit: int) -> Sequence[Rating]:
        """Up to ``limit`` ratings given after ``after``, oldest first."""
        try:
            rows = self._feedback.store().list_feedback(
                FeedbackFilter(since=after - RATING_LOOKBACK_S)
            )
        except StoreError as exc:
            logger.warning("drift cannot read ratings this time: {}", exc)
            return []
        fresh = sorted((r for r in rows if r.updated_at > after), key=lambda r: r.updated_at)
        return [Rating(r.updated_at, r.feedback.rating.polarity < 0) for r in fresh[:limit]]


class EmbedderAttacher:
    """Gives the monitor the server's embedder once it is worth having.

    The embedder may already be loaded (an index, /v1/embeddings); otherwise it is loaded once
    the windows hold enough questions for a verdict. A load failure is logged once and the
    other signals go on without the embedding test.
    """

    def __init__(self, monitor: DriftMonitor, embedder: EmbedderProvider) -> None:
        self._monitor = monitor
        self._embedder = embedder
        self._failed = False

    async def __call__(self) -> None:
        """Attach the embedder if it is loaded or due; never raises for a load failure."""
        if self._monitor.has_embedder or self._failed:
            return
        loaded = self._embedder.loaded
        if loaded is None and self._monitor.observed >= self._monitor.config.min_samples:
            try:
                loaded = await self._embedder.get()
            except RagError as exc:
                self._failed = True
                logger.warning("drift runs without the query-embedding test: {}", exc)
                return
        self._monitor.attach_embedder(loaded)


async def run_drift(monitor: DriftMonitor, embedder: EmbedderProvider) -> None:
    """The background task: evaluate on schedule until cancelled."""
    await run_drift_loop(monitor, EmbedderAttacher(monitor, embedder))
