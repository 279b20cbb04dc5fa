"""Everything a request may need, created once per app (never module globals).

Cheap, configuration-only parts are built with the app; the model (slow, may fail) is loaded
in the background by ``load_model`` so /health answers from the first second and /ready says
why while loading or after a failure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from loguru import logger

from server.engine.types import Engine
from server.generation import GenerationService
from server.observability.metrics import Metrics
from server.readiness import Readiness
from server.security.api_keys import ApiKey, KeyStore, hash_key, load_keys_file, parse_key_entry
from server.security.guardrails import Guardrails
from server.security.rate_limit import RateLimiter
from server.settings import Settings

INDEX_WATCH_TASK = "index_watch_task"  # key in Services.extras


@dataclass
class Services:
    """The app's state: settings, security, metrics and — once loaded — the engine."""

    settings: Settings
    readiness: Readiness
    keys: KeyStore
    metrics: Metrics
    limiter: RateLimiter | None
    guardrails: Guardrails | None
    engine: Engine | None = None
    generation: GenerationService | None = None
    model_id: str = "ggserve"
    model_meta: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)  # optional subsystems (rag, embedder…)


def build_key_store(settings: Settings) -> KeyStore:
    """Keys from GGSERVE_API_KEYS (hashes), the keys file, and the dev plaintext key."""
    keys: list[ApiKey] = [parse_key_entry(entry) for entry in settings.api_keys]
    if settings.api_keys_file is not None:
        keys += load_keys_file(settings.api_keys_file)
    if settings.api_key is not None:
        secret = settings.api_key.get_secret_value()
        keys.append(ApiKey(key_id="env", name="GGSERVE_API_KEY", sha256=hash_key(secret)))
    return KeyStore(keys)


def build_services(settings: Settings) -> Services:
    """Everything but the model. Raises on configuration errors (bad key file, bad policy)."""
    readiness = Readiness()
    holder: dict[str, Services] = {}

    def stats() -> Any:
        services = holder.get("s")
        return services.engine.stats() if services and services.engine else None

    metrics = Metrics(stats=stats, load_state=lambda: readiness.state)
    limiter = None
    if settings.rate_limit_rpm or settings.rate_limit_tpm:
        limiter = RateLimiter(
            settings.rate_limit_storage, settings.rate_limit_rpm, settings.rate_limit_tpm
        )
    guardrails = (
        Guardrails.from_file(settings.guardrails_file) if settings.guardrails_file else None
    )
    services = Services(
        settings=settings,
        readiness=readiness,
        keys=build_key_store(settings),
        metrics=metrics,
        limiter=limiter,
        guardrails=guardrails,
        model_id=settings.model_alias or settings.model_path.stem,
    )
    holder["s"] = services
    if not settings.auth_disabled and len(services.keys) == 0:
        logger.warning(
            "no API keys configured: every protected endpoint will answer 401. "
            "Create one with 'ggserve keys create' or set GGSERVE_AUTH_DISABLED=true."
        )
    return services


async def load_model(services: Services) -> None:
    """Load and warm the engine off the event loop; record ready or failed(reason)."""
    from server.agents.runtime import ASK_RUNTIME, load_ask_runtime, watch_index
    from server.embeddings import get_embedder
    from server.engine_setup import create_engine, warm_up

    settings = services.settings
    started = time.perf_counter()
    try:
        engine, meta = await asyncio.to_thread(create_engine, settings)
        if settings.warmup:
            await warm_up(engine)
        # The agent and the document index are part of "ready": a missing index, an index
        # built with another embedder or an agent that cannot be imported fail here, not on
        # the first question.
        runtime = await load_ask_runtime(settings, lambda: get_embedder(services))
    except Exception as exc:  # any failure keeps the process up and is reported on /ready
        reason = str(exc) or exc.__class__.__name__
        logger.error("model load failed: {}", reason)
        services.readiness.failed(reason)
        return
    services.engine = engine
    services.model_meta = meta
    services.extras[ASK_RUNTIME] = runtime
    if settings.model_alias is None and meta.get("manifest_name"):
        services.model_id = str(meta["manifest_name"])
    services.generation = GenerationService(
        engine,
        services.metrics,
        services.limiter,
        services.guardrails,
        max_tokens_default=settings.max_tokens_default,
        max_tokens_limit=settings.max_tokens_limit,
    )
    if settings.index_watch_s > 0 and runtime.retrievers is not None:
        services.extras[INDEX_WATCH_TASK] = asyncio.create_task(
            watch_index(
                runtime,
                settings.index_watch_s,
                on_reload=lambda r: logger.bind(event="index_reload", **asdict(r)).info(
                    "index reloaded: {}", r.version
                ),
                on_error=lambda e: logger.error("index reload failed, old version serves: {}", e),
            ),
            name="index-watch",
        )
    services.readiness.ready()
    logger.bind(
        event="model_loaded",
        load_s=round(time.perf_counter() - started, 2),
        **{k: v for k, v in meta.items() if isinstance(v, str | int | float | bool) or v is None},
    ).info("model ready: {}", settings.model_path)
