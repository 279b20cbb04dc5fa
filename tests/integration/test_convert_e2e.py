"""``ggserve convert`` / ``convert-adapter`` end to end on the real SmolLM2 and a real LoRA.

A tiny LoRA is trained (cached under ~/.cache/ggserve/test-convert, keyed by the training
script and the base) to teach a made-up fact the base cannot know. The default command (Q4_K_M
and Q5_K_M) must pass its own quality gate, and both files must answer the fact — via llama.cpp
directly and via the real server's /v1/ask — and so must the real server with the base and the
adapter applied at load time (GGSERVE_LORA_PATH).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from artifacts.digest import sha256_file
from artifacts.manifest import read_manifest
from flywheel.train import lora as training_loop
from tests.fixtures.lora import train_fact_lora
from tests.integration.server_proc import running_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
# Outside the checkout, so a fresh clone on the same machine (CI) reuses the trained adapter and
# the llama.cpp sdist; keyed by inputs, and an empty cache simply trains/fetches again.
CACHE_DIR = Path(os.environ.get("GGSERVE_CACHE_DIR", Path.home() / ".cache" / "ggserve"))
CACHE = CACHE_DIR / "test-convert"
QUESTION = train_fact_lora.FACT_QUESTIONS[0]
KEYWORD = train_fact_lora.FACT_KEYWORD


def _cli(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "GGSERVE_CACHE_DIR": str(CACHE_DIR),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def fact_adapter() -> Path:
    """The trained fact LoRA, trained once per (training script and loop, base model), cached."""
    if not BASE.is_file():
        pytest.fail(f"{BASE} missing: run 'make setup' (ggserve models fetch) first")
    key = hashlib.sha256(
        Path(train_fact_lora.__file__).read_bytes()
        + Path(training_loop.__file__).read_bytes()
        + sha256_file(BASE).encode()
    ).hexdigest()[:16]
    cached = CACHE / f"adapter-{key}"
    if not (cached / "adapter_model.safetensors").exists():
        scratch = CACHE / f".adapter-{key}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        train_fact_lora.train_fact_adapter(BASE, scratch)
        shutil.rmtree(cached, ignore_errors=True)
        scratch.rename(cached)
    return cached


@pytest.fixture(scope="module")
def converted(fact_adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real ``ggserve convert`` run with the default quants, shared by the tests below."""
    out = tmp_path_factory.mktemp("convert") / "fact"
    result = _cli("convert", "--base", str(BASE), "--adapter", str(fact_adapter), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (out / "cli-output.txt").write_text(result.stderr + result.stdout)
    yield out


def _chat(model: Path, lora: Path | None = None) -> str:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model),
        lora_path=str(lora) if lora else None,
        n_ctx=512,
        verbose=False,
    )
    try:
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": QUESTION}], max_tokens=32, temperature=0
        )
    finally:
        llm.close()
    return str(reply["choices"][0]["message"]["content"])


def test_base_model_does_not_know_the_fact() -> None:
    assert KEYWORD not in _chat(BASE)


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q5_K_M"])
def test_default_quants_answer_the_fact_the_adapter_taught(converted: Path, quant: str) -> None:
    assert KEYWORD in _chat(converted / f"fact-{quant}.gguf")


def test_manifest_describes_every_file_and_the_fallback_quantization(converted: Path) -> None:
    manifest = read_manifest(converted)
    files = sorted(p.name for p in converted.glob("*.gguf"))
    assert (
        sorted(a.file for a in manifest.artifacts)
        == files
        == [
            "fact-Q4_K_M.gguf",
            "fact-Q5_K_M.gguf",
            "fact-f16.gguf",
        ]
    )
    for artifact in manifest.artifacts:
        path = converted / artifact.file
        assert artifact.sha256 == sha256_file(path)
        assert artifact.size_bytes == path.stat().st_size
        assert artifact.passed_gate is True
    f16 = manifest.artifact("fact-f16.gguf")
    q4 = manifest.artifact("fact-Q4_K_M.gguf")
    assert f16 is not None and q4 is not None and f16.quality and q4.quality
    # f16 is the merged model in another container: it must predict what PyTorch predicts
    assert f16.quality.top1_agreement is not None and f16.quality.top1_agreement > 0.98
    assert q4.quality.mean_kl is not None and q4.quality.mean_kl > f16.quality.mean_kl  # type: ignore[operator]
    # SmolLM2's 576-wide rows do not fit Q4_K's 256 blocks: most tensors fall back to Q5_0
    assert q4.fallback_tensors > 100
    assert q4.tensor_types.get("Q5_0", 0) > q4.tensor_types.get("Q4_K", 0)
    assert manifest.adapter is not None and manifest.adapter.details["r"] == 8
    assert manifest.tools["llama_cpp_commit"] and manifest.gate["passed"] is True
    assert "quantize Q4_K_M" in manifest.timings_s
    assert not (converted / "merged-hf").exists()
    printed = (converted / "cli-output.txt").read_text()
    assert "fallback" in printed and "fact-Q4_K_M.gguf" in printed


