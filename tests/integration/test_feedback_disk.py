"""A full, then read-only, disk under the feedback database: answers still go out, counted.

Uses a real tiny tmpfs (root can mount one; CI runs as root), filled up and then remounted
read-only, so SQLite meets the real ENOSPC and EROFS errors.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.feedback.store import FeedbackStore
from tests.integration.server_proc import ServerHandle, running_server
from tests.integration.test_feedback_http import metric


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mount_point = tmp_path_factory.mktemp("tinydisk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root): " + done.stderr.decode())
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> None:
    """Write until the file system refuses (ENOSPC)."""
    fd = os.open(folder / "ballast", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


@pytest.fixture(scope="module")
def on_small_disk(small_disk: Path) -> Iterator[ServerHandle]:
    FeedbackStore(small_disk / "feedback.db")  # exists before the disk fills
    env = {"GGSERVE_CAPTURE": "full", "GGSERVE_FEEDBACK_DB": str(small_disk / "feedback.db")}
    with running_server(env) as handle:
        yield handle


def ask(server: ServerHandle) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/ask",
        json={"question": "Name a fruit. " + "padding " * 400, "max_tokens": 4},
        headers=server.headers,
        timeout=120,
    )


def failed_writes(server: ServerHandle) -> float:
    return metric(server, "ggserve_capture_records_total", outcome="failed")


def wait_for_failures(server: ServerHandle, above: float) -> float:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        value = failed_writes(server)
        if value > above:
            return value
        time.sleep(0.1)
    raise AssertionError("the failed capture write was not counted")


def test_full_disk_then_read_only_disk_never_fail_a_request(
    on_small_disk: ServerHandle, small_disk: Path
) -> None:
    fill(small_disk)
    before = failed_writes(on_small_disk)
    for _ in range(3):
        response = ask(on_small_disk)
        assert response.status_code == 200 and response.json()["answer"] is not None
    after_full = wait_for_failures(on_small_disk, before)
    # SQLite names ENOSPC on tmpfs "disk I/O error" (the WAL append fails), elsewhere
    # "database or disk is full": the log line is ours either way.
    assert "capture write failed" in on_small_disk.log()

    (small_disk / "ballast").unlink()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    response = ask(on_small_disk)
    assert response.status_code == 200
    wait_for_failures(on_small_disk, after_full)
    # Feedback is the one explicit write: it says the store is unavailable, it does not 500.
    rated = httpx.post(
        on_small_disk.url + "/v1/feedback",
        json={"response_id": response.json()["id"], "rating": 1},
        headers=on_small_disk.headers,
    )
    assert rated.status_code in (404, 503), rated.text
    assert httpx.get(on_small_disk.url + "/ready").status_code == 200
