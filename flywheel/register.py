"""The register stage: a gated GGUF becomes the registry's next version, with its lineage."""

from __future__ import annotations

from pathlib import Path

from artifacts.digest import sha256_file
from artifacts.gguf import gguf_problem
from artifacts.lineage import lineage_for
from artifacts.registry import ModelRegistry, RegisteredVersion, RegistryError


def register_model(
    registry: Path,
    model: Path,
    *,
    name: str | None = None,
    adapter: Path | None = None,
    eval_report: Path | None = None,
) -> RegisteredVersion:
    """Add ``model`` to ``registry``, not yet active; RegistryError when it is not a GGUF, its
    lineage cannot be read, or ``eval_report`` says the eval gate failed."""
    problem = gguf_problem(model)
    if problem is not None:
        raise RegistryError(f"{model} {problem}")
    lineage = lineage_for(model, adapter=adapter, eval_report=eval_report)
    if lineage.eval is not None and lineage.eval.get("passed") is False:
        raise RegistryError(f"{eval_report} says the eval gate failed; not registering")
    return ModelRegistry(registry).register(
        model, sha256_file(model), name=name or model.stem, lineage=lineage
    )
