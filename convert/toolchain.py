"""llama.cpp's own converters, taken from the pinned llama-cpp-python sdist into a cache folder.

The HF→GGUF and LoRA→GGUF converters (and the ``gguf-py`` they need) live in
``vendor/llama.cpp/`` of the llama-cpp-python source distribution. Using the copy that matches
the installed binding keeps the GGUF writer and the loader in step; the PyPI ``gguf`` release
lags behind (it lacks ``LazyChunkedTensor``), so it must not shadow the vendored one.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from convert.errors import ConvertError

PACKAGE = "llama-cpp-python"
_VENDOR = "vendor/llama.cpp"
_WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
_COMMIT_FILE = "LLAMA_CPP_COMMIT"
_SUPPORTED_FILE = "SUPPORTED_ARCHITECTURES"


def binding_version() -> str:
    """Installed llama-cpp-python version: the converter must come from the same release."""
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConvertError(
            "llama-cpp-python is not installed", "run 'make setup' (or pip install -e .)"
        ) from exc


def default_cache_dir() -> Path:
    """``$GGSERVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ggserve``, else ``~/.cache/ggserve``."""
    explicit = os.environ.get("GGSERVE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ggserve"


@dataclass(frozen=True)
class Converter:
    """An extracted copy of llama.cpp's Python converters."""

    root: Path
    version: str
    commit: str

    def environment(self) -> dict[str, str]:
        """Environment for the converter scripts: vendored gguf-py first, never a model hub."""
        env = dict(os.environ)
        env.pop("NO_LOCAL_GGUF", None)
        env.pop("TQDM_DISABLE", None)  # the converter's "Writing: 47%" bar feeds our progress
        paths = [str(self.root / "gguf-py"), str(self.root)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["HF_HUB_OFFLINE"] = "1"
        env["TRANSFORMERS_OFFLINE"] = "1"
        return env

    def run(
        self,
        script: str,
        args: Sequence[str],
        log_path: Path,
        on_line: Callable[[str], None] | None = None,
    ) -> None:
        """Run ``script`` with ``args``; its output goes to ``log_path`` (and ``on_line``).

        Raises ConvertError quoting the converter's last error line when it fails.
        """
        command = [sys.executable, str(self.root / script), *args]
        with log_path.open("w", encoding="utf-8") as log:
            process = subprocess.Popen(
                command,
                env=self.environment(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            code = process.wait()
        if code != 0:
            raise ConvertError(
                f"llama.cpp {script} failed (exit {code}): {_last_error(log_path)}",
                f"see the full log in {log_path}",
            )

    def require_supported(self, architecture: str) -> None:
        """Raise ConvertError unless the HF→GGUF converter knows ``architecture``."""
        if architecture not in self.supported_architectures():
            raise ConvertError(
                f"unsupported architecture {architecture}: llama.cpp {self.commit[:8]} "
                "cannot convert it to GGUF",
                "use a model family llama.cpp supports (Llama, Mistral, Qwen2, Phi3, Gemma, ...)",
            )

    def supported_architectures(self) -> frozenset[str]:
        """HF architecture class names the HF→GGUF converter knows (cached after the first ask)."""
        cached = self.root / _SUPPORTED_FILE
        if not cached.exists():
            result = subprocess.run(
                [
                    sys.executable,
                    str(self.root / "convert_hf_to_gguf.py"),
                    "--print-supported-models",
                ],
                env=self.environment(),
                capture_output=True,
                text=True,
                check=False,
            )
            names = _parse_supported(result.stdout + result.stderr)
            if not names:
                raise ConvertError(
                    f"cannot list the converter's supported models: {result.stderr.strip()[-300:]}",
                    f"delete {self.root} so it is fetched again",
                )
            cached.write_text("\n".join(sorted(names)) + "\n", encoding="utf-8")
        return frozenset(cached.read_text(encoding="utf-8").split())


def _parse_supported(text: str) -> set[str]:
    """Class names from ``--print-supported-models``, TEXT section only."""
    names: set[str] = set()
    in_text = False
    for line in text.splitlines():
        stripped = line.split(":", 1)[-1] if line.startswith(("ERROR:", "INFO:")) else line
        if stripped.strip().endswith("models:"):
            in_text = stripped.strip() == "TEXT models:"
        elif in_text and stripped.strip().startswith("- "):
            names.add(stripped.strip()[2:].strip())
    return names


def _last_error(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line]
    for line in reversed(lines):
        if "error" in line.lower() or "exception" in line.lower():
            return line[-300:]
    return lines[-1][-300:] if lines else "no output"


def ensure_converter(cache_dir: Path | None = None, sdist: Path | None = None) -> Converter:
    """Return the cached converter for the installed binding, fetching the sdist on first use.

    ``sdist`` uses a local ``llama_cpp_python-X.tar.gz`` instead of asking the package index.
    """
    version = binding_version()
    root = (cache_dir or default_cache_dir()) / f"llama.cpp-{version}"
    if not (root / _COMMIT_FILE).exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root.parent, prefix=".fetch-") as scratch:
            archive = sdist or _download_sdist(version, Path(scratch))
            staging = Path(scratch) / "llama.cpp"
            _extract_converter(archive, version, staging)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(staging, root)
    commit = (root / _COMMIT_FILE).read_text(encoding="utf-8").strip()
    return Converter(root=root, version=version, commit=commit)


def _download_sdist(version: str, into: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"{PACKAGE}=={version}",
        "-d",
        str(into),
        "--quiet",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    archives = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if result.returncode != 0 or not archives:
        detail = (result.stderr.strip().splitlines() or ["no archive"])[-1]
        raise ConvertError(
            f"cannot download the {PACKAGE}=={version} sdist for llama.cpp's converter: {detail}",
            "check access to the package index, or pass a downloaded sdist with --sdist",
        )
    return archives[0]


def _extract_converter(archive: Path, version: str, staging: Path) -> None:
    """Extract only the converter files (about 2 MB of the 75 MB sdist) and record the commit."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            top = tar.getmembers()[0].name.split("/", 1)[0]
            vendor = f"{top}/{_VENDOR}/"
            head = f"{top}/.git/modules/{_VENDOR}/HEAD"
            commit = "unknown"
            for member in tar.getmembers():
                if member.name == head:
                    extracted = tar.extractfile(member)
                    commit = extracted.read().decode().strip() if extracted else commit
                    continue
                if not member.name.startswith(vendor) or not member.isfile():
                    continue
                relative = member.name[len(vendor) :]
                if not relative.startswith(_WANTED):
                    continue
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is not None:
                    target.write_bytes(source.read())
    except (tarfile.TarError, OSError, IndexError) as exc:
        raise ConvertError(
            f"cannot read the {PACKAGE} sdist {archive}: {exc}", "delete it and run again"
        ) from exc
    if not (staging / "convert_hf_to_gguf.py").exists():
        raise ConvertError(
            f"{archive} holds no {_VENDOR}/convert_hf_to_gguf.py",
            f"use the {PACKAGE}=={version} source distribution",
        )
    (staging / _COMMIT_FILE).write_text(commit + "\n", encoding="utf-8")
