"""The background loop: evaluate every ``interval_s`` in a worker thread, log what changed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from loguru import logger

from server.drift.monitor import DriftMonitor


async def run_drift_loop(
    monitor: DriftMonitor, before_each: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Evaluate forever at the configured interval; a failed run is logged and retried at the
    next tick (drift must never take the server down). ``before_each`` runs first at every
    tick (the runtime attaches the embedder there once it is loaded). Cancel to stop."""
    previous: bool | None = None
    while True:
        await asyncio.sleep(monitor.config.interval_s)
        try:
            if before_each is not None:
                await before_each()
            report = await asyncio.to_thread(monitor.evaluate)
        except Exception as exc:  # a bug or an embedder failure: keep serving, say why
            logger.warning("drift evaluation failed: {}: {}", type(exc).__name__, exc)
            continue
        flagged = [s.name for s in report.signals if s.drifted]
        if report.drifted != previous or flagged:
            logger.bind(
                drift_drifted=report.drifted,
                drift_flagged=flagged,
                drift_elapsed_s=round(report.elapsed_s, 3),
            ).info("drift evaluated: {}", ", ".join(flagged) if flagged else "no signal flagged")
        previous = report.drifted
