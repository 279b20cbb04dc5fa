"""The model manifest (``models/NAME/manifest.json``): what was built, from what, how good.

Written by ``ggserve convert``; read by the server to report the model's name and quant type and
to verify a GGUF's sha256 before loading it, and by the eval gate and the registry's lineage.
This module is the one place that knows the format, and it imports only the standard library so
the server can use it without torch or transformers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from artifacts.digest import sha256_file
from artifacts.names import MANIFEST

SCHEMA_VERSION = 1


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or does not describe the file it is asked about."""


@dataclass
class Quality:
    """How one model compares with the merged Hugging Face reference on the eval text."""

    ppl: float
    top1_agreement: float | None = None
    mean_kl: float | None = None
    ppl_increase_vs_f16: float | None = None


@dataclass
class TensorError:
    """How far one quantized tensor is from its f16 values.

    ``rel_rmse`` = ‖q − f‖ / ‖f‖ (how much noise); ``gain`` = ⟨q − f, f⟩ / ⟨f, f⟩ (how much of
    that error is the tensor itself scaled: ~0 for rounding noise, not for a systematic bias).
    """

    name: str
    type: str
    rel_rmse: float
    gain: float = 0.0


@dataclass
class Artifact:
    """One GGUF file produced by the conversion."""

    file: str
    quant: str
    size_bytes: int
    sha256: str
    tensor_types: dict[str, int] = field(default_factory=dict)
    fallback_tensors: int = 0
    quality: Quality | None = None
    passed_gate: bool | None = None
    # the tensors that lost most in quantization, worst first, and the same per storage type
    tensor_errors: list[TensorError] = field(default_factory=list)
    error_by_type: dict[str, dict[str, float]] = field(default_factory=dict)
    imatrix: bool = False


@dataclass
class Source:
    """A base model or adapter the artifacts were built from."""

    path: str
    sha256: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Manifest:
    """Everything ``manifest.json`` records about one converted model."""

    name: str
    created_at: str
    tools: dict[str, str]
    base: Source
    adapter: Source | None
    artifacts: list[Artifact]
    eval: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    imatrix: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    schema: int = SCHEMA_VERSION

    def artifact(self, file_name: str) -> Artifact | None:
        """The artifact entry for ``file_name`` (a bare file name), if listed."""
        return next((a for a in self.artifacts if a.file == file_name), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Parse a dict read from JSON; raise ManifestError naming what is wrong."""
        try:
            artifacts = [
                Artifact(
                    **{
                        **a,
                        "quality": Quality(**a["quality"]) if a.get("quality") else None,
                        "tensor_errors": [TensorError(**e) for e in a.get("tensor_errors", [])],
                    }
                )
                for a in data["artifacts"]
            ]
            adapter = data.get("adapter")
            return cls(
                name=data["name"],
                created_at=data["created_at"],
                tools=dict(data.get("tools", {})),
                base=Source(**data["base"]),
                adapter=Source(**adapter) if adapter else None,
                artifacts=artifacts,
                eval=dict(data.get("eval", {})),
                gate=dict(data.get("gate", {})),
                timings_s=dict(data.get("timings_s", {})),
                imatrix=dict(data["imatrix"]) if data.get("imatrix") else None,
                warnings=[str(w) for w in data.get("warnings", [])],
                schema=int(data.get("schema", SCHEMA_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(
                f"manifest is malformed ({exc!r}); re-run 'ggserve convert'"
            ) from exc


def read_manifest(path: Path) -> Manifest:
    """Read ``path`` (a manifest.json or the folder holding one)."""
    if path.is_dir():
        path = path / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ManifestError(
            f"no manifest at {path}; convert the model with 'ggserve convert'"
        ) from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {path} is not a JSON object; re-run 'ggserve convert'")
    return Manifest.from_dict(data)


def write_manifest(manifest: Manifest, folder: Path) -> Path:
    """Write ``folder/manifest.json`` atomically (temp file, then rename) and return its path."""
    target = folder / MANIFEST
    temporary = folder / f".{MANIFEST}.tmp"
    temporary.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, target)
    return target


def manifest_for_model(model_path: Path) -> tuple[Manifest, Artifact] | None:
    """The manifest next to ``model_path`` and that file's entry, or None when there is none.

    A manifest that exists but does not list the file is an error: the folder was edited by hand
    or the file renamed, and the name/quant it would report are not this file's.
    """
    manifest_path = model_path.parent / MANIFEST
    if not manifest_path.exists():
        return None
    manifest = read_manifest(manifest_path)
    artifact = manifest.artifact(model_path.name)
    if artifact is None:
        raise ManifestError(
            f"{manifest_path} does not list {model_path.name}; "
            "serve one of its files or re-run 'ggserve convert'"
        )
    return manifest, artifact


def verify_model_sha256(model_path: Path) -> Artifact:
    """Check ``model_path`` against the sha256 in its manifest; raise ManifestError on mismatch."""
    found = manifest_for_model(model_path)
    if found is None:
        raise ManifestError(
            f"no {MANIFEST} next to {model_path}; "
            "turn off sha256 verification or serve a converted model"
        )
    _, artifact = found
    actual = sha256_file(model_path)
    if actual != artifact.sha256:
        raise ManifestError(
            f"{model_path} sha256 {actual[:12]}… does not match the manifest's "
            f"{artifact.sha256[:12]}…: the file is corrupt or was replaced; "
            "copy or convert it again"
        )
    return artifact
