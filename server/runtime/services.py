"""Everything a request may need, created once per app (never module globals).

Cheap, configuration-only parts are built with the app; the model (slow, may fail) is loaded
in the background by ``runtime.loading.load_model`` so /health answers from the first second
and /ready says why while loading or after a failure.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from loguru import logger

from server.agents.runtime import AskRuntime
from server.chat.prompt import ChatPrompt
from server.drift.metrics import DriftCollector
from server.drift.monitor import DriftMonitor
from server.engine.types import Engine, EngineStats
from server.feedback.records import ModelVersion
from server.feedback.retention import purge_at_start
from server.feedback.service import FeedbackService
from server.observability.metrics import Metrics
from server.observability.model_server import ModelServerCollector, ServedInfo
from server.observability.tracing import Tracing, build_tracing
from server.registry.activation import ModelActivator
from server.registry.deployment import ActiveModel, Deployment
from server.rollout.controller import RolloutController
from server.runtime.drain import Drain
from server.runtime.drift import StoredRatings, build_drift
from server.runtime.embedder import EmbedderProvider
from server.runtime.model_file import ModelFile
from server.runtime.readiness import Readiness
from server.security.api_keys import ApiKey, KeyStore, hash_key, load_keys_file, parse_key_entry
from server.security.auth_failures import AuthFailureLimiter
from server.security.concurrency import ConcurrencyLimiter
from server.security.guardrails import Guardrails
from server.security.rate_limit import RateLimiter
from server.settings import Settings, is_loopback_host


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


UNREGISTERED = "unregistered"  # the version label of a model served outside the registry


@dataclass(frozen=True)
class ServedModel:
    """One loaded model version: what a request pins for its whole life."""

    engine: Engine
    meta: ModelMeta
    model_id: str
    version: str  # "v2" from the registry, or UNREGISTERED
    path: str  # the GGUF file
    sha256: str | None = None  # of the GGUF: the registry's, else the manifest's or hashed
    # Its champion/challenger rollout and the adapter requests for it get by default.
    rollout: RolloutController = field(default_factory=RolloutController, compare=False)
    # Adapters loaded from the registry at run time: name -> registry version.
    adapter_versions: dict[str, int] = field(default_factory=dict, compare=False)

    @cached_property
    def chat(self) -> ChatPrompt:
        """Its chat template over its tokenizer, compiled once (the warm-up does it at load)."""
        return ChatPrompt(self.engine)

    @property
    def capture_version(self) -> ModelVersion:
        """How capture records name this model: the registry version (``v2``) when it has
        one, so ``ggserve feedback list --model v2`` finds its responses, else its name."""
        name = self.model_id if self.version == UNREGISTERED else self.version
        return ModelVersion(name, self.sha256 or self.meta.sha256)


@dataclass
class Services:
    """The app's state: settings, security, metrics and — once loaded — the served model.

    ``models`` holds the version new requests get and the retired ones still finishing; a
    request leases one for its whole life (``api.deps.served_model``), so a hot swap never
    moves a request between engines.
    """

    settings: Settings
    readiness: Readiness
    keys: KeyStore
    metrics: Metrics
    limiter: RateLimiter | None
    guardrails: Guardrails | None
    embedder: EmbedderProvider
    models: ActiveModel[ServedModel]
    default_model_id: str = "ggserve"  # reported until a model is loaded
    activator: ModelActivator[ServedModel] | None = None  # set when a registry is configured
    ask: AskRuntime | None = None  # the /v1/ask agent and retriever, loaded with the model
    model_file: ModelFile | None = None  # the GGUF on disk, as it was when loaded
    drain: Drain = field(default_factory=Drain)  # SIGTERM: refuse new work, finish the old
    auth_failures: AuthFailureLimiter | None = None  # brute force: 429 after repeated 401s
    concurrency: ConcurrencyLimiter | None = None  # per-key in-flight cap; None when 0 (off)
    feedback: FeedbackService | None = None  # capture + /v1/feedback store; None when off
    background: list[asyncio.Task[None]] = field(default_factory=list)  # cancelled at shutdown
    drift: DriftMonitor | None = None  # None: GGSERVE_DRIFT_ENABLED=false
    tracing: Tracing = field(default_factory=Tracing)  # a no-op unless GGSERVE_OTLP_ENDPOINT

    @property
    def model_version(self) -> ModelVersion:
        """The version captured with the responses of the current model (see ServedModel)."""
        served = self.served
        return served.capture_version if served is not None else ModelVersion(self.model_id)

    @property
    def served(self) -> ServedModel | None:
        """The model new requests go to (None until the first load)."""
        current = self.models.current
        return current.model if current is not None else None

    @property
    def engine(self) -> Engine | None:
        """The engine new requests go to."""
        served = self.served
        return served.engine if served is not None else None

    @property
    def model_meta(self) -> ModelMeta:
        """What the current model's GGUF and manifest say."""
        served = self.served
        return served.meta if served is not None else ModelMeta()

    @property
    def model_id(self) -> str:
        """The name /v1/models reports for the current model."""
        served = self.served
        return served.model_id if served is not None else self.default_model_id

    @property
    def served_version(self) -> str | None:
        """``v2`` (registry) or ``unregistered``; None until loaded."""
        served = self.served
        return served.version if served is not None else None


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

    def retire(deployment: Deployment[ServedModel]) -> None:
        # Called when a swapped-out model's last request has finished (or at once when none
        # was in flight); closing joins the engine thread, so it runs off the event loop.
        close_retired(deployment)

    def served_info() -> ServedInfo:  # read by /metrics at scrape time
        if services is None:
            return ServedInfo(settings.model_alias or settings.model_path.stem)
        lora = services.model_meta.lora_path
        return ServedInfo(services.model_id, (Path(lora).stem,) if lora else ())

    keys = build_key_store(settings)
    metrics = Metrics(
        stats=engine_stats, load_state=lambda: readiness.state, key_label=keys.metrics_label
    )
    metrics.registry.register(
        ModelServerCollector(engine_stats, served_info, vllm_names=settings.metrics_vllm_names)
    )
    limiter = None
    if settings.rate_limit_rpm or settings.rate_limit_tpm:
        limiter = RateLimiter(
            settings.rate_limit_storage,
            settings.rate_limit_rpm,
            settings.rate_limit_tpm,
            on_storage_error=lambda _exc: metrics.rate_limit_storage_errors.inc(),
        )
    guardrails = (
        Guardrails.from_file(settings.guardrails_file) if settings.guardrails_file else None
    )
    drift = build_drift(settings)
    if drift is not None:
        metrics.registry.register(DriftCollector(drift))
    services = Services(
        settings=settings,
        readiness=readiness,
        keys=keys,
        metrics=metrics,
        limiter=limiter,
        guardrails=guardrails,
        embedder=EmbedderProvider(settings.embedder_path, settings.embedder_threads),
        models=ActiveModel(close=retire),
        default_model_id=settings.model_alias or settings.model_path.stem,
        drain=Drain(settings.drain_timeout_s),
        concurrency=(
            ConcurrencyLimiter(settings.max_concurrent_per_key)
            if settings.max_concurrent_per_key
            else None
        ),
        auth_failures=(
            AuthFailureLimiter(settings.auth_failure_limit, settings.auth_failure_window_s)
            if settings.auth_failure_limit
            else None
        ),
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
    else:  # nothing captures now, but what was captured before must still leave on time
        purge_at_start(settings.feedback_db, settings.capture_retention_days)
    if settings.auth_disabled and not is_loopback_host(settings.host):
        logger.warning(
            "AUTH IS DISABLED on {} (not a loopback address): anyone who reaches it is served "
            "(GGSERVE_AUTH_DISABLED_ALLOW_NETWORK=true; docs/security.md)",
            settings.host,
        )
    if not settings.auth_disabled and len(services.keys) == 0:
        logger.warning(
            "no API keys configured: every protected endpoint will answer 401. "
            "Create one with 'ggserve keys create' or set GGSERVE_AUTH_DISABLED=true."
        )
    return services


def close_retired(deployment: Deployment[ServedModel]) -> None:
    """Free a model nobody uses any more: off the event loop when one is running."""

    def close() -> None:
        try:
            deployment.model.engine.close()
        except Exception as exc:  # nobody awaits this: say it here, never lose it
            logger.bind(event="model_retire_failed", model_version=deployment.version).error(
                "freeing model {} failed: {}", deployment.version, exc
            )
            return
        logger.bind(
            event="model_retired", model_version=deployment.version, requests=deployment.served
        ).info("model {} freed after its last request", deployment.version)

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        close()
        return
    loop.run_in_executor(None, close)
