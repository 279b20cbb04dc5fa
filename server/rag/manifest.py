"""``manifest.json`` of an index version: what built it, from what, and how big it is."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from server.rag.errors import IndexCorruptError
from server.rag.vector_index import IndexKind, KindRequest

MANIFEST_FILE = "manifest.json"
VECTORS_FILE = "vectors.faiss"
CHUNKS_FILE = "chunks.sqlite"
FORMAT_VERSION = 1


@dataclass
class IndexManifest:
    """Everything needed to trust (or refuse) an index at load time."""

    embedder_name: str
    embedder_path: str
    dimension: int
    index_kind: IndexKind
    kind_requested: KindRequest
    count: int  # vectors == chunks
    documents: int
    chunk_tokens: int
    overlap_tokens: int
    built_at: str
    updated_at: str
    docs_root: str
    files: dict[str, str] = field(default_factory=dict)  # document path → sha256 of its bytes
    skipped: list[dict[str, str]] = field(default_factory=list)  # last run: {path, reason}
    format: int = FORMAT_VERSION

    def write(self, folder: Path) -> None:
        """Write ``manifest.json`` into ``folder``."""
        text = json.dumps(asdict(self), indent=2, sort_keys=True, ensure_ascii=False)
        (folder / MANIFEST_FILE).write_text(text + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: Path) -> IndexManifest:
        """Read ``folder/manifest.json``; a clear error when it is missing or malformed."""
        path = folder / MANIFEST_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise IndexCorruptError(
                f"{path} is missing; rebuild the index with 'ggserve index build'"
            ) from exc
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"cannot read {path}: {exc}") from exc
        if data.get("format") != FORMAT_VERSION:
            raise IndexCorruptError(
                f"{path} has format {data.get('format')!r}, this ggserve reads format "
                f"{FORMAT_VERSION}; rebuild the index with 'ggserve index build'"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise IndexCorruptError(f"{path} is malformed ({exc}); rebuild the index") from exc
