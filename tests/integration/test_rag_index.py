"""The retrieval index end to end with the real all-MiniLM-L6-v2 embedder and the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.index import app
from server.rag.builder import build_index
from server.rag.embedder import Embedder
from server.rag.retriever import Retriever

ROOT = Path(__file__).resolve().parents[2]
EMBEDDER = ROOT / "models" / "all-MiniLM-L6-v2"
EVAL = ROOT / "eval" / "rag"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    if not EMBEDDER.is_dir():
        pytest.fail(f"{EMBEDDER} missing: run 'ggserve models fetch' first")
    return Embedder(EMBEDDER)


@pytest.fixture(scope="module")
def eval_index(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rag") / "eval-index"
    build_index(EVAL / "docs", out, embedder)
    return out


def test_embedder_is_normalised_and_tokenizes_past_its_input_limit(embedder: Embedder) -> None:
    vectors = embedder.embed(["a pump for the garden pond", "staff shift times"])
    assert vectors.shape == (2, 384)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5
    # Chunking must see every token of a long document, not the first max_seq_length.
    assert len(embedder.token_spans("word " * 1000)) == 1000


def test_every_eval_question_finds_its_document_in_the_top_five(
    eval_index: Path, embedder: Embedder
) -> None:
    retriever = Retriever.load(eval_index, embedder)
    questions = [json.loads(line) for line in (EVAL / "questions.jsonl").read_text().splitlines()]
    top1 = 0
    for item in questions:
        hits = retriever.search(item["question"], 5).hits
        assert item["document"] in [h.document for h in hits], item["question"]
        top1 += hits[0].document == item["document"]
    assert top1 / len(questions) >= 0.9


def test_cli_build_info_query_add_remove(
    tmp_path: Path, eval_index: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGSERVE_EMBEDDER_PATH", str(EMBEDDER))
    docs = tmp_path / "docs"
    shutil.copytree(EVAL / "docs", docs)
    (docs / "photo.txt").write_bytes(b"\x00\x01binary")
    index = tmp_path / "idx"
    runner = CliRunner()

    result = runner.invoke(app, ["build", str(docs), "--out", str(index)])
    assert result.exit_code == 0, result.output
    assert "6 added" in result.output and "1 skipped" in result.output
    assert "photo.txt" in result.output and "binary" in result.output

    result = runner.invoke(app, ["info", "--index", str(index), "--documents"])
    assert result.exit_code == 0, result.output
    assert "all-MiniLM-L6-v2 (384-d)" in result.output and "kestrel-cli.md" in result.output

    result = runner.invoke(
        app, ["query", "what does error K-230 mean", "-k", "2", "--index", str(index)]
    )
    assert result.exit_code == 0, result.output
    assert "kestrel-cli.md" in result.output and "embed" in result.output

    (docs / "kestrel-cli.md").write_text("# Kestrel\nKestrel was renamed Osprey in 2026.\n")
    result = runner.invoke(app, ["add", str(docs), "--index", str(index)])
    assert result.exit_code == 0, result.output
    assert "1 replaced" in result.output and "5 unchanged" in result.output

    result = runner.invoke(app, ["remove", "travel-policy.md", "--index", str(index)])
    assert result.exit_code == 0, result.output
    assert "1 removed" in result.output and "5 documents" in result.output

    result = runner.invoke(app, ["remove", "nope.md", "--index", str(index)])
    assert result.exit_code == 1
    assert "not in the index: nope.md" in " ".join(result.output.split())


def test_cli_bad_inputs_fail_with_a_reason_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GGSERVE_EMBEDDER_PATH", str(EMBEDDER))
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["build", str(empty), "--out", str(tmp_path / "i")], "no files to index"),
        (["info", "--index", str(tmp_path / "missing")], "does not exist"),
        (["query", "x", "--index", str(tmp_path / "missing")], "does not exist"),
        (["add", str(tmp_path / "nofile.md"), "--index", str(tmp_path / "i")], "no such file"),
        (
            ["build", str(empty), "--out", str(tmp_path / "i"), "--embedder", str(tmp_path)],
            "not a sentence-transformers model",
        ),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
        assert "Traceback" not in result.output
