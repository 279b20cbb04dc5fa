"""How an index folder holds versions, and how a new version replaces the old atomically.

    indexes/NAME/
      CURRENT                 one line: the name of the live version folder
      v-20261123T181500123456/  manifest.json, vectors.faiss, chunks.sqlite (never modified)

A build or update writes a complete new version under a temporary name, renames it into
place, then replaces ``CURRENT`` with ``os.replace`` — a single atomic rename. A failed or
interrupted build therefore never touches the live version, and a reader (a server reload)
sees either the old version or the new one, never a mixture. The previous version is kept so
that a server still reading it is not pulled from under its feet.
"""

from __future__ import annotations

import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

from server.rag.errors import IndexNotFoundError

CURRENT_FILE = "CURRENT"
_VERSION_PREFIX = "v-"
_TEMP_PREFIX = ".tmp-"


def is_index(folder: Path) -> bool:
    """True when ``folder`` is an index folder (has a ``CURRENT`` pointer)."""
    return (folder / CURRENT_FILE).is_file()


def current_version(folder: Path) -> Path:
    """The live version folder of the index at ``folder``."""
    if not folder.exists():
        raise IndexNotFoundError(
            f"index folder {folder} does not exist; build it with "
            f"'ggserve index build DOCS_DIR --out {folder}'"
        )
    pointer = folder / CURRENT_FILE
    if not pointer.is_file():
        raise IndexNotFoundError(
            f"{folder} is not a ggserve index (no {CURRENT_FILE} file); build one with "
            f"'ggserve index build DOCS_DIR --out {folder}'"
        )
    name = pointer.read_text(encoding="utf-8").strip()
    version = folder / name
    if not name.startswith(_VERSION_PREFIX) or not version.is_dir():
        raise IndexNotFoundError(
            f"{pointer} points at '{name}', which is not a version folder; rebuild the index"
        )
    return version


def prepare_folder(folder: Path) -> None:
    """Create ``folder`` for a new index, refusing to take over an unrelated non-empty folder."""
    if folder.exists() and not folder.is_dir():
        raise IndexNotFoundError(f"{folder} exists and is a file; choose another --out")
    if folder.is_dir() and not is_index(folder) and any(folder.iterdir()):
        raise IndexNotFoundError(
            f"{folder} exists, is not empty and is not a ggserve index; "
            "choose another --out or empty it first"
        )
    folder.mkdir(parents=True, exist_ok=True)


def new_staging(folder: Path) -> Path:
    """A fresh temporary folder inside ``folder`` to write a version into."""
    staging = folder / f"{_TEMP_PREFIX}{secrets.token_hex(4)}"
    staging.mkdir()
    return staging


def publish(folder: Path, staging: Path) -> str:
    """Make ``staging`` the live version; returns the version name."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    name = f"{_VERSION_PREFIX}{stamp}"
    previous = (folder / CURRENT_FILE).read_text().strip() if is_index(folder) else None
    staging.rename(folder / name)
    pointer_tmp = folder / f"{_TEMP_PREFIX}{CURRENT_FILE}"
    with pointer_tmp.open("w", encoding="utf-8") as handle:
        handle.write(name + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(pointer_tmp, folder / CURRENT_FILE)
    _prune(folder, keep={name, previous})
    return name


def discard(staging: Path) -> None:
    """Remove a staging folder after a failed build."""
    shutil.rmtree(staging, ignore_errors=True)


def _prune(folder: Path, keep: set[str | None]) -> None:
    for child in folder.iterdir():
        if child.name in keep or not child.is_dir():
            continue
        if child.name.startswith(_VERSION_PREFIX):
            shutil.rmtree(child, ignore_errors=True)
