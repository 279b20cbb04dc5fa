"""``ggserve eval`` on the real model: closed-book and RAG rows, report file, exit codes.

The RAG eval set (eval/rag) is a suite as it is ({question, fact}); with --index every question
is asked a second time through the RAG agent over an index of its documents. A model compared
with itself cannot regress; the RAG pass must find facts the closed-book pass cannot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.server_proc import EMBEDDER, MODEL, ROOT

pytestmark = pytest.mark.slow
QUESTIONS = ROOT / "eval" / "rag" / "questions.jsonl"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "GGSERVE_EMBEDDER_PATH": str(EMBEDDER)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_rag_rows_report_and_a_model_never_regresses_against_itself(tmp_path: Path) -> None:
    suite = tmp_path / "rag.jsonl"
    suite.write_text("".join(QUESTIONS.read_text().splitlines(keepends=True)[:4]))
    index = tmp_path / "index"
    built = _cli("index", "build", str(ROOT / "eval" / "rag" / "docs"), "--out", str(index))
    assert built.returncode == 0, built.stderr
    report = tmp_path / "report.json"
    result = _cli(
        "eval", "--candidate", str(MODEL), "--baseline", str(MODEL), "--suite", str(suite),
        "--index", str(index), "--report", str(report),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rag: answer contains expected (RAG)" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["regressions"] == []
    summary = data["candidate"]["summary"]
    assert summary == data["baseline"]["summary"]  # greedy: the same model answers the same
    assert summary["rag (RAG)"] > summary["rag"]  # retrieval finds what the model cannot know
    assert len(data["candidate"]["items"]) == 8  # 4 questions, closed-book and RAG
