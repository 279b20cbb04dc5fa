"""Turn files into plain text plus the headings that give each passage its context.

Supported: Markdown, plain text, HTML and PDF (pypdf). Anything that cannot yield text is
skipped with a reason the build reports, never silently and never with a traceback.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from io import BytesIO
from pathlib import Path

SUPPORTED_SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Section:
    """A span of a document's text under one heading path (``"Install › Linux"``)."""

    heading: str
    start: int
    end: int


@dataclass(frozen=True)
class Document:
    """Extracted text of one file. ``path`` is the key inside an index (relative, POSIX)."""

    path: str
    title: str
    text: str
    sections: tuple[Section, ...]
    content_hash: str  # sha256 of the file's bytes: unchanged files are skipped on update


@dataclass(frozen=True)
class Skipped:
    """A file that was not indexed, and why."""

    path: str
    reason: str


class _Unreadable(Exception):
    """Internal: a loader could not get text out of a file; the message is the reason."""


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def _decode_text(data: bytes) -> str:
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise _Unreadable("binary file (contains NUL bytes), not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _Unreadable(
            f"not valid UTF-8 (byte {exc.start}); convert it, e.g. iconv -f cp1252 -t utf-8"
        ) from exc


_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_MD_FENCE = re.compile(r"^(```|~~~)", re.MULTILINE)


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    marks = [m.start() for m in _MD_FENCE.finditer(text)]
    return [(marks[i], marks[i + 1]) for i in range(0, len(marks) - 1, 2)]


def _markdown_sections(text: str) -> tuple[str | None, list[Section]]:
    """Split at ATX headings (not inside code fences); heading paths follow the nesting."""
    fences = _fenced_ranges(text)
    headings = [
        m for m in _MD_HEADING.finditer(text) if not any(a < m.start() < b for a, b in fences)
    ]
    title = next((m.group(2).strip() for m in headings if len(m.group(1)) == 1), None)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    starts = [m.start() for m in headings]
    if not headings or starts[0] > 0:
        sections.append(Section("", 0, starts[0] if headings else len(text)))
    for i, match in enumerate(headings):
        level = len(match.group(1))
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, match.group(2).strip()))
        end = starts[i + 1] if i + 1 < len(headings) else len(text)
        sections.append(Section(" › ".join(name for _, name in stack), match.start(), end))
    return title, sections


