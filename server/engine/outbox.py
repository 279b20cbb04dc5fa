"""Hand events from the engine thread to asyncio consumers, once per engine step.

Calling ``loop.call_soon_threadsafe`` per token wakes the event loop (a self-pipe write and a
Python callback) once per token *per request*: hundreds of times a second at 8 streams. Each
wake-up competes for the GIL and for a core with the decode threads, and an OpenMP barrier
stalls whenever one of its threads is preempted. Batching the step's events into one
callback per event loop keeps the streams identical and the interruptions few.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

E = TypeVar("E")


@dataclass
class _Delivery(Generic[E]):
    queue: asyncio.Queue[E]
    event: E
    on_undeliverable: Callable[[], None]


@dataclass
class Outbox(Generic[E]):
    """Collects (queue, event) pairs on the engine thread; ``flush`` delivers them in order."""

    _pending: dict[asyncio.AbstractEventLoop, list[_Delivery[E]]] = field(default_factory=dict)

    def put(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[E],
        event: E,
        on_undeliverable: Callable[[], None],
    ) -> None:
        """Queue ``event`` for ``queue`` (owned by ``loop``); engine thread only."""
        self._pending.setdefault(loop, []).append(_Delivery(queue, event, on_undeliverable))

    def flush(self) -> None:
        """One ``call_soon_threadsafe`` per event loop for everything queued since last flush."""
        pending, self._pending = self._pending, {}
        for loop, deliveries in pending.items():
            try:
                loop.call_soon_threadsafe(_deliver, deliveries)
            except RuntimeError:  # that event loop is closed: nobody is listening any more
                for delivery in deliveries:
                    delivery.on_undeliverable()


def _deliver(deliveries: list[_Delivery[E]]) -> None:
    for delivery in deliveries:
        delivery.queue.put_nowait(delivery.event)
