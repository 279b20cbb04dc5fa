"""Fast fixtures for retrieval logic: the real MiniLM tokenizer, a lexical stand-in embedder.

The stand-in hashes words into a small vector, so tests of building, updating and atomic
publishing run in milliseconds without torch; retrieval quality is tested with the real
embedder in tests/integration/test_rag_real_embedder.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from server.rag.embedder import EmbedProgress, Vectors

MINILM_DIR = Path(__file__).resolve().parents[3] / "models" / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm_tokenizer() -> Tokenizer:
    if not (MINILM_DIR / "tokenizer.json").is_file():
        pytest.skip(f"{MINILM_DIR} missing: run 'ggserve models fetch'")
    tokenizer = Tokenizer.from_file(str(MINILM_DIR / "tokenizer.json"))
    tokenizer.no_truncation()  # tokenizer.json ships with truncation and padding at 128
    tokenizer.no_padding()
    return tokenizer


class HashingEmbedder:
    """Bag of lower-cased words hashed into ``dimension`` buckets, L2-normalised."""

    def __init__(
        self, tokenizer: Tokenizer, *, name: str = "hashing-test", dimension: int = 256
    ) -> None:
        self._tokenizer = tokenizer
        self.name = name
        self.path = Path(f"/fake/{name}")
        self.dimension = dimension
        self.max_seq_length = 256
        self.embedded_texts: list[str] = []
        self.fail_after: int | None = None  # raise once this many texts have been embedded

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        return [(int(a), int(b)) for a, b in encoding.offsets]

    def embed(self, texts: Sequence[str], *, progress: EmbedProgress | None = None) -> Vectors:
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            if self.fail_after is not None and len(self.embedded_texts) >= self.fail_after:
                raise RuntimeError("simulated embedder crash")
            self.embedded_texts.append(text)
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                bucket = int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dimension
                out[row, bucket] += 1.0
            out[row] /= max(float(np.linalg.norm(out[row])), 1e-9)
        if progress:
            progress(len(texts), len(texts))
        return out

    def embed_query(self, text: str) -> Vectors:
        return self.embed([text])


@pytest.fixture
def embedder(minilm_tokenizer: Tokenizer) -> HashingEmbedder:
    return HashingEmbedder(minilm_tokenizer)


def write_docs(root: Path, files: dict[str, str | bytes]) -> Path:
    """Create ``files`` (relative path → content) under ``root``."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def minimal_pdf(text: str) -> bytes:
    """A valid one-page PDF showing ``text`` in Helvetica (enough for pypdf to extract)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
