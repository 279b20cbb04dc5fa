"""The ``ggserve`` command: one Typer app assembling one sub-command module per concern."""

from __future__ import annotations

import os

# No model hub at run time, ever: set before anything imports huggingface_hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

from cli import (
    adapters,
    ask,
    convert,
    drift,
    eval_gate,
    feedback,
    flywheel,
    health,
    index,
    keys,
    model_registry,
    models,
    rollout,
    serve,
    train,
)

app = typer.Typer(
    name="ggserve",
    help="llama.cpp edge server: convert LoRA models to GGUF, index documents, serve them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("health")(health.health)
app.command("ask")(ask.ask)
model_registry.attach(models.app)
app.add_typer(models.app, name="models")
app.command("convert")(convert.convert)
app.command("convert-adapter")(convert.convert_adapter)
app.command("train-lora")(train.train_lora)
app.command("eval")(eval_gate.evaluate)
app.add_typer(index.app, name="index")
app.add_typer(keys.app, name="keys")
app.add_typer(drift.app, name="drift")
app.add_typer(feedback.app, name="feedback")
app.add_typer(flywheel.app, name="flywheel")
app.add_typer(adapters.app, name="adapters")
app.add_typer(rollout.app, name="rollout")


if __name__ == "__main__":
    app()
