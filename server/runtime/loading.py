"""Settings → a loaded, warmed engine and the /v1/ask runtime, recorded on ``Services``.

The only place that knows both ``Settings`` and the engine's own configuration.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from pathlib import Path

from loguru import logger

from artifacts.digest import sha256_file
from artifacts.manifest import manifest_for_model, verify_model_sha256
from artifacts.registry import ModelRegistry, RegisteredVersion, RegistryError
from server.agents.runtime import load_ask_runtime, watch_index
from server.chat.prompt import ChatPrompt
from server.engine.types import Engine, FinishEvent, GenerationRequest, SamplingParams
from server.registry.activation import ModelActivator
from server.registry.deployment import Deployment
from server.runtime.adapters import adopt_default_adapter
from server.runtime.engine_config import engine_config
from server.runtime.model_file import ModelFile
from server.runtime.services import UNREGISTERED, ModelMeta, ServedModel, Services
from server.settings import Settings


def create_engine(settings: Settings) -> tuple[Engine, ModelMeta]:
    """Load the model described by ``settings``; blocking, run it in a thread."""
    from server.engine.llama_engine import LlamaEngine

    path = settings.model_path
    # The manifest is written by the converter and read here through artifacts/, below both.
    found = manifest_for_model(path) if path.is_file() else None
    if settings.verify_sha256:
        verify_model_sha256(path)
    engine = LlamaEngine(engine_config(settings))
    info = engine.model_info()
    meta = ModelMeta(
        architecture=info.architecture,
        description=info.description,
        n_params=info.n_params,
        n_ctx_train=info.n_ctx_train,
        size_bytes=info.size_bytes,
        file_name=info.file_name,
        lora_path=info.lora_path,
        created=int(path.stat().st_mtime),
        manifest_name=found[0].name if found else None,
        quantization=found[1].quant if found else None,
        sha256=found[1].sha256 if found else _hash_for_capture(settings),
    )
    return engine, meta


def _hash_for_capture(settings: Settings) -> str | None:
    """The GGUF's sha256 when captured responses must name their model version and no
    manifest records it (about 1 s per GB, once at load)."""
    if settings.capture == "off" or not settings.model_path.is_file():
        return None
    started = time.perf_counter()
    digest = sha256_file(settings.model_path)
    logger.bind(event="model_hashed", seconds=round(time.perf_counter() - started, 2)).info(
        "model sha256 {}… (for capture records)", digest[:12]
    )
    return digest


async def warm_up(engine: Engine, chat: ChatPrompt) -> None:
    """One tiny greedy generation, so the first user does not pay for lazy initialisation."""
    tokens = chat.tokens([{"role": "user", "content": "Hi"}])
    request = GenerationRequest("warmup", tokens, SamplingParams(max_tokens=2, temperature=0.0))
    async for event in engine.generate(request):
        if isinstance(event, FinishEvent) and event.finish_reason == "error":
            raise RuntimeError(f"warm-up generation failed: {event.error}")


async def load_served_model(
    settings: Settings, path: Path, version: str, sha256: str | None = None
) -> ServedModel:
    """Load and warm ``path`` as model ``version``; raises whatever stops it (nothing swapped)."""
    if path != settings.model_path:
        # A registry version is a complete GGUF: the runtime LoRAs were for the other base.
        settings = settings.model_copy(
            update={"model_path": path, "lora_path": None, "lora_adapters": ""}
        )
    engine, meta = await asyncio.to_thread(create_engine, settings)
    try:
        model_id = settings.model_alias or meta.manifest_name or path.stem
        served = ServedModel(
            engine=engine,
            meta=meta,
            model_id=model_id,
            version=version,
            path=str(path),
            sha256=sha256,
        )
        if settings.warmup:
            await warm_up(engine, served.chat)
    except BaseException:
        engine.close()
        raise
    return served


async def _startup_model(services: Services) -> ServedModel:
    """The registry's active version when a registry is configured, else GGSERVE_MODEL_PATH."""
    settings = services.settings
    if settings.registry_path is None:
        return await load_served_model(settings, settings.model_path, UNREGISTERED)
    registry = ModelRegistry(settings.registry_path)

    async def load_version(entry: RegisteredVersion) -> ServedModel:
        served = await load_served_model(
            settings, Path(entry.model_path), entry.label, entry.sha256
        )
        await adopt_default_adapter(registry, served)
        return served

    services.activator = ModelActivator(registry, services.models, load_version)
    active = (await asyncio.to_thread(registry.read)).active_version
    if active is None:
        logger.warning(
            "registry {} has no active version: serving {} until one is promoted",
            settings.registry_path,
            settings.model_path,
        )
        return await load_served_model(settings, settings.model_path, UNREGISTERED)
    actual = await asyncio.to_thread(sha256_file, Path(active.model_path))
    if actual != active.sha256:
        raise RegistryError(
            f"{active.model_path} changed since {active.label} was registered; register the "
            "new file as a new version and promote it"
        )
    return await load_version(active)


async def load_model(services: Services) -> None:
    """Load and warm the engine off the event loop; record ready or failed(reason)."""
    settings = services.settings
    started = time.perf_counter()
    try:
        served = await _startup_model(services)
        # The agent and the document index are part of "ready": a missing index, an index
        # built with another embedder or an agent that cannot be imported fail here, not on
        # the first question.
        try:
            ask = await load_ask_runtime(settings, services.embedder.get)
        except BaseException:
            served.engine.close()
            raise
    except Exception as exc:  # any failure keeps the process up and is reported on /ready
        reason = str(exc) or exc.__class__.__name__
        logger.error("model load failed: {}", reason)
        services.readiness.failed(reason)
        return
    services.models.install(Deployment(served.version, served))
    services.metrics.serving(served.model_id, served.version)
    meta = served.meta
    services.model_file = ModelFile.observe(Path(served.path))
    services.ask = ask
    if settings.index_watch_s > 0 and ask.retrievers is not None:
        services.background.append(
            asyncio.create_task(
                watch_index(
                    ask,
                    settings.index_watch_s,
                    on_reload=lambda r: logger.bind(event="index_reload", **asdict(r)).info(
                        "index reloaded: {}", r.version
                    ),
                    on_error=lambda e: logger.error(
                        "index reload failed, old version serves: {}", e
                    ),
                ),
                name="index-watch",
            )
        )
    services.readiness.ready()
    logger.bind(
        event="model_loaded",
        load_s=round(time.perf_counter() - started, 2),
        model_version=served.version,
        **asdict(meta),
    ).info("model ready: {} ({})", served.model_id, served.version)
