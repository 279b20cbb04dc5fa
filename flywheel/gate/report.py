"""The eval gate: candidate vs baseline, one row per measure, and whether the candidate regressed.

A suite's pass rate (closed-book, and with RAG when an index was given) regresses when the
candidate's is lower than the baseline's by more than ``max_drop``. The conversion figures come
from each GGUF's ``manifest.json`` (what ``ggserve convert`` measured against the merged model);
a candidate whose manifest says its own conversion gate failed is a regression too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from artifacts.manifest import ManifestError, manifest_for_model
from flywheel.gate.runner import ItemResult, ModelResult


@dataclass(frozen=True)
class Conversion:
    """What the converter measured for one GGUF (absent for a GGUF it did not make)."""

    quant: str
    ppl: float | None
    top1_agreement: float | None
    mean_kl: float | None
    passed_gate: bool | None


@dataclass
class Row:
    """One measure, both models, and the verdict."""

    measure: str
    candidate: float | None
    baseline: float | None
    verdict: str  # "better" | "same" | "worse (within margin)" | "REGRESSED" | "-"


@dataclass
class GateReport:
    """Everything ``ggserve eval`` prints and writes with ``--report``."""

    candidate_path: str
    baseline_path: str
    suites: list[str]
    max_drop: float
    rows: list[Row]
    regressions: list[str]
    item_regressions: list[dict[str, Any]]  # passed on the baseline, failed on the candidate
    candidate: dict[str, Any] = field(default_factory=dict)
    baseline: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def passed(self) -> bool:
        """No measure regressed beyond the margin."""
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``passed`` spelled out."""
        return {**asdict(self), "passed": self.passed, "suite": ", ".join(self.suites)}


def conversion_of(model: Path) -> Conversion | None:
    """The manifest's figures for ``model``; None when it has no (readable) manifest."""
    try:
        found = manifest_for_model(model)
    except ManifestError:
        return None
    if found is None:
        return None
    _, artifact = found
    quality = artifact.quality
    return Conversion(
        quant=artifact.quant,
        ppl=quality.ppl if quality else None,
        top1_agreement=quality.top1_agreement if quality else None,
        mean_kl=quality.mean_kl if quality else None,
        passed_gate=artifact.passed_gate,
    )


def compare(
    candidate: ModelResult,
    baseline: ModelResult,
    *,
    candidate_path: Path,
    baseline_path: Path,
    suites: list[str],
    max_drop: float,
) -> GateReport:
    """Build the table and decide; ``max_drop`` is the largest allowed fall of a pass rate."""
    rows: list[Row] = []
    regressions: list[str] = []
    modes = ["chat"] + (["rag"] if any(i.mode == "rag" for i in candidate.items) else [])
    for mode in modes:
        for suite in suites:
            measure = f"{suite}: answer contains expected" + (" (RAG)" if mode == "rag" else "")
            new, old = candidate.rate(suite, mode), baseline.rate(suite, mode)
            verdict = _verdict(new, old, max_drop)
            rows.append(Row(measure, new, old, verdict))
            if verdict == "REGRESSED":
                regressions.append(f"{measure}: {new:.2f} vs baseline {old:.2f}")
    cand_conv, base_conv = conversion_of(candidate_path), conversion_of(baseline_path)
    for name in ("ppl", "top1_agreement", "mean_kl"):
        new_value = getattr(cand_conv, name) if cand_conv else None
        old_value = getattr(base_conv, name) if base_conv else None
        if new_value is not None or old_value is not None:
            rows.append(Row(f"conversion {name} (vs merged model)", new_value, old_value, "-"))
    if cand_conv is not None and cand_conv.passed_gate is False:
        regressions.append("the candidate's conversion quality gate failed (see its manifest)")
    item_regressions = [
        {"suite": new.suite, "mode": new.mode, "question": new.question, "answer": new.answer}
        for new, old in zip(candidate.items, baseline.items, strict=True)
        if old.passed and not new.passed
    ]
    return GateReport(
        candidate_path=str(candidate_path),
        baseline_path=str(baseline_path),
        suites=suites,
        max_drop=max_drop,
        rows=rows,
        regressions=regressions,
        item_regressions=item_regressions,
        candidate=_side(candidate, cand_conv, suites),
        baseline=_side(baseline, base_conv, suites),
    )


def _verdict(new: float | None, old: float | None, max_drop: float) -> str:
    if new is None or old is None:
        return "-"
    if new > old:
        return "better"
    if new == old:
        return "same"
    return "worse (within margin)" if old - new <= max_drop + 1e-9 else "REGRESSED"


def _side(result: ModelResult, conversion: Conversion | None, suites: list[str]) -> dict[str, Any]:
    side: dict[str, Any] = {
        "model": result.model,
        "seconds": round(result.seconds, 1),
        "summary": {s: result.rate(s) for s in suites}
        | {
            f"{s} (RAG)": result.rate(s, "rag") for s in suites if result.rate(s, "rag") is not None
        },
    }
    if result.room_probed:  # per suite, the least room of a passing answer (None: no runner-up
        # failed one, or none passed)
        side["room"] = {s: _lead(result.thinnest(s)) for s in suites}
    side["conversion"] = asdict(conversion) if conversion else None
    side["items"] = [asdict(i) for i in result.items]
    return side


def _lead(item: ItemResult | None) -> float | None:
    return round(item.room.lead, 3) if item is not None and item.room is not None else None
