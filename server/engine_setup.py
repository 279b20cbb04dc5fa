"""Settings → a loaded, warmed engine. The only place that knows both Settings and the engine."""

from __future__ import annotations

from typing import Any

from convert.manifest import manifest_for_model, verify_model_sha256
from server.engine.types import Engine, FinishEvent, GenerationRequest, SamplingParams
from server.settings import Settings


def create_engine(settings: Settings) -> tuple[Engine, dict[str, Any]]:
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
    meta: dict[str, Any] = {
        "architecture": info.architecture,
        "description": info.description,
        "n_params": info.n_params,
        "n_ctx_train": info.n_ctx_train,
        "size_bytes": info.size_bytes,
        "file_name": info.file_name,
        "lora_path": info.lora_path,
        "created": int(path.stat().st_mtime),
    }
    if found is not None:
        manifest, artifact = found
        meta["manifest_name"] = manifest.name
        meta["quantization"] = artifact.quant
    return engine, meta


async def warm_up(engine: Engine) -> None:
    """One tiny greedy generation, so the first user does not pay for lazy initialisation."""
    tokens = engine.chat_prompt_tokens([{"role": "user", "content": "Hi"}])
    request = GenerationRequest("warmup", tokens, SamplingParams(max_tokens=2, temperature=0.0))
    async for event in engine.generate(request):
        if isinstance(event, FinishEvent) and event.finish_reason == "error":
            raise RuntimeError(f"warm-up generation failed: {event.error}")
