"""``ggserve drift report``: verdicts, pictures, and clear errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli.main import app
from tests.unit.drift.conftest import COOKING, NETWORK, HashingEmbedder, observations, questions

runner = CliRunner()


def _jsonl(path: Path, topic: list[str], n: int, seed: int, **shift: float) -> Path:
    rng = np.random.default_rng(seed)
    lines = [
        json.dumps(
            {
                "question": o.query,
                "finish_reason": o.finish_reason,
                "answer_tokens": o.answer_tokens,
                "top_score": o.top_score,
                "no_context": o.no_context,
            }
        )
        for o in observations(questions(topic, n, rng), rng, **shift)  # type: ignore[arg-type]
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def hashing_embedder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("server.rag.embedder.Embedder", lambda path: HashingEmbedder())
    # A wide terminal, so that table cells are not cut (what is printed is what is checked).
    monkeypatch.setattr("cli.drift.out", Console(width=200))


def _report(*args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr)."""
    result = runner.invoke(app, ["drift", "report", "--min-samples", "100", *args])
    return result.exit_code, " ".join(result.output.split())  # rich wraps long lines


def _json_report(*args: str) -> dict:
    result = runner.invoke(app, ["drift", "report", "--min-samples", "100", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_topic_shift_is_reported_with_png_and_html(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", COOKING, 150, 1)
    cur = _jsonl(tmp_path / "cur.jsonl", NETWORK, 150, 2)
    png, page = tmp_path / "out" / "drift.png", tmp_path / "out" / "drift.html"
    code, out = _report("-r", str(ref), "-c", str(cur), "--png", str(png), "--html", str(page))
    assert code == 0, out
    assert "query_embedding" in out and "DRIFT" in out and "overall: drift" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = page.read_text(encoding="utf-8")
    assert "<table>" in html and "data:image/png;base64," in html and "DRIFT" in html


def test_the_same_distribution_reports_no_drift_as_json(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", COOKING, 150, 3)
    cur = _jsonl(tmp_path / "cur.jsonl", COOKING, 150, 4)
    body = _json_report("-r", str(ref), "-c", str(cur))
    assert body["drifted"] is False
    assert body["reference_source"] == str(ref)


def test_too_few_rows_give_no_verdict(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", COOKING, 50, 5)
    cur = _jsonl(tmp_path / "cur.jsonl", NETWORK, 50, 6)
    code, out = _report("-r", str(ref), "-c", str(cur), "--no-embeddings")
    assert code == 0 and "overall: no verdict" in out and "needs 100 samples" in out


def test_an_output_shift_flags_without_embeddings(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", COOKING, 200, 7)
    cur = _jsonl(tmp_path / "cur.jsonl", COOKING, 200, 8, no_context_rate=0.5)
    body = _json_report("-r", str(ref), "-c", str(cur), "--no-embeddings")
    signals = {s["name"]: s for s in body["signals"]}
    assert signals["no_context"]["drifted"] is True
    assert "query_embedding" not in signals


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "is not a file"),
        (b'{"question": "ok"}\n{"question": 5}\n', [], "cur.jsonl:2"),
        (b'{"question": "\xc3\x28"}\n', [], "UTF-8"),
        (b'{"question": "ok"}\n', ["--alpha", "2"], "alpha"),
        (b'{"question": "ok"}\n', ["--permutations", "10"], "permutations"),
        (b'{"question": "ok"}\n', ["--rows", "50"], "min_samples"),
    ],
)
def test_bad_input_is_a_clear_error(
    tmp_path: Path, content: bytes | None, args: list[str], message: str
) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", COOKING, 10, 9)
    cur = tmp_path / "cur.jsonl"
    if content is not None:
        cur.write_bytes(content)
    code, out = _report("-r", str(ref), "-c", str(cur), *args)
    assert code == 1 and "error:" in out and message in out, out
    assert "Traceback" not in out


def test_out_of_range_options_are_refused_by_the_parser(tmp_path: Path) -> None:
    ref = _jsonl(tmp_path / "ref.jsonl", COOKING, 10, 10)
    code, _ = _report("-r", str(ref), "-c", str(ref), "--rows", "1")
    assert code == 2
