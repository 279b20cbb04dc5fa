"""Taking llama.cpp's converter out of an sdist: only the converter files, plus the commit."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from convert.errors import ConvertError
from convert.toolchain import _parse_supported, ensure_converter

COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"


def _sdist(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"llama_cpp_python-9.9.9/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_only_the_converter_and_the_commit_are_extracted(tmp_path: Path) -> None:
    archive = _sdist(
        tmp_path / "sdist.tar.gz",
        {
            "vendor/llama.cpp/convert_hf_to_gguf.py": b"# hf",
            "vendor/llama.cpp/convert_lora_to_gguf.py": b"# lora",
            "vendor/llama.cpp/conversion/llama.py": b"# arch",
            "vendor/llama.cpp/gguf-py/gguf/__init__.py": b"# gguf",
            "vendor/llama.cpp/ggml/src/ggml.c": b"int x;",
            ".git/modules/vendor/llama.cpp/HEAD": COMMIT.encode() + b"\n",
        },
    )
    converter = ensure_converter(tmp_path / "cache", sdist=archive)
    assert converter.commit == COMMIT
    assert (converter.root / "conversion" / "llama.py").read_text() == "# arch"
    assert (converter.root / "gguf-py" / "gguf" / "__init__.py").exists()
    assert not (converter.root / "ggml").exists()
    # vendored gguf-py must come first so the older PyPI gguf does not shadow it
    assert converter.environment()["PYTHONPATH"].startswith(str(converter.root / "gguf-py"))


def test_an_sdist_without_the_converter_is_refused(tmp_path: Path) -> None:
    archive = _sdist(tmp_path / "sdist.tar.gz", {"README.md": b"hi"})
    with pytest.raises(ConvertError, match=r"holds no vendor/llama\.cpp/convert_hf_to_gguf\.py"):
        ensure_converter(tmp_path / "cache", sdist=archive)
    assert not any((tmp_path / "cache").glob("llama.cpp-*"))


def test_supported_models_listing_keeps_text_models_only() -> None:
    listing = "Supported models:\nTEXT models:\n  - LlamaForCausalLM\n  - Qwen2ForCausalLM\n"
    listing += "MMPROJ models:\n  - LlavaForConditionalGeneration\n"
    assert _parse_supported(listing) == {"LlamaForCausalLM", "Qwen2ForCausalLM"}