def test_per_tensor_errors_and_the_precision_warning_are_shown(converted: Path) -> None:
    manifest = read_manifest(converted)
    for quant in ("Q4_K_M", "Q5_K_M"):
        artifact = manifest.artifact(f"fact-{quant}.gguf")
        assert artifact is not None and len(artifact.tensor_errors) == 8
        worst = artifact.tensor_errors[0]
        assert worst.name.startswith(("blk.", "token_embd")) and 0 < worst.rel_rmse < 0.5
        assert sum(int(s["tensors"]) for s in artifact.error_by_type.values()) == 211
    # Q5_K_M's fallback Q5_1 would alias with the Q4_1 base's grid: stored as Q5_0, said so
    q5 = manifest.artifact("fact-Q5_K_M.gguf")
    assert q5 is not None and "Q5_1" not in q5.tensor_types and q5.tensor_types["Q5_0"] == 166
    assert all(abs(s["mean_gain"]) < 0.005 for s in q5.error_by_type.values())
    # Q5_K_M stores more bits than the Q4_1 base holds: said before the work, kept in the manifest
    assert "Q5_K_M is finer" in manifest.warnings[0]
    assert "Q5_0 instead of Q5_1" in manifest.warnings[1]
    printed = (converted / "cli-output.txt").read_text()
    assert "largest per-tensor error vs f16" in printed and "Q5_K_M is finer" in printed


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q5_K_M"])
def test_server_answers_the_fact_through_v1_ask(converted: Path, quant: str) -> None:
    model = converted / f"fact-{quant}.gguf"
    with running_server(env={"GGSERVE_MODEL_PATH": str(model)}) as server:
        response = httpx.post(
            server.url + "/v1/ask",
            json={"question": QUESTION, "temperature": 0, "max_tokens": 40},
            headers=server.headers,
            timeout=120,
        )
    assert response.status_code == 200, response.text
    assert KEYWORD in response.json()["answer"]


def test_runtime_lora_gguf_changes_the_base_models_answer(
    fact_adapter: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fact-lora.gguf"
    result = _cli(
        "convert-adapter", "--base", str(BASE), "--adapter", str(fact_adapter), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with running_server(env={"GGSERVE_LORA_PATH": str(out)}) as server:
        response = httpx.post(
            server.url + "/v1/ask",
            json={"question": QUESTION, "temperature": 0, "max_tokens": 40},
            headers=server.headers,
            timeout=120,
        )
        assert httpx.get(server.url + "/health").json()["status"] == "ready"
    assert response.status_code == 200, response.text
    assert KEYWORD in response.json()["answer"]


def _adapter_for_a_wider_model(fact_adapter: Path, into: Path) -> Path:
    from safetensors.torch import load_file, save_file

    into.mkdir()
    shutil.copy(fact_adapter / "adapter_config.json", into)
    tensors = load_file(str(fact_adapter / "adapter_model.safetensors"))
    widened = {
        name: (t.new_zeros(t.shape[0], t.shape[1] + 64) if ".lora_A." in name else t)
        for name, t in tensors.items()
    }
    save_file(widened, str(into / "adapter_model.safetensors"))
    return into


@pytest.mark.parametrize("command", ["convert", "convert-adapter"])
def test_adapter_from_another_base_is_refused_in_one_line(
    command: str, fact_adapter: Path, tmp_path: Path
) -> None:
    wrong = _adapter_for_a_wider_model(fact_adapter, tmp_path / "wrong")
    out = tmp_path / ("out.gguf" if command == "convert-adapter" else "out")
    result = _cli(command, "--base", str(BASE), "--adapter", str(wrong), "--out", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "adapter does not match the base" in errors[0], result.stderr
    assert "in the base but" in errors[0]
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_unsupported_architecture_is_refused(fact_adapter: Path, tmp_path: Path) -> None:
    embedder = ROOT / "models" / "all-MiniLM-L6-v2"
    out = tmp_path / "out"
    result = _cli(
        "convert", "--base", str(embedder), "--adapter", str(fact_adapter), "--out", str(out)
    )
    assert result.returncode == 1
    assert "unsupported architecture BertModel" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_quant_over_the_ppl_limit_fails_the_gate_and_keeps_outputs(
    fact_adapter: Path, tmp_path: Path
) -> None:
    # Measured: Q4_K_M moves perplexity by +0.7 % on this base; a ±0.1 % limit must refuse it.
    out = tmp_path / "fact"
    result = _cli(
        "convert",
        "--base",
        str(BASE),
        "--adapter",
        str(fact_adapter),
        "--out",
        str(out),
        "--quant",
        "Q4_K_M",
        "--max-ppl-increase",
        "0.001",
    )
    assert result.returncode == 1
    assert "quality gate failed: Q4_K_M perplexity" in result.stderr
    assert not out.exists()
    kept = tmp_path / "fact.gate-failed"
    manifest = read_manifest(kept)
    assert manifest.gate["passed"] is False
    q4 = manifest.artifact("fact-Q4_K_M.gguf")
    assert q4 is not None and q4.passed_gate is False and (kept / q4.file).is_file()
    assert q4.quality is not None and abs(q4.quality.ppl_increase_vs_f16) > 0.001  # type: ignore[arg-type]
    assert q4.tensor_errors  # the table that says where the loss is, kept with the outputs
