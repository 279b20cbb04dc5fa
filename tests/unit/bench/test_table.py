"""The README's benchmark section is what ``python -m bench table`` makes of bench/results/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench import table

ROOT = Path(__file__).resolve().parents[3]


def test_readme_benchmark_section_matches_the_committed_results() -> None:
    readme = (ROOT / "README.md").read_text()
    assert table.render(readme) == readme, "stale README benchmarks: run python -m bench table"


def test_section_shows_the_latest_run_and_its_throughput(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "bench" / "results", results)
    latest = json.loads((results / "latest.json").read_text())
    latest["date"] = "2099-01-02 03:04 UTC"
    latest["servers"]["ggserve"]["concurrent8"]["throughput_tok_s"] = 987.6
    (results / "latest.json").write_text(json.dumps(latest))
    section = table.readme_section(results)
    assert section.startswith("Run 2099-01-02 03:04 UTC")
    assert "| ggserve | 987.6 |" in section


def test_check_fails_on_a_stale_readme_and_the_rewrite_fixes_it(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{table.START}\nold numbers\n{table.END}\n\n## after\n")
    assert table.main(["--check", "--readme", str(readme)]) == 1
    assert table.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old numbers" not in text and text.endswith(f"{table.END}\n\n## after\n")
    assert table.main(["--check", "--readme", str(readme)]) == 0


def test_a_readme_without_the_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="markers"):
        table.render("# no markers here\n")


def test_section_shows_returning_conversations_when_measured(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(ROOT / "bench" / "results", results)
    phase = {"ttft_p50_s": 0.5, "ttft_p95_s": 0.9}
    (results / "returning.json").write_text(
        json.dumps(
            {
                "date": "2099-01-02 03:04 UTC",
                "load_before": [0.1, 0.2, 0.3],
                "chats": 16,
                "slots": 8,
                "history_tokens": 1200,
                "concurrency": 4,
                "servers": {
                    "ggserve": {"best": {"open": {**phase, "ttft_p50_s": 5.0}, "return": phase}}
                },
                "ratios": {"ggserve: return/open": 0.1, "ggserve/llama-server return": 0.8},
            }
        )
    )
    section = table.readme_section(results)
    assert "**Returning conversations** (run 2099-01-02 03:04 UTC" in section
    assert "| ggserve | 5.00 / 0.90 | 0.50 / 0.90 | 0.10x |" in section
    assert "return p50 ggserve / llama-server: 0.80x" in section
