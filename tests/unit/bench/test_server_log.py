"""Reading a JSON server log: ERROR records come out whole, with their traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from loguru import logger

from bench.harness import server_log
from bench.soak import print_errors
from server.observability.logging import configure_logging

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/server/api/middleware.py", line 127, in __call__\n'
    "    await self.app(scope, limited_receive, send_with_id)\n"
    "RuntimeError: the race this soak is looking for\n"
)


def _write_log(path: Path) -> None:
    lines = [
        "llama_model_loader: loaded meta data with 33 key-value pairs",  # llama.cpp, not JSON
        json.dumps({"time": "t0", "level": "INFO", "message": "ready", "logger": "server.app"}),
        json.dumps({"time": "t1", "level": "WARNING", "message": "slow", "logger": "x"}),
        json.dumps(
            {
                "time": "t2",
                "level": "ERROR",
                "message": "unhandled error",
                "logger": "server.api.middleware",
                "request_id": "req-42",
                "path": "/v1/ask",
                "exception": TRACEBACK,
            }
        ),
        '{"level": "ERROR", "message": "cut off mid-li',  # a line the crash truncated
        json.dumps({"time": "t3", "level": "CRITICAL", "message": "engine loop died"}),
    ]
    path.write_text("\n".join(lines) + "\n")


def test_error_records_skips_other_levels_and_lines_that_are_not_json(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    _write_log(log)
    errors = server_log.error_records(log)
    assert [r["message"] for r in errors] == ["unhandled error", "engine loop died"]


def test_format_record_keeps_the_whole_traceback_and_every_field(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    _write_log(log)
    text = server_log.format_record(server_log.error_records(log)[0])
    assert text.splitlines()[0] == "t2 ERROR req-42 server.api.middleware: unhandled error"
    assert "path='/v1/ask'" in text
    for line in TRACEBACK.splitlines():
        assert line in text, f"traceback line lost: {line!r}"


def test_soak_prints_every_error_record_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "server.log"
    _write_log(log)
    assert print_errors(log) == 2
    out = capsys.readouterr().out
    assert "server log ERROR records: 2" in out
    assert "RuntimeError: the race this soak is looking for" in out
    assert "engine loop died" in out


def test_a_logged_exception_reaches_the_json_record_with_its_traceback(tmp_path: Path) -> None:
    """The server's own JSON sink, as the middleware logs an unhandled error."""
    log = tmp_path / "server.log"
    configure_logging("INFO", "json", log_file=log)
    try:

        def handler_that_fails() -> None:
            raise KeyError("missing slot")

        try:
            handler_that_fails()
        except KeyError as exc:
            with logger.contextualize(request_id="req-7"):
                logger.opt(exception=exc).error("unhandled error")
    finally:
        configure_logging("INFO", "text", None)  # what the other tests expect
    [record] = server_log.error_records(log)
    assert record["request_id"] == "req-7"
    assert "Traceback (most recent call last)" in record["exception"]
    assert "handler_that_fails" in record["exception"]
    assert "KeyError: 'missing slot'" in record["exception"]
