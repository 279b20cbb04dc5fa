"""Load the base model, check the adapter fits it, merge the LoRA in, save a plain HF folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from convert.errors import ConvertError
from convert.inputs import AdapterSpec, BaseSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

_PEFT_PREFIX = "base_model.model."


def load_base(base: BaseSpec) -> tuple[PreTrainedModel, Any]:
    """Load model and tokenizer in float32 (merging in low precision would round the delta away).

    A GGUF base is dequantized by transformers' ``gguf_file`` loader.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {}
    folder = base.path
    if base.kind == "gguf":
        folder, kwargs["gguf_file"] = base.path.parent, base.path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
    except (ValueError, KeyError, OSError) as exc:
        raise ConvertError(
            f"cannot load base model {base.path}: {_first_line(exc)}",
            "use a causal-LM architecture that transformers and llama.cpp both support "
            "(e.g. Llama, Mistral, Qwen2, Phi3, Gemma)",
        ) from exc
    if not model.config.architectures:
        # GGUF-derived configs carry no class name, yet llama.cpp's converter keys on it.
        model.config.architectures = [type(model).__name__]
    model.eval()
    return model, tokenizer


def load_config(base: BaseSpec) -> Any:
    """The base's transformers config (read from GGUF metadata for a GGUF base), with a class name.

    GGUF-derived configs carry no architecture class, yet llama.cpp's converters key on it.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kwargs: dict[str, Any] = {}
    folder = base.path
    if base.kind == "gguf":
        folder, kwargs["gguf_file"] = base.path.parent, base.path.name
    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
    except (ValueError, KeyError, OSError) as exc:
        raise ConvertError(
            f"unsupported architecture in {base.path}: {_first_line(exc)}",
            "use a causal-LM architecture that transformers and llama.cpp both support "
            "(e.g. Llama, Mistral, Qwen2, Phi3, Gemma)",
        ) from exc
    if not config.architectures:
        class_name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type)
        if class_name is None:
            raise ConvertError(
                f"unsupported architecture: {base.path} is a {config.model_type!r} model, "
                "not a causal language model",
                "convert text-generation models only",
            )
        config.architectures = [class_name]
    if config.architectures[0] not in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()):
        raise ConvertError(
            f"unsupported architecture {config.architectures[0]} in {base.path}: "
            "not a causal language model",
            "convert text-generation models only (…ForCausalLM)",
        )
    return config


def skeleton_model(config: Any) -> PreTrainedModel:
    """The model's module tree on the meta device: shapes without weights, built in a second."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model: PreTrainedModel = AutoModelForCausalLM.from_config(config)
    return model


def check_adapter_fits(model: PreTrainedModel, adapter: AdapterSpec) -> None:
    """Compare every LoRA matrix with the module it patches; raise ConvertError on a mismatch.

    PEFT's own error for a wrong base is a wall of size-mismatch lines; this names the first
    offending module and the base the adapter says it was trained on.
    """
    from safetensors import safe_open

    modules = dict(model.named_modules())
    trained_on = adapter.base_model_name_or_path or "unknown"
    fix = f"use the base model the adapter was trained on (adapter_config.json says {trained_on})"
    with safe_open(str(adapter.weights), framework="pt") as weights:
        for key in weights.keys():  # noqa: SIM118 - safe_open is not a mapping
            shape = tuple(weights.get_slice(key).get_shape())
            module_name, kind = _split_lora_key(key)
            if kind is None:
                continue
            module = modules.get(module_name)
            if module is None:
                raise ConvertError(
                    f"adapter does not match the base: it patches {module_name}, "
                    f"which {type(model).__name__} does not have",
                    fix,
                )
            in_features = getattr(module, "in_features", None)
            out_features = getattr(module, "out_features", None)
            if in_features is None or out_features is None:
                continue  # embeddings and convolutions: PEFT checks those itself
            expected = in_features if kind == "A" else out_features
            actual = shape[-1] if kind == "A" else shape[0]
            if actual != expected:
                side = "input" if kind == "A" else "output"
                raise ConvertError(
                    f"adapter does not match the base: {module_name} has {side} size "
                    f"{expected} in the base but {actual} in the adapter",
                    fix,
                )


def _split_lora_key(key: str) -> tuple[str, str | None]:
    """``base_model.model.x.q_proj.lora_A.weight`` → (``x.q_proj``, ``"A"``)."""
    name = key.removeprefix(_PEFT_PREFIX)
    for marker, kind in ((".lora_A.", "A"), (".lora_B.", "B")):
        if marker in name:
            return name.split(marker, 1)[0], kind
    return name, None


def apply_adapter(model: PreTrainedModel, adapter: AdapterSpec) -> Any:
    """Wrap ``model`` with the LoRA adapter (a PeftModel; the base weights are untouched)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter.path))
    except (ValueError, RuntimeError, KeyError) as exc:
        raise ConvertError(
            f"cannot apply adapter {adapter.path}: {_first_line(exc)}",
            "use the base model the adapter was trained on",
        ) from exc


def merge_and_unload(patched: Any) -> PreTrainedModel:
    """Fold the LoRA deltas into the base weights and drop the adapter modules."""
    merged: PreTrainedModel = patched.merge_and_unload()
    merged.eval()
    return merged


def save_merged(model: PreTrainedModel, tokenizer: Any, folder: Path) -> None:
    """Save model (safetensors) and tokenizer as a plain Hugging Face folder."""
    # A GGUF-loaded model still says "quantized with gguf" and save_pretrained refuses it; after
    # dequantization and merging the weights are plain float32, so the marker is stale.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def count_parameters(model: PreTrainedModel) -> int:
    """Number of parameters (tied weights once)."""
    return sum(p.numel() for p in model.parameters())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
