"""Build, update, remove, reload — with the lexical stand-in embedder, so in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.rag import layout, vector_index
from server.rag.builder import build_index, update_index
from server.rag.errors import (
    DocumentNotInIndexError,
    EmbedderMismatchError,
    IndexCorruptError,
    IndexNotFoundError,
    NothingToIndexError,
)
from server.rag.manifest import VECTORS_FILE, IndexManifest
from server.rag.retriever import Retriever, RetrieverHolder

from .conftest import HashingEmbedder, write_docs

DOCS = {
    "pumps.md": "# Pumps\n## Flow\nThe pump moves forty litres per minute.\n"
    "## Noise\nThe pump hums quietly at night.\n",
    "valves.txt": "Brass valves resist corrosion in salt water.",
    "faq/warranty.html": "<h1>Warranty</h1><p>The warranty lasts three years.</p>",
}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs", DOCS)


def _top(index: Path, embedder: HashingEmbedder, question: str) -> str:
    hits = Retriever.load(index, embedder).search(question, 1).hits
    return f"{hits[0].document}#{hits[0].heading}" if hits else ""


def test_build_then_search_finds_the_passage_with_sources(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    report = build_index(docs, index, embedder)
    assert sorted(report.added) == ["faq/warranty.html", "pumps.md", "valves.txt"]
    assert report.total_chunks == 4 and report.index_kind == "flat"
    manifest = IndexManifest.read(layout.current_version(index))
    assert manifest.embedder_name == "hashing-test" and manifest.dimension == 256
    assert manifest.count == 4 and manifest.documents == 3
    assert set(manifest.files) == set(DOCS)

    result = Retriever.load(index, embedder).search("how many litres per minute", 3, 0.1)
    best = result.hits[0]
    assert (best.n, best.document, best.title, best.heading) == (
        1,
        "pumps.md",
        "Pumps",
        "Pumps › Flow",
    )
    assert "forty litres" in best.snippet
    assert [h.n for h in result.hits] == list(range(1, len(result.hits) + 1))
    assert all(h.score >= 0.1 for h in result.hits)
    assert result.hits == sorted(result.hits, key=lambda h: -h.score)


def test_threshold_drops_weak_passages(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    build_index(docs, tmp_path / "idx", embedder)
    retriever = Retriever.load(tmp_path / "idx", embedder)
    assert retriever.search("zebra xylophone", 5, threshold=0.5).hits == []
    assert retriever.search("zebra xylophone", 5, threshold=0.5).candidates == 4
    best = retriever.search("zebra xylophone", 5, threshold=None)
    top = retriever.search("zebra xylophone", 5, threshold=0.5).top_score
    assert top == pytest.approx(best.hits[0].score, abs=1e-4)
    assert best.query_vector is not None
    assert best.query_vector.tolist() == embedder.embed_query("zebra xylophone")[0].tolist()


def test_add_skips_unchanged_and_replaces_changed_documents(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    build_index(docs, index, embedder)
    first_version = layout.current_version(index).name

    embedder.embedded_texts.clear()
    report = update_index(index, embedder, add=[docs])
    assert report.version is None and sorted(report.unchanged) == sorted(DOCS)
    assert embedder.embedded_texts == [], "unchanged documents must not be embedded again"
    assert layout.current_version(index).name == first_version

    (docs / "valves.txt").write_text("Steel valves are rated for 300 bar.")
    (docs / "gaskets.md").write_text("# Gaskets\nReplace gaskets every spring.")
    report = update_index(index, embedder, add=[docs])
    assert report.replaced == ["valves.txt"] and report.added == ["gaskets.md"]
    assert len(embedder.embedded_texts) == 2
    assert _top(index, embedder, "steel valves bar").startswith("valves.txt")
    assert _top(index, embedder, "gaskets spring").startswith("gaskets.md")
    retriever = Retriever.load(index, embedder)
    assert "Brass" not in " ".join(h.text for h in retriever.search("brass valves", 10).hits)
    assert retriever.count == 5


def test_remove_drops_a_document_and_unknown_names_are_refused(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    build_index(docs, index, embedder)
    update_index(index, embedder, remove=["pumps.md"])
    retriever = Retriever.load(index, embedder)
    assert retriever.count == 2
    assert all(h.document != "pumps.md" for h in retriever.search("pump litres", 10).hits)
    with pytest.raises(DocumentNotInIndexError, match=r"not in the index: nope\.md"):
        update_index(index, embedder, remove=["nope.md"])


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_removal_works_for_both_index_kinds(
    kind: str, docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    build_index(docs, index, embedder, kind=kind)  # type: ignore[arg-type]
    update_index(index, embedder, remove=["valves.txt"])
    retriever = Retriever.load(index, embedder)
    assert retriever.manifest.index_kind == kind
    assert retriever.count == 3
    assert {h.document for h in retriever.search("valves pump warranty", 10).hits} == {
        "pumps.md",
        "faq/warranty.html",
    }


def test_auto_kind_switches_to_hnsw_when_the_index_grows(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vector_index, "HNSW_AUTO_THRESHOLD", 7)
    index = tmp_path / "idx"
    assert build_index(docs, index, embedder).index_kind == "flat"
    extra = write_docs(
        tmp_path / "more", {f"n{i}.txt": f"note {i} about filters" for i in range(3)}
    )
    report = update_index(index, embedder, add=[extra])
    assert report.index_kind == "hnsw" and report.total_chunks == 7
    assert _top(index, embedder, "litres per minute").startswith("pumps.md")


def test_failed_rebuild_leaves_the_old_index_untouched(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    build_index(docs, index, embedder)
    version = layout.current_version(index)
    before = {p.name: p.read_bytes() for p in version.iterdir()}

    (docs / "new.md").write_text("# New\nfresh content")
    embedder.fail_after = len(embedder.embedded_texts) + 2
    with pytest.raises(RuntimeError, match="simulated embedder crash"):
        build_index(docs, index, embedder)
    with pytest.raises(RuntimeError, match="simulated embedder crash"):
        update_index(index, embedder, add=[docs])

    assert layout.current_version(index) == version
    assert {p.name: p.read_bytes() for p in version.iterdir()} == before
    assert sorted(p.name for p in index.iterdir()) == ["CURRENT", version.name]
    embedder.fail_after = None
    assert _top(index, embedder, "warranty years").startswith("faq/warranty.html")


def test_versions_are_pruned_keeping_current_and_previous(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    for _ in range(3):
        build_index(docs, index, embedder)
    versions = sorted(p.name for p in index.iterdir() if p.name.startswith("v-"))
    assert len(versions) == 2 and layout.current_version(index).name == versions[-1]


def test_nothing_indexable_is_a_clear_error(tmp_path: Path, embedder: HashingEmbedder) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(NothingToIndexError, match="no files to index"):
        build_index(empty, tmp_path / "idx", embedder)
    junk = write_docs(tmp_path / "junk", {"a.txt": "", "b.pdf": b"%PDF-1.4 junk", "c.bin": b"\0"})
    with pytest.raises(NothingToIndexError, match=r"every file was skipped .*a\.txt: empty"):
        build_index(junk, tmp_path / "idx", embedder)
    with pytest.raises(NothingToIndexError, match="does not exist"):
        build_index(tmp_path / "missing", tmp_path / "idx", embedder)
    assert not (tmp_path / "idx" / "CURRENT").exists()


def test_build_refuses_to_take_over_an_unrelated_folder(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    precious = write_docs(tmp_path / "precious", {"thesis.tex": "do not delete"})
    with pytest.raises(IndexNotFoundError, match="not a ggserve index"):
        build_index(docs, precious, embedder)
    assert (precious / "thesis.tex").read_text() == "do not delete"


def test_index_built_with_another_embedder_is_refused(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder, minilm_tokenizer: object
) -> None:
    index = tmp_path / "idx"
    build_index(docs, index, embedder)
    other_dim = HashingEmbedder(minilm_tokenizer, name="hashing-test", dimension=32)  # type: ignore[arg-type]
    with pytest.raises(EmbedderMismatchError, match=r"'hashing-test' \(256-d.*\(32-d\)"):
        Retriever.load(index, other_dim)
    other_name = HashingEmbedder(minilm_tokenizer, name="other-model")  # type: ignore[arg-type]
    with pytest.raises(EmbedderMismatchError, match="GGSERVE_EMBEDDER_PATH"):
        Retriever.load(index, other_name)
    with pytest.raises(EmbedderMismatchError):
        update_index(index, other_name, add=[docs])


def test_missing_or_corrupt_index_is_reported(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    with pytest.raises(IndexNotFoundError, match="does not exist"):
        Retriever.load(tmp_path / "nowhere", embedder)
    index = tmp_path / "idx"
    build_index(docs, index, embedder)
    (layout.current_version(index) / VECTORS_FILE).write_bytes(b"garbage")
    with pytest.raises(IndexCorruptError, match="rebuild"):
        Retriever.load(index, embedder)


def test_holder_reload_swaps_atomically_and_old_retriever_keeps_working(
    docs: Path, tmp_path: Path, embedder: HashingEmbedder
) -> None:
    index = tmp_path / "idx"
    build_index(docs, index, embedder)
    holder = RetrieverHolder.open(index, embedder)
    in_flight = holder.current
    assert holder.reload().changed is False

    update_index(index, embedder, remove=["valves.txt"])
    report = holder.reload()
    assert report.changed and report.previous_version == in_flight.version
    assert holder.current is not in_flight and holder.current.count == 3
    # A request that took the old retriever before the swap still completes on it.
    assert in_flight.search("brass valves", 1).hits[0].document == "valves.txt"

    (index / "CURRENT").write_text("v-does-not-exist\n")
    with pytest.raises(IndexNotFoundError):
        holder.reload()
    assert holder.current.version == report.version  # a failed reload keeps serving


def test_vector_index_remove_and_rebuild_keep_ids() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 150, dtype=np.int64)
    for kind in ("flat", "hnsw"):
        index = vector_index.VectorIndex.create(16, kind)  # type: ignore[arg-type]
        index.add(ids, vectors)
        index = index.remove(np.array([100, 101], dtype=np.int64))
        assert index.count == 48
        _, found = index.search(vectors[2:3], 1)
        assert found[0, 0] == 102
        _, found = index.search(vectors[0:1], 48)
        assert 100 not in found[0]


def test_an_index_inside_the_docs_folder_does_not_index_itself(
    docs: Path, embedder: HashingEmbedder
) -> None:
    index = docs / "indexes" / "self"
    build_index(docs, index, embedder)
    report = build_index(docs, index, embedder)
    assert sorted(report.added) == sorted(DOCS) and report.skipped == []
    assert update_index(index, embedder, add=[docs]).skipped == []
