from __future__ import annotations

import itertools

import pytest
from tokenizers import Tokenizer

from server.rag.chunking import chunk_document
from server.rag.loaders import Document, Section


def _spans(tokenizer: Tokenizer):  # type: ignore[no-untyped-def]
    return lambda text: list(tokenizer.encode(text, add_special_tokens=False).offsets)


def _doc(text: str, sections: list[Section] | None = None) -> Document:
    return Document("d.md", "Doc", text, tuple(sections or [Section("", 0, len(text))]), "h")


def test_windows_respect_size_and_overlap_and_map_back_to_the_text(
    minilm_tokenizer: Tokenizer,
) -> None:
    words = " ".join(f"word{i} is unremarkable" for i in range(150))
    doc = _doc(words)
    spans = _spans(minilm_tokenizer)
    chunks = chunk_document(doc, spans, chunk_tokens=50, overlap_tokens=10)
    assert len(chunks) > 5
    for chunk in chunks:
        assert len(spans(chunk.text)) <= 50
        assert doc.text[chunk.start : chunk.end] == chunk.text
    for first, second in itertools.pairwise(chunks):
        assert second.start < first.end, "consecutive chunks must overlap"
    assert chunks[-1].end == len(words.rstrip())


def test_windows_do_not_split_words(minilm_tokenizer: Tokenizer) -> None:
    text = " ".join(["antidisestablishmentarianism"] * 40)
    chunks = chunk_document(_doc(text), _spans(minilm_tokenizer), chunk_tokens=20, overlap_tokens=4)
    for chunk in chunks:
        assert set(chunk.text.split()) == {"antidisestablishmentarianism"}


def test_chunks_stay_inside_their_section_and_embed_with_heading(
    minilm_tokenizer: Tokenizer,
) -> None:
    text = "## A\nalpha facts\n## B\nbeta facts\n"
    sections = [Section("Doc › A", 0, 17), Section("Doc › B", 17, len(text))]
    chunks = chunk_document(_doc(text, sections), _spans(minilm_tokenizer), chunk_tokens=100)
    assert [(c.heading, c.text) for c in chunks] == [
        ("Doc › A", "## A\nalpha facts"),
        ("Doc › B", "## B\nbeta facts"),
    ]
    assert chunks[1].embed_text == "Doc › Doc › B\n## B\nbeta facts"


@pytest.mark.parametrize(("size", "overlap"), [(4, 0), (50, 50), (50, -1)])
def test_bad_chunk_settings_are_refused(
    minilm_tokenizer: Tokenizer, size: int, overlap: int
) -> None:
    with pytest.raises(ValueError, match="must be"):
        chunk_document(
            _doc("x"), _spans(minilm_tokenizer), chunk_tokens=size, overlap_tokens=overlap
        )
