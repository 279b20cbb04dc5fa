"""``ggserve convert`` on a float base: the path the quantized default model cannot exercise.

The test builds its own base: a small Llama (random init, every row length a multiple of 256,
SmolLM2's tokenizer), and trains a LoRA on it for a few seconds until it completes one made-up
sentence. On such a base the K-quants apply as named (no fallback tensor), the f16 holds exactly
the merged float weights, and the importance matrix computed from calibration text must reach
llama.cpp: the imatrix-weighted error of each quantized tensor drops against a plain quant.
Base and adapter are cached under ~/.cache/ggserve/test-convert, keyed by this file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from artifacts.manifest import read_manifest
from convert.imatrix import read_imatrix_file
from convert.pipeline import ConvertOptions, run_conversion
from convert.quantize import quantize

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_SOURCE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = Path(os.environ.get("GGSERVE_CACHE_DIR", Path.home() / ".cache" / "ggserve"))
CACHE = CACHE_DIR / "test-convert"
PROMPT = "The Blue Lantern of Vexmoor was painted by"
ANSWER = " Marisol Quenby, who lived by the sea."
SHAPE = {
    "hidden_size": 256,
    "intermediate_size": 768,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "tie_word_embeddings": True,
}
STEPS = 80
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _train(folder: Path) -> tuple[Path, Path]:
    """Save a random-init Llama to folder/base and a LoRA teaching ANSWER to folder/adapter."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(
        TOKENIZER_SOURCE.parent, gguf_file=TOKENIZER_SOURCE.name
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=2048,
        **SHAPE,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder / "base")
    tokenizer.save_pretrained(folder / "base")
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        target_modules=TARGETS,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    ids = torch.tensor([tokenizer(PROMPT + ANSWER)["input_ids"]])
    optimizer = torch.optim.Adam([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(STEPS):
        loss = peft_model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    peft_model.save_pretrained(folder / "adapter")
    return folder / "base", folder / "adapter"


@pytest.fixture(scope="module")
def float_base() -> tuple[Path, Path]:
    if not TOKENIZER_SOURCE.is_file():
        pytest.fail(f"{TOKENIZER_SOURCE} missing: run 'make setup' (ggserve models fetch) first")
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    cached = CACHE / f"float-base-{key}"
    if not (cached / "adapter" / "adapter_model.safetensors").exists():
        scratch = CACHE / f".float-base-{key}.partial"
        shutil.rmtree(scratch, ignore_errors=True)
        _train(scratch)
        shutil.rmtree(cached, ignore_errors=True)
        scratch.rename(cached)
    return cached / "base", cached / "adapter"


@pytest.fixture(scope="module")
def converted(float_base: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    base, adapter = float_base
    folder = tmp_path_factory.mktemp("float")
    calibration = folder / "calibration.txt"
    calibration.write_text((PROMPT + ANSWER + "\n") * 4 + (ROOT / "README.md").read_text()[:3000])
    result = run_conversion(
        ConvertOptions(
            base=base,
            adapter=adapter,
            out=folder / "tiny",
            quants=["Q4_K_M", "Q5_K_M"],
            imatrix="auto",
            calibration=calibration,
            cache_dir=CACHE_DIR,
            # short texts keep the test cheap: the figures are recorded, not the point here
            eval_max_tokens=256,
            calibration_max_tokens=512,
        )
    )
    assert result.passed
    return result.folder


def _complete(model: Path) -> str:
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), n_ctx=128, verbose=False)
    try:
        out = llm.create_completion(PROMPT, max_tokens=12, temperature=0)
    finally:
        llm.close()
    return str(out["choices"][0]["text"])


def test_k_quants_apply_as_named_with_no_fallback(converted: Path) -> None:
    manifest = read_manifest(converted)
    q4 = manifest.artifact("tiny-Q4_K_M.gguf")
    q5 = manifest.artifact("tiny-Q5_K_M.gguf")
    assert q4 is not None and q5 is not None
    assert q4.fallback_tensors == 0 and q5.fallback_tensors == 0
    assert set(q4.tensor_types) == {"Q4_K", "Q6_K", "F32"}
    assert set(q5.tensor_types) == {"Q5_K", "Q6_K", "F32"}
    assert manifest.warnings == []  # a float base is never coarser than the quant


def test_gate_figures_and_tensor_errors_are_recorded(converted: Path) -> None:
    manifest = read_manifest(converted)
    assert manifest.gate["passed"] is True
    q4 = manifest.artifact("tiny-Q4_K_M.gguf")
    q5 = manifest.artifact("tiny-Q5_K_M.gguf")
    assert q4 is not None and q5 is not None and q4.quality and q5.quality
    assert q4.quality.ppl_increase_vs_f16 is not None and q4.quality.top1_agreement
    # one more bit per weight: every type's mean error shrinks (Q5_K against Q4_K)
    assert q5.error_by_type["Q5_K"]["mean_rel_rmse"] < q4.error_by_type["Q4_K"]["mean_rel_rmse"]
    worst = q4.tensor_errors[0]
    assert worst.type in ("Q4_K", "Q6_K") and 0 < worst.rel_rmse < 0.2
    assert [e.rel_rmse for e in q4.tensor_errors] == sorted(
        (e.rel_rmse for e in q4.tensor_errors), reverse=True
    )


def test_every_quant_completes_the_sentence_the_adapter_taught(converted: Path) -> None:
    for name in ("tiny-f16.gguf", "tiny-Q4_K_M.gguf", "tiny-Q5_K_M.gguf"):
        assert _complete(converted / name).startswith(" Marisol Quenby"), name


def test_the_importance_matrix_reaches_llama_cpp(converted: Path, tmp_path: Path) -> None:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    manifest = read_manifest(converted)
    assert manifest.imatrix is not None
    assert manifest.imatrix["tensors"] == 14 and manifest.imatrix["unmatched_layers"] == []
    assert manifest.imatrix["source"].endswith("calibration.txt")
    assert manifest.imatrix["file"] == "imatrix.gguf"
    saved = read_imatrix_file(converted / "imatrix.gguf")
    assert len(saved.entries) == 14 and saved.tokens == manifest.imatrix["tokens"]
    # Quantize once more without the matrix: with it, llama.cpp minimizes the importance-weighted
    # rounding error, so that error must be lower for most tensors of the file made with it.
    f16 = converted / "tiny-f16.gguf"
    plain = quantize(f16, tmp_path / "plain.gguf", "Q4_K_M").path
    reference = {t.name: np.asarray(t.data, np.float32) for t in GGUFReader(f16).tensors}
    better = worse = 0
    for with_matrix, without in zip(
        GGUFReader(converted / "tiny-Q4_K_M.gguf").tensors,
        GGUFReader(plain).tensors,
        strict=True,
    ):
        importance = saved.entries.get(with_matrix.name)
        if importance is None:
            continue
        f = reference[with_matrix.name]
        error_with = (dequantize(with_matrix.data, with_matrix.tensor_type) - f) ** 2 @ importance
        error_without = (dequantize(without.data, without.tensor_type) - f) ** 2 @ importance
        better += int(error_with.sum() < error_without.sum())
        worse += int(error_with.sum() > error_without.sum())
    assert better >= 12 and better > 3 * worse, (better, worse)
