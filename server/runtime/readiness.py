"""The readiness state machine: ``loading → ready | failed(reason)``."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from server.engine.types import LoadState

_ALLOWED: dict[LoadState, set[LoadState]] = {
    "loading": {"ready", "failed"},
    "ready": {"loading"},  # a reload starts over
    "failed": {"loading"},
}


class InvalidTransitionError(RuntimeError):
    """A state change that the machine does not allow (a bug in the caller)."""


@dataclass(frozen=True)
class ReadinessSnapshot:
    state: LoadState
    reason: str | None
    since: float  # unix time of the last transition


class Readiness:
    """Thread-safe holder of the server's load state and, when failed, why."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = ReadinessSnapshot("loading", "loading the model", time.time())

    def snapshot(self) -> ReadinessSnapshot:
        with self._lock:
            return self._snapshot

    @property
    def state(self) -> LoadState:
        return self.snapshot().state

    @property
    def is_ready(self) -> bool:
        return self.state == "ready"

    def _move(self, new: LoadState, reason: str | None) -> None:
        with self._lock:
            current = self._snapshot.state
            if new not in _ALLOWED[current]:
                raise InvalidTransitionError(f"cannot go from {current} to {new}")
            self._snapshot = ReadinessSnapshot(new, reason, time.time())

    def loading(self, reason: str = "loading the model") -> None:
        self._move("loading", reason)

    def ready(self) -> None:
        self._move("ready", None)

    def failed(self, reason: str) -> None:
        self._move("failed", reason)
