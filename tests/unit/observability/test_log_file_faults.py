"""A log file on a full or read-only disk never stops the server: records go to stderr."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from server.observability.logging import GuardedFile, configure_logging

DEV_FULL = Path("/dev/full")  # every write fails with ENOSPC, like a full disk


@pytest.mark.skipif(not DEV_FULL.exists(), reason="needs /dev/full")
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_full_disk_drops_file_records_and_keeps_logging_to_stderr(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt, DEV_FULL)  # type: ignore[arg-type]
    for i in range(3):
        logger.info("request {}", i)  # must not raise
    err = capsys.readouterr().err
    assert "request 2" in err
    assert err.count("cannot write the log file") == 1  # one warning, not one per record
    assert "No space left on device" in err


def test_an_unopenable_log_file_logs_to_stderr_only(capsys: pytest.CaptureFixture[str]) -> None:
    read_only = Path("/proc/ggserve-test.log")  # procfs refuses to create files, even for root
    configure_logging("INFO", "json", read_only)
    logger.info("still serving")
    err = capsys.readouterr().err
    assert f"cannot open the log file {read_only}" in err
    assert "still serving" in err


def test_guarded_file_counts_dropped_records_and_recovers() -> None:
    class Flaky(io.StringIO):
        fail = True

        def write(self, text: str) -> int:
            if self.fail:
                raise OSError(30, "Read-only file system")
            return super().write(text)

    stream = Flaky()
    guarded = GuardedFile(stream, warn_every_s=3600)
    assert guarded.write("a\n") == 0
    assert guarded.write("b\n") == 0
    assert guarded.dropped == 2
    stream.fail = False  # remounted read-write
    guarded.write("c\n")
    assert stream.getvalue() == "c\n"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    configure_logging("INFO", "text", None)