class _HtmlText(HTMLParser):
    """Collects visible text, the <title>, and where each h1–h6 starts."""

    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "section", "article", "pre", "blockquote", "table"}
    )
    _HIDDEN = frozenset({"script", "style", "noscript", "template", "head"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.size = 0
        self.title = ""
        self.headings: list[tuple[int, int, str]] = []  # (level, offset, text)
        self._hidden = 0
        self._in_title = False
        self._heading: tuple[int, int, list[str]] | None = None

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._HIDDEN:
            self._hidden += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self._emit("\n\n")
            self._heading = (int(tag[1]), self.size, [])
        elif tag in self._BLOCK:
            self._emit("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)
        elif re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            level, offset, words = self._heading
            self.headings.append((level, offset, " ".join("".join(words).split())))
            self._heading = None
            self._emit("\n")
        elif tag in self._BLOCK:
            self._emit("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._hidden:
            return
        if self._heading is not None:
            self._heading[2].append(data)
        self._emit(data)


def _html_sections(raw: str) -> tuple[str, str | None, list[Section]]:
    parser = _HtmlText()
    parser.feed(raw)
    parser.close()
    text = "".join(parser.parts)
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    first = parser.headings[0][1] if parser.headings else len(text)
    if first > 0:
        sections.append(Section("", 0, first))
    for i, (level, offset, name) in enumerate(parser.headings):
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, name))
        end = parser.headings[i + 1][1] if i + 1 < len(parser.headings) else len(text)
        sections.append(Section(" › ".join(n for _, n in stack), offset, end))
    h1 = next((name for level, _, name in parser.headings if level == 1), None)
    title = " ".join(parser.title.split()) or h1
    return text, title, sections


def _pdf_sections(data: bytes) -> tuple[str, str | None, list[Section]]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    # pypdf logs every repair it attempts; the skip reason we return says what matters.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise _Unreadable("encrypted PDF; save a decrypted copy to index it")
        pages = [page.extract_text() or "" for page in reader.pages]
        meta_title = reader.metadata.title if reader.metadata else None
    except _Unreadable:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise _Unreadable(f"unreadable PDF ({type(exc).__name__}: {exc})") from exc
    parts: list[str] = []
    sections: list[Section] = []
    offset = 0
    for number, page_text in enumerate(pages, start=1):
        if page_text.strip():
            sections.append(Section(f"page {number}", offset, offset + len(page_text)))
        parts.append(page_text)
        offset += len(page_text) + 2
    if not sections:
        raise _Unreadable("PDF has no extractable text (scanned images?); run OCR on it first")
    return "\n\n".join(parts), (meta_title or "").strip() or None, sections


def _has_body(text: str, section: Section, *, headed: bool) -> bool:
    """False for blank sections and for a heading immediately followed by a sub-heading."""
    body = text[section.start : section.end]
    if headed and section.heading:
        body = body.strip().partition("\n")[2]
    return bool(body.strip())


def load_document(path: Path, key: str) -> Document | Skipped:
    """Read one file. Returns a :class:`Skipped` with the reason when it yields no text."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = " ".join(sorted(SUPPORTED_SUFFIXES))
        kind = suffix or path.name
        return Skipped(key, f"unsupported file type '{kind}' (supported: {supported})")
    try:
        data = path.read_bytes()
    except OSError as exc:
        return Skipped(key, f"cannot read file: {exc.strerror or exc}")
    try:
        if suffix == ".pdf":
            text, title, sections = _pdf_sections(data)
        elif suffix in {".html", ".htm"}:
            text, title, sections = _html_sections(_decode_text(data))
        elif suffix in {".md", ".markdown"}:
            text = _decode_text(data)
            title, sections = _markdown_sections(text)
        else:
            text = _decode_text(data)
            title, sections = None, [Section("", 0, len(text))]
    except _Unreadable as exc:
        return Skipped(key, str(exc))
    if not text.strip():
        return Skipped(key, "empty: no text to index")
    kept = tuple(s for s in sections if _has_body(text, s, headed=suffix != ".pdf"))
    return Document(key, title or path.stem, text, kept, sha256_bytes(data))


def _visible_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file():
            yield path


def collect_files(paths: Iterable[Path], root: Path | None = None) -> list[tuple[Path, str]]:
    """Expand files and folders to ``(file, key)`` pairs, skipping hidden files and folders.

    The key is the path relative to ``root`` when the file lies under it (so ``index add`` of
    a file from the original docs folder replaces the same document), else relative to the
    folder given, or the bare file name for a single file.
    """
    found: list[tuple[Path, str]] = []
    resolved_root = root.resolve() if root is not None else None
    for given in paths:
        base = given.resolve()
        files = list(_visible_files(base)) if base.is_dir() else [base]
        for file in files:
            file = file.resolve()
            if resolved_root is not None and file.is_relative_to(resolved_root):
                key = file.relative_to(resolved_root).as_posix()
            elif base.is_dir():
                key = file.relative_to(base).as_posix()
            else:
                key = file.name
            found.append((file, key))
    return found


def load_documents(
    files: Sequence[tuple[Path, str]], progress: Callable[[str, int, int], None] | None = None
) -> tuple[list[Document], list[Skipped]]:
    """Load every file; return the documents and the skipped files with reasons."""
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for done, (path, key) in enumerate(files, start=1):
        if progress is not None:
            progress("load", done, len(files))
        result = load_document(path, key)
        if isinstance(result, Document):
            docs.append(result)
        else:
            skipped.append(result)
    return docs, skipped
