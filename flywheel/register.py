"""The register stage: a gated GGUF becomes the registry's next version, with its lineage.

A GGUF LoRA (``general.type == "adapter"``) is registered as an adapter version over the base
named by ``base``: the registry keeps the base's sha256, so the server can refuse to apply it
over another model.
"""

from __future__ import annotations

from pathlib import Path

from artifacts.digest import sha256_file
from artifacts.gguf import gguf_problem, is_lora_adapter
from artifacts.lineage import lineage_for
from artifacts.registry import ModelRegistry, RegisteredVersion, RegistryError


def register_model(
    registry: Path,
    model: Path,
    *,
    name: str | None = None,
    adapter: Path | None = None,
    eval_report: Path | None = None,
    base: Path | None = None,
    scale: float = 1.0,
) -> RegisteredVersion:
    """Add ``model`` to ``registry``, not yet active; RegistryError when it is not a GGUF, its
    lineage cannot be read, ``eval_report`` says the eval gate failed, or ``base`` is given
    for a full model / missing for an adapter."""
    problem = gguf_problem(model)
    if problem is not None:
        raise RegistryError(f"{model} {problem}")
    try:
        adapter_file = is_lora_adapter(model)
    except ValueError as exc:
        raise RegistryError(str(exc)) from exc
    base_sha256 = None
    if adapter_file:
        base_sha256 = _base_sha256(model, base)
    elif base is not None:
        raise RegistryError(
            f"{model} is a full model, not a LoRA adapter: register it without --base"
        )
    lineage = lineage_for(model, adapter=adapter, eval_report=eval_report)
    if lineage.eval is not None and lineage.eval.get("passed") is False:
        raise RegistryError(f"{eval_report} says the eval gate failed; not registering")
    if base is not None:  # the file it is applied over, whatever the training record says
        lineage.base = {"path": str(base.resolve()), "sha256": base_sha256}
    if adapter_file and adapter is not None and lineage.adapter is None:
        lineage.adapter = _adapter_folder(adapter)
    return ModelRegistry(registry).register(
        model,
        sha256_file(model),
        name=name or model.stem,
        lineage=lineage,
        base_sha256=base_sha256,
        scale=scale,
    )


def _adapter_folder(folder: Path) -> dict[str, str]:
    """The PEFT folder the GGUF LoRA was exported from, named as a manifest names it."""
    from convert.errors import ConvertError
    from convert.inputs import read_adapter

    try:
        spec = read_adapter(folder)
    except ConvertError as exc:
        raise RegistryError(f"--adapter: {exc}") from exc
    return {"path": str(folder.resolve()), "sha256": spec.sha256()}


def _base_sha256(adapter: Path, base: Path | None) -> str:
    """The sha256 of the model GGUF ``adapter`` is registered over; RegistryError if none."""
    if base is None:
        raise RegistryError(
            f"{adapter} is a LoRA adapter: name the GGUF it applies over with --base BASE.gguf"
        )
    problem = gguf_problem(base)
    if problem is not None:
        raise RegistryError(f"--base {base} {problem}")
    try:
        if is_lora_adapter(base):
            raise RegistryError(f"--base {base} is itself a LoRA adapter; give the model GGUF")
    except ValueError as exc:
        raise RegistryError(f"--base: {exc}") from exc
    return sha256_file(base)
