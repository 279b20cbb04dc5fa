from __future__ import annotations

from pathlib import Path

from server.rag.loaders import Document, Skipped, collect_files, load_document

from .conftest import minimal_pdf, write_docs


def _load(tmp_path: Path, name: str, content: str | bytes) -> Document | Skipped:
    write_docs(tmp_path, {name: content})
    return load_document(tmp_path / name, name)


def test_markdown_sections_carry_the_nested_heading_path(tmp_path: Path) -> None:
    text = "# Guide\nintro\n## Install\n### Linux\nrun make\n## Usage\nuse it\n"
    doc = _load(tmp_path, "guide.md", text)
    assert isinstance(doc, Document)
    assert doc.title == "Guide"
    headings = [s.heading for s in doc.sections]
    # "## Install" has no text of its own before "### Linux": no empty section for it.
    assert headings == ["Guide", "Guide › Install › Linux", "Guide › Usage"]
    linux = doc.sections[1]
    assert doc.text[linux.start : linux.end] == "### Linux\nrun make\n"


def test_markdown_heading_inside_code_fence_is_not_a_section(tmp_path: Path) -> None:
    doc = _load(tmp_path, "a.md", "# Title\ntext\n```\n# not a heading\n```\nmore\n")
    assert isinstance(doc, Document)
    assert [s.heading for s in doc.sections] == ["Title"]


def test_html_keeps_visible_text_title_and_headings_but_not_scripts(tmp_path: Path) -> None:
    html = (
        "<html><head><title>Gadget FAQ</title><style>p{color:red}</style></head><body>"
        "<script>var secret = 1;</script><h1>Gadgets</h1><p>Gadgets need 12&nbsp;volts.</p>"
        "<h2>Warranty</h2><p>Three years.</p></body></html>"
    )
    doc = _load(tmp_path, "faq.html", html)
    assert isinstance(doc, Document)
    assert doc.title == "Gadget FAQ"
    assert "secret" not in doc.text and "color" not in doc.text
    assert "12\xa0volts" in doc.text
    assert [s.heading for s in doc.sections] == ["Gadgets", "Gadgets › Warranty"]
    warranty = doc.sections[1]
    assert "Three years." in doc.text[warranty.start : warranty.end]


def test_pdf_text_is_extracted_per_page(tmp_path: Path) -> None:
    doc = _load(tmp_path, "manual.pdf", minimal_pdf("The pump runs at 40 litres per minute"))
    assert isinstance(doc, Document)
    assert "40 litres per minute" in doc.text
    assert [s.heading for s in doc.sections] == ["page 1"]


def test_bad_files_are_skipped_with_a_reason(tmp_path: Path) -> None:
    cases = {
        "empty.md": ("   \n\n", "empty"),
        "blob.txt": (b"\x89PNG\x00\x00\x01binary", "binary"),
        "latin1.txt": ("café".encode("latin-1"), "UTF-8"),
        "broken.pdf": (b"%PDF-1.4 this is not really a pdf", "unreadable PDF"),
        "notes.docx": (b"PK\x03\x04", "unsupported file type '.docx'"),
    }
    for name, (content, reason) in cases.items():
        result = _load(tmp_path, name, content)
        assert isinstance(result, Skipped), name
        assert reason in result.reason, (name, result.reason)


def test_pdf_without_text_layer_asks_for_ocr(tmp_path: Path) -> None:
    result = _load(tmp_path, "scan.pdf", minimal_pdf(""))
    assert isinstance(result, Skipped)
    assert "OCR" in result.reason


def test_collect_files_skips_hidden_and_keys_relative_to_root(tmp_path: Path) -> None:
    write_docs(tmp_path, {"a.md": "a", "sub/b.txt": "b", ".git/c.md": "c", "sub/.d.md": "d"})
    keys = [key for _, key in collect_files([tmp_path])]
    assert keys == ["a.md", "sub/b.txt"]
    # A single file under the original root keeps the key it had in the full build.
    assert collect_files([tmp_path / "sub" / "b.txt"], root=tmp_path)[0][1] == "sub/b.txt"
    assert collect_files([tmp_path / "sub" / "b.txt"])[0][1] == "b.txt"
