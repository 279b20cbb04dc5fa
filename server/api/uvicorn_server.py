"""Running the app under uvicorn with a graceful drain on SIGTERM/SIGINT.

uvicorn on its own stops accepting connections at the first signal (and sse-starlette, which
served the streams then, ended every open stream at once), so a rolling update cut users off
mid-answer. ``DrainingServer`` takes the
signals itself: the first one starts ``run_drain`` (server/runtime/drain.py) while the server
keeps accepting, so /ready can answer 503 and new generations 503 + Retry-After; only when the
drain is over is uvicorn told to exit. A second signal stops as uvicorn would: what still runs
gets ``GRACEFUL_SHUTDOWN_S``, then is cancelled.
The process exits 0 after a drain (uvicorn would re-raise the signal and exit 143/130).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from server.runtime.drain import run_drain
from server.runtime.services import Services
from server.settings import Settings

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# After the drain, uvicorn's own graceful shutdown only has idle connections left to close.
GRACEFUL_SHUTDOWN_S = 5


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first exit signal drains the app instead of stopping it."""

    def __init__(self, config: uvicorn.Config, services: Services) -> None:
        super().__init__(config)
        self._services = services
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """Serve until the drain (or a second signal) ends it."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Route SIGINT/SIGTERM to ``on_exit_signal`` while serving; restore them after."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.on_exit_signal) for sig in EXIT_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def on_exit_signal(self, sig: int, frame: FrameType | None) -> None:
        """First signal: start draining. Again (or before the loop runs): stop now."""
        if self._draining or self._loop is None:
            self.handle_exit(sig, frame)
            return
        self._draining = True
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(
            run_drain(
                self._services.drain,
                stop_generations=self._stop_generations,
                exit_server=self._exit,
            )
        )

    async def _stop_generations(self) -> None:
        # Closing the engine ends every open generation with an error event; the HTTP layer
        # reports it as "shutting down" (503 before the first byte, an error event after).
        engine = self._services.engine
        if engine is not None:
            await asyncio.to_thread(engine.close)

    def _exit(self) -> None:
        self.should_exit = True


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    """uvicorn's settings for ``app``: settings.host:port, and uvicorn's own log records sent
    through loguru like every other library's.

    ``log_config=None`` keeps uvicorn from installing its default logging config, whose
    handler printed its records as plain text past the JSON log (``propagate: false``): an
    "Exception in ASGI application" traceback was invisible to a reader of the JSON records,
    the soak's included. Without it, uvicorn's loggers reach the root logger, where
    ``configure_logging`` put the handler that hands records to loguru.
    """
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # Our middleware writes one JSON record per request; uvicorn's access log would repeat it.
        access_log=False,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # The client address is decided in one place, GGSERVE_TRUSTED_PROXIES
        # (security/client_address.py): uvicorn must not rewrite it from X-Forwarded-For first.
        proxy_headers=False,
    )


def serve(app: FastAPI, settings: Settings) -> None:
    """Run ``app`` on settings.host:port until a signal and its drain end it."""
    services: Services = app.state.services
    DrainingServer(uvicorn_config(app, settings), services).run()
