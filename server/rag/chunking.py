"""Split documents into overlapping token windows that stay inside one section.

Windows are counted in the embedder's own tokens, so a chunk never silently overflows the
embedder's input and is truncated. Each chunk remembers its heading path; the text that gets
embedded is prefixed with the title and heading so a passage like "Run `make install`." is
still found by a question about installing on Linux.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from server.rag.loaders import Document

# (start, end) character offsets of each token of ``text``, no special tokens.
TokenSpans = Callable[[str], list[tuple[int, int]]]

DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40
_WORD_SNAP_TOKENS = 12  # how far a window end may move back to avoid splitting a word


@dataclass(frozen=True)
class Chunk:
    """One passage: where it comes from, its text, and what gets embedded for it."""

    document: str
    title: str
    heading: str
    start: int  # character offsets into the document's extracted text
    end: int
    text: str

    @property
    def embed_text(self) -> str:
        """Text given to the embedder: title and heading first, for context."""
        context = " › ".join(part for part in (self.title, self.heading) if part)
        return f"{context}\n{self.text}" if context else self.text


def _window_ends(spans: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Token index ranges ``[i, j)`` of the windows, ends moved back to word boundaries."""
    windows: list[tuple[int, int]] = []
    n = len(spans)
    i = 0
    while i < n:
        j = min(i + size, n)
        if j < n:
            # spans[j] continues the word of spans[j-1] when they touch: move back to a gap.
            k = j
            while k > i + 1 and j - k < _WORD_SNAP_TOKENS and spans[k][0] == spans[k - 1][1]:
                k -= 1
            if spans[k][0] != spans[k - 1][1]:
                j = k
        windows.append((i, j))
        if j >= n:
            break
        next_i = max(j - overlap, i + 1)
        # Start the next window at the beginning of a word, too.
        while next_i > i + 1 and spans[next_i][0] == spans[next_i - 1][1]:
            next_i -= 1
        i = next_i
    return windows


def chunk_document(
    doc: Document,
    token_spans: TokenSpans,
    *,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS,
) -> list[Chunk]:
    """Cut ``doc`` into windows of at most ``chunk_tokens`` tokens overlapping by
    ``overlap_tokens``; a window never crosses a section boundary."""
    if chunk_tokens < 8:
        raise ValueError(f"chunk_tokens must be at least 8, got {chunk_tokens}")
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError(
            f"overlap_tokens must be >= 0 and smaller than chunk_tokens ({chunk_tokens}), "
            f"got {overlap_tokens}"
        )
    chunks: list[Chunk] = []
    for section in doc.sections:
        body = doc.text[section.start : section.end]
        spans = token_spans(body)
        if not spans:
            continue
        for i, j in _window_ends(spans, chunk_tokens, overlap_tokens):
            start, end = spans[i][0], spans[j - 1][1]
            text = body[start:end].strip()
            if not text:
                continue
            lead = len(body[start:end]) - len(body[start:end].lstrip())
            abs_start = section.start + start + lead
            chunks.append(
                Chunk(
                    document=doc.path,
                    title=doc.title,
                    heading=section.heading,
                    start=abs_start,
                    end=abs_start + len(text),
                    text=text,
                )
            )
    return chunks
