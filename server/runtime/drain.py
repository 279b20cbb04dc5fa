"""Graceful drain: what the server does between SIGTERM and exit.

1. ``/ready`` answers 503 at once, so load balancers (a Kubernetes Service) stop sending;
2. new generation requests get 503 + ``Retry-After`` (``ShuttingDown``), to retry elsewhere;
3. requests already in flight, streams included, run to completion, for up to ``timeout_s``;
4. at the deadline the engine is stopped: open streams end with an error event and a
   non-streaming request still waiting gets a 503, instead of a cut connection;
5. the HTTP server is told to exit, and the process exits 0.

``Drain`` is the state the HTTP layer reads; ``run_drain`` is the sequence above. Nothing here
knows about uvicorn (``cli/serve.py`` connects the signals) or about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

from loguru import logger

DEFAULT_DRAIN_TIMEOUT_S = 30.0
DEADLINE_GRACE_S = 5.0  # after the deadline: time for handlers to write their error events


class Drain:
    """Whether the server is draining, and how many requests it still serves."""

    def __init__(self, timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.started_at: float | None = None
        self.deadline_passed = False
        self._in_flight = 0
        self._changed = asyncio.Event()

    @property
    def draining(self) -> bool:
        """True from the first exit signal on."""
        return self.started_at is not None

    @property
    def in_flight(self) -> int:
        """Requests being served now (probes excluded)."""
        return self._in_flight

    def retry_after_s(self) -> int:
        """What a refused client is told to wait: a replica elsewhere can take it at once."""
        return 1

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count one request while it is served (wrap the whole request, streaming included)."""
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._changed.set()

    def begin(self) -> bool:
        """Start draining; False if it had already started."""
        if self.started_at is not None:
            return False
        self.started_at = time.monotonic()
        self._changed.set()
        return True

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while self._in_flight > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True


async def run_drain(
    drain: Drain,
    *,
    stop_generations: Callable[[], Awaitable[None]],
    exit_server: Callable[[], None],
) -> None:
    """The drain sequence (module doc): wait for in-flight work, cut what is left, exit."""
    if not drain.begin():
        return
    logger.bind(event="drain", in_flight=drain.in_flight, timeout_s=drain.timeout_s).warning(
        "exit signal: draining {} request(s) in flight, for up to {:.0f} s",
        drain.in_flight,
        drain.timeout_s,
    )
    started = time.monotonic()
    finished = await drain.wait_idle(drain.timeout_s)
    if not finished:
        drain.deadline_passed = True
        logger.bind(event="drain_deadline", in_flight=drain.in_flight).warning(
            "drain deadline reached with {} request(s) open: ending them with an error",
            drain.in_flight,
        )
        await stop_generations()
        await drain.wait_idle(DEADLINE_GRACE_S)
    logger.bind(
        event="drained", drain_s=round(time.monotonic() - started, 2), cut=not finished
    ).info("drained; exiting")
    exit_server()
