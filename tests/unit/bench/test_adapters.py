"""`python -m bench adapters`: who uses which adapter, the figures and the README rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import adapters, table
from bench.adapters import CLIENTS, Outcome, client_adapter, parse_scenarios, ratios, summarize

ROOT = Path(__file__).resolve().parents[3]


def test_scenarios_parse_in_order_and_an_unknown_one_is_named() -> None:
    assert parse_scenarios("half, base") == ("half", "base")
    with pytest.raises(ValueError, match=r"unknown scenario.*mixed"):
        parse_scenarios("base,mixed")
    with pytest.raises(ValueError, match="none"):
        parse_scenarios(" , ")


def test_the_clients_split_as_each_scenario_says() -> None:
    def split(scenario: str) -> list[str]:
        return [client_adapter(scenario, c) for c in range(CLIENTS)]

    assert set(split("base")) == {""}
    assert set(split("one")) == {"a1"}
    assert split("half").count("") == split("half").count("a1") == CLIENTS // 2
    spread = split("spread")
    assert set(spread) == {"a1", "a2", "a3"} and "" not in spread
    assert (
        max(spread.count(a) for a in set(spread)) - min(spread.count(a) for a in set(spread)) <= 1
    )


def test_the_figures_are_aggregate_tok_s_and_the_median_ttft() -> None:
    outcome = summarize([0.1, 0.5, 0.2, 0.9], tokens=400, seconds=2.0, switches=7, steps=50)
    assert (outcome.tok_s, outcome.ttft_p50_s, outcome.requests) == (200.0, 0.35, 4)
    assert summarize([], tokens=0, seconds=0.0, switches=0, steps=0).ttft_p50_s is None


def test_ratios_are_against_the_base_and_absent_without_one() -> None:
    def run(tok_s: float) -> Outcome:
        return Outcome(8, 100, 1.0, tok_s, 0.1, 0, 10)

    assert ratios({"base": run(200.0), "spread": run(150.0)}) == {"base": 1.0, "spread": 0.75}
    assert ratios({"spread": run(150.0)}) == {"spread": None}


def test_the_readme_shows_adapter_mixing_once_results_exist(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "bench" / "results", results)
    (results / "adapters.json").unlink(missing_ok=True)
    assert "Adapter mixing" not in table.readme_section(results)
    record = {
        "date": "2099-01-02 03:04 UTC",
        "load_before": 0.1,
        "clients": 8,
        "requests": 48,
        "max_tokens": 64,
        "scenarios": {
            "base": {"tok_s": 200.0, "ttft_p50_s": 0.12, "adapter_switches": 0},
            "spread": {"tok_s": 120.5, "ttft_p50_s": 0.3, "adapter_switches": 96},
        },
        "ratios": {"base": 1.0, "spread": 0.6025},
    }
    (results / "adapters.json").write_text(json.dumps(record))
    section = table.readme_section(results)
    assert "**Adapter mixing** (run 2099-01-02 03:04 UTC" in section
    assert "| spread over 3 adapters | 120.5 | 0.60x | 0.30 | 96 |" in section


def test_a_random_lora_has_the_recipe_shape(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    model = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not model.is_file():
        pytest.skip(f"{model} missing")
    lora = adapters.write_lora(tmp_path / "l.gguf", model, seed=0)
    reader = gguf.GGUFReader(lora)
    assert reader.get_field("general.type").contents() == "adapter"
    names = {t.name for t in reader.tensors}
    assert "blk.0.ffn_down.weight.lora_b" in names and "blk.14.ffn_up.weight.lora_a" in names
    assert not any(n.startswith("blk.15.") for n in names)  # the first half of 30 layers
