"""Everything a request may need, created once per app (never module globals).

Cheap, configuration-only parts are built with the app; the model (slow, may fail) is loaded
in the background by ``runtime.loading.load_model`` so /health answers from the first second
and /ready says why while loading or after a failure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from loguru import logger

from server.agents.runtime import AskRuntime
from server.drift.metrics import DriftCollector
from server.drift.monitor import DriftMonitor
from server.engine.types import Engine, EngineStats
from server.feedback.records import ModelVersion
from server.feedback.service import FeedbackService
from server.observability.metrics import Metrics
from server.observability.tracing import Tracing, build_tracing
from server.runtime.drift import StoredRatings, build_drift
from server.runtime.embedder import EmbedderProvider
from server.runtime.readiness import Readiness
from server.security.api_keys import ApiKey, KeyStore, hash_key, load_keys_file, parse_key_entry
from server.security.guardrails import Guardrails
from server.security.rate_limit import RateLimiter
from server.settings import Settings


@dataclass(frozen=True)
class ModelMeta:
    """What the served GGUF says about itself (and its manifest, when it has one)."""

    architecture: str | None = None
    description: str | None = None
    n_params: int | None = None
    n_ctx_train: int | None = None
    size_bytes: int | None = None
    file_name: str | None = None
    lora_path: str | None = None
    created: int | None = None  # the file's mtime, as OpenAI's ``created``
    manifest_name: str | None = None
    quantization: str | None = None
    sha256: str | None = None  # from the manifest, or hashed at load when capture is on


@dataclass
class Services:
    """The app's state: settings, security, metrics and — once loaded — the engine."""

    settings: Settings
    readiness: Readiness
    keys: KeyStore
    metrics: Metrics
    limiter: RateLimiter | None
    guardrails: Guardrails | None
    embedder: EmbedderProvider
    model_id: str = "ggserve"
    engine: Engine | None = None
    model_meta: ModelMeta = field(default_factory=ModelMeta)
    ask: AskRuntime | None = None  # the /v1/ask agent and retriever, loaded with the model
    feedback: FeedbackService | None = None  # capture + /v1/feedback store; None when off

    @property
    def model_version(self) -> ModelVersion:
        """The version captured with each response: served name and GGUF sha256."""
        return ModelVersion(self.model_id, self.model_meta.sha256)

    background: list[asyncio.Task[None]] = field(default_factory=list)  # cancelled at shutdown
    drift: DriftMonitor | None = None  # None: GGSERVE_DRIFT_ENABLED=false
    tracing: Tracing = field(default_factory=Tracing)  # a no-op unless GGSERVE_OTLP_ENDPOINT


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
    services: Services | None = None

    def engine_stats() -> EngineStats | None:  # read by /metrics at scrape time
        engine = services.engine if services is not None else None
        return engine.stats() if engine is not None else None

    limiter = None
    if settings.rate_limit_rpm or settings.rate_limit_tpm:
        limiter = RateLimiter(
            settings.rate_limit_storage, settings.rate_limit_rpm, settings.rate_limit_tpm
        )
    guardrails = (
        Guardrails.from_file(settings.guardrails_file) if settings.guardrails_file else None
    )
    drift = build_drift(settings)
    metrics = Metrics(stats=engine_stats, load_state=lambda: readiness.state)
    if drift is not None:
        metrics.registry.register(DriftCollector(drift))
    services = Services(
        settings=settings,
        readiness=readiness,
        keys=build_key_store(settings),
        metrics=metrics,
        limiter=limiter,
        guardrails=guardrails,
        embedder=EmbedderProvider(settings.embedder_path),
        model_id=settings.model_alias or settings.model_path.stem,
        drift=drift,
        tracing=build_tracing(settings.otlp_endpoint),
    )
    if settings.capture != "off":
        metrics = services.metrics
        services.feedback = FeedbackService(
            settings.feedback_db,
            level=settings.capture,
            retention_days=settings.capture_retention_days,
            max_queue=settings.capture_queue,
            on_capture=lambda outcome, n: metrics.capture_records.labels(outcome=outcome).inc(n),
        )
        if drift is not None:
            drift.attach_feedback(StoredRatings(services.feedback))
    if not settings.auth_disabled and len(services.keys) == 0:
        logger.warning(
            "no API keys configured: every protected endpoint will answer 401. "
            "Create one with 'ggserve keys create' or set GGSERVE_AUTH_DISABLED=true."
        )
    return services
