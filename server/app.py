"""``create_app(settings)``: the FastAPI application, its middleware, routers and lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from loguru import logger

from server.api import admin, admin_adapters, admin_rollout, health
from server.api.ask import api_router as ask_router
from server.api.deps import reject_invalid_text
from server.api.errors import install_error_handlers
from server.api.feedback import api_router as feedback_router
from server.api.middleware import RequestContextMiddleware
from server.api.openai import api_router as openai_router
from server.api.openapi import install_openapi
from server.api.responses import api_router as responses_router
from server.api.tokenize import api_router as tokenize_router
from server.api.ui import api_router as ui_router
from server.observability.logging import configure_logging
from server.runtime.drift import run_drift
from server.runtime.loading import load_model
from server.runtime.services import Services, build_services
from server.settings import Settings

API_DESCRIPTION = """
llama.cpp edge server: OpenAI-compatible chat/completions/embeddings, a retrieval-grounded
`/v1/ask`, API keys, rate limits and Prometheus metrics. Send the key as `X-API-KEY` or
`Authorization: Bearer`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. Configuration errors (bad key file, bad policy) raise here, at start."""
    settings = settings or Settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_file)
    services = build_services(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services.limiter is not None:
            await services.limiter.check()
        if services.feedback is not None:
            services.feedback.start()
        loader = asyncio.create_task(load_model(services), name="load-model")
        if services.drift is not None:
            drift = run_drift(services.drift, services.embedder)
            services.background.append(asyncio.create_task(drift, name="drift"))
        try:
            yield
        finally:
            for task in (loader, *services.background):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            _shutdown(services)

    # FastAPIOffline serves Swagger UI / ReDoc assets from the installed package, not a CDN.
    app = FastAPIOffline(
        title="ggserve",
        version=_version(),
        description=API_DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(reject_invalid_text)],
    )
    app.state.services = services
    install_error_handlers(app)
    install_openapi(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-KEY", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    # Added last = outermost: every response, even an error from CORS or routing, gets an id.
    app.add_middleware(
        RequestContextMiddleware,
        metrics=services.metrics,
        max_body_bytes=settings.max_body_bytes,
        drain=services.drain,
        tracing=services.tracing,
    )
    health.attach_router(app)
    openai_router.attach_router(app)
    ask_router.attach_router(app)
    feedback_router.attach_router(app)
    admin.attach_router(app)
    admin_adapters.attach_router(app)
    admin_rollout.attach_router(app)
    tokenize_router.attach_router(app)
    responses_router.attach_router(app)
    if settings.ui:
        ui_router.attach_router(app)
    return app


def _shutdown(services: Services) -> None:
    if services.feedback is not None:
        services.feedback.close()  # writes what is still queued
    if services.engine is not None:
        logger.info("shutting down the engine")
    services.models.close_all(lambda deployment: deployment.model.engine.close())
    services.tracing.shutdown()  # flushes spans still queued for the collector


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ggserve")
    except PackageNotFoundError:
        return "0+unknown"
