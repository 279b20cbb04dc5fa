"""``ggserve serve``: run the HTTP server. Every option also has a GGSERVE_* variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from server.settings import Settings


def serve(
    model: Path | None = typer.Option(None, "--model", help="GGUF file [GGSERVE_MODEL_PATH]."),
    host: str | None = typer.Option(None, help="Bind address [GGSERVE_HOST]."),
    port: int | None = typer.Option(None, help="Port [GGSERVE_PORT]."),
    n_slots: int | None = typer.Option(None, help="Parallel sequences [GGSERVE_N_SLOTS]."),
    n_ctx: int | None = typer.Option(None, help="Context tokens per slot [GGSERVE_N_CTX]."),
    n_threads: int | None = typer.Option(None, help="CPU threads [GGSERVE_N_THREADS]."),
    n_gpu_layers: int | None = typer.Option(
        None, help="Layers on the GPU, -1 = all [GGSERVE_N_GPU_LAYERS]."
    ),
    index: Path | None = typer.Option(None, help="Document index folder [GGSERVE_INDEX_PATH]."),
    lora: Path | None = typer.Option(None, help="GGUF LoRA adapter [GGSERVE_LORA_PATH]."),
    api_keys_file: Path | None = typer.Option(None, help="Key hashes [GGSERVE_API_KEYS_FILE]."),
    log_format: str | None = typer.Option(None, help="json | text [GGSERVE_LOG_FORMAT]."),
) -> None:
    """Serve the model: OpenAI-compatible API, /v1/ask, /health, /ready, /metrics."""
    from server.api.uvicorn_server import serve as run_until_drained
    from server.app import create_app

    overrides: dict[str, Any] = {
        "model_path": model,
        "host": host,
        "port": port,
        "n_slots": n_slots,
        "n_ctx": n_ctx,
        "n_threads": n_threads,
        "n_gpu_layers": n_gpu_layers,
        "index_path": index,
        "lora_path": lora,
        "api_keys_file": api_keys_file,
        "log_format": log_format,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    app = create_app(settings)
    run_until_drained(app, settings)
