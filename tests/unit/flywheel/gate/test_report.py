"""The eval gate's verdicts: better, same, within the margin, regressed; conversion figures."""

from __future__ import annotations

import json
from pathlib import Path

from flywheel.gate.report import compare
from flywheel.gate.runner import ItemResult, ModelResult


def _result(name: str, verdicts: dict[str, list[bool]], mode: str = "chat") -> ModelResult:
    items = [
        ItemResult(suite, f"{suite} q{i}", ["x"], "answer", passed, mode)
        for suite, passes in verdicts.items()
        for i, passed in enumerate(passes)
    ]
    return ModelResult(name, items)


def _compare(candidate: ModelResult, baseline: ModelResult, tmp_path: Path, max_drop: float = 0.0):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    return compare(
        candidate,
        baseline,
        candidate_path=model,
        baseline_path=model,
        suites=["facts", "control"],
        max_drop=max_drop,
    )


def test_a_candidate_that_learned_the_fact_and_kept_the_control_passes(tmp_path: Path) -> None:
    candidate = _result("new", {"facts": [True, True], "control": [True, False]})
    baseline = _result("old", {"facts": [False, False], "control": [True, False]})
    report = _compare(candidate, baseline, tmp_path)
    assert report.passed
    assert [(r.measure.split(":")[0], r.verdict) for r in report.rows] == [
        ("facts", "better"),
        ("control", "same"),
    ]
    assert report.candidate["summary"] == {"facts": 1.0, "control": 0.5}


def test_a_drop_beyond_the_margin_fails_and_names_the_questions(tmp_path: Path) -> None:
    candidate = _result("new", {"facts": [True, True], "control": [False, True, True, True]})
    baseline = _result("old", {"facts": [False, False], "control": [True, True, True, True]})
    report = _compare(candidate, baseline, tmp_path)
    assert not report.passed
    assert report.regressions == ["control: answer contains expected: 0.75 vs baseline 1.00"]
    assert report.item_regressions == [
        {"suite": "control", "mode": "chat", "question": "control q0", "answer": "answer"}
    ]
    within = _compare(candidate, baseline, tmp_path, max_drop=0.25)
    assert within.passed and within.rows[1].verdict == "worse (within margin)"


def test_a_failed_conversion_gate_in_the_candidate_manifest_is_a_regression(
    tmp_path: Path,
) -> None:
    model = tmp_path / "cand.gguf"
    model.write_bytes(b"GGUF")
    artifact = {
        "file": "cand.gguf",
        "quant": "Q4_K_M",
        "size_bytes": 4,
        "sha256": "0" * 64,
        "quality": {"ppl": 12.5, "top1_agreement": 0.9, "mean_kl": 0.05},
        "passed_gate": False,
    }
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {
                "name": "cand",
                "created_at": "now",
                "tools": {},
                "base": {"path": "b", "sha256": "1" * 64},
                "adapter": None,
                "artifacts": [artifact],
            }
        )
    )
    same = _result("x", {"facts": [True], "control": [True]})
    report = compare(
        same,
        same,
        candidate_path=model,
        baseline_path=tmp_path / "none.gguf",
        suites=["facts", "control"],
        max_drop=0.0,
    )
    assert not report.passed and "conversion quality gate failed" in report.regressions[0]
    ppl = next(r for r in report.rows if r.measure.startswith("conversion ppl"))
    assert (ppl.candidate, ppl.baseline) == (12.5, None)


def test_the_report_names_each_suites_least_room_only_when_it_was_probed(tmp_path: Path) -> None:
    from flywheel.gate.room import Room

    probed = _result("cand", {"facts": [True], "control": [True, True]})
    probed.room_probed = True
    probed.items[1].room = Room(lead=0.8, at="A dog has", instead="A dog has 45 legs.")
    probed.items[2].room = Room(lead=0.25, at="", instead="Il Capitale")
    plain = _result("base", {"facts": [True], "control": [True, True]})
    report = _compare(probed, plain, tmp_path).to_dict()
    assert report["candidate"]["room"] == {"facts": None, "control": 0.25}
    assert report["candidate"]["items"][2]["room"]["instead"] == "Il Capitale"
    assert "room" not in report["baseline"]
