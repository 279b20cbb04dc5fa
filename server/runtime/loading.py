"""Settings → a loaded, warmed engine and the /v1/ask runtime, recorded on ``Services``.

The only place that knows both ``Settings`` and the engine's own configuration.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict

from loguru import logger

from convert.manifest import manifest_for_model, sha256_file, verify_model_sha256
from server.agents.runtime import load_ask_runtime, watch_index
from server.engine.types import Engine, FinishEvent, GenerationRequest, SamplingParams
from server.runtime.services import ModelMeta, Services
from server.settings import Settings


def create_engine(settings: Settings) -> tuple[Engine, ModelMeta]:
    """Load the model described by ``settings``; blocking, run it in a thread."""
    from server.engine.llama_engine import EngineConfig, LlamaEngine

    path = settings.model_path
    # The manifest format is shared with the converter: the one allowed server→convert import.
    found = manifest_for_model(path) if path.is_file() else None
    if settings.verify_sha256:
        verify_model_sha256(path)
    config = EngineConfig(
        model_path=path,
        n_slots=settings.n_slots,
        n_ctx=settings.n_ctx,
        n_batch=settings.n_batch,
        n_ubatch=settings.n_ubatch,
        n_threads=settings.n_threads,
        n_threads_batch=settings.n_threads_batch,
        n_gpu_layers=settings.n_gpu_layers,
        flash_attn=settings.flash_attn,
        kv_cache_type=settings.kv_cache_type,
        max_queue=settings.max_queue,
        request_timeout_s=settings.request_timeout_s,
        lora_path=settings.lora_path,
        lora_scale=settings.lora_scale,
    )
    engine = LlamaEngine(config)
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


async def warm_up(engine: Engine) -> None:
    """One tiny greedy generation, so the first user does not pay for lazy initialisation."""
    tokens = engine.chat_prompt_tokens([{"role": "user", "content": "Hi"}])
    request = GenerationRequest("warmup", tokens, SamplingParams(max_tokens=2, temperature=0.0))
    async for event in engine.generate(request):
        if isinstance(event, FinishEvent) and event.finish_reason == "error":
            raise RuntimeError(f"warm-up generation failed: {event.error}")


async def load_model(services: Services) -> None:
    """Load and warm the engine off the event loop; record ready or failed(reason)."""
    settings = services.settings
    started = time.perf_counter()
    try:
        engine, meta = await asyncio.to_thread(create_engine, settings)
        if settings.warmup:
            await warm_up(engine)
        # The agent and the document index are part of "ready": a missing index, an index
        # built with another embedder or an agent that cannot be imported fail here, not on
        # the first question.
        ask = await load_ask_runtime(settings, services.embedder.get)
    except Exception as exc:  # any failure keeps the process up and is reported on /ready
        reason = str(exc) or exc.__class__.__name__
        logger.error("model load failed: {}", reason)
        services.readiness.failed(reason)
        return
    services.engine = engine
    services.model_meta = meta
    services.ask = ask
    if settings.model_alias is None and meta.manifest_name:
        services.model_id = meta.manifest_name
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
        event="model_loaded", load_s=round(time.perf_counter() - started, 2), **asdict(meta)
    ).info("model ready: {}", settings.model_path)
