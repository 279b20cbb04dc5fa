"""Which loaded model serves new requests, and when an old one may be freed.

A request takes a lease on the deployment current when it arrives and keeps it until its last
byte is sent, so a swap never moves a request mid-way: new requests go to the new model, the
ones in flight finish on the old, and the old one is closed by whoever returns its last lease
(or at once by the swap when none is out). Everything runs on the event loop thread; the lock
only guards against a stray call from a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class Deployment(Generic[T]):
    """One loaded model version and the requests still using it."""

    version: str  # "v2", or "file" when served from GGSERVE_MODEL_PATH outside a registry
    model: T
    inflight: int = 0
    retired: bool = False
    closed: bool = False
    served: int = field(default=0)  # requests that leased it, for the retirement log line


class ActiveModel(Generic[T]):
    """The current deployment and the retired ones still draining."""

    def __init__(self, close: Callable[[Deployment[T]], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._current: Deployment[T] | None = None
        self._draining: list[Deployment[T]] = []

    @property
    def current(self) -> Deployment[T] | None:
        """The deployment new requests get (None before the first load)."""
        return self._current

    @property
    def draining(self) -> list[Deployment[T]]:
        """Retired deployments with requests still in flight."""
        with self._lock:
            return list(self._draining)

    @contextmanager
    def lease(self) -> Iterator[Deployment[T] | None]:
        """Pin the current deployment for one request; None while nothing is loaded."""
        with self._lock:
            deployment = self._current
            if deployment is not None:
                deployment.inflight += 1
                deployment.served += 1
        try:
            yield deployment
        finally:
            if deployment is not None:
                self._release(deployment)

    def install(self, deployment: Deployment[T]) -> Deployment[T] | None:
        """Make ``deployment`` current; the previous one drains and is closed when idle.

        Returns the previous deployment (already closed when nothing was in flight on it).
        """
        with self._lock:
            previous, self._current = self._current, deployment
            close_now = False
            if previous is not None:
                previous.retired = True
                if previous.inflight == 0:
                    close_now = True
                else:
                    self._draining.append(previous)
        if previous is not None and close_now:
            self._finish(previous)
        return previous

    def close_all(self, close: Callable[[Deployment[T]], None] | None = None) -> None:
        """Shut down: close the current deployment and any still draining.

        ``close`` replaces the usual closer (at shutdown it must not hand work to an event
        loop that is about to stop).
        """
        with self._lock:
            victims = [*self._draining, *([self._current] if self._current else [])]
            self._draining.clear()
            self._current = None
        for deployment in victims:
            self._finish(deployment, close)

    def _release(self, deployment: Deployment[T]) -> None:
        with self._lock:
            deployment.inflight -= 1
            close_now = deployment.retired and deployment.inflight == 0 and not deployment.closed
            if close_now and deployment in self._draining:
                self._draining.remove(deployment)
        if close_now:
            self._finish(deployment)

    def _finish(
        self, deployment: Deployment[T], close: Callable[[Deployment[T]], None] | None = None
    ) -> None:
        with self._lock:
            if deployment.closed:
                return
            deployment.closed = True
        (close or self._close)(deployment)
