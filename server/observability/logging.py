"""Loguru set-up: flat JSON lines (one record per request, plus what the code logs), or text."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO, cast

from loguru import logger

TEXT_FORMAT = (
    "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
    "<cyan>{extra[request_id]}</cyan> {message}"
)


def _json_line(message: Any) -> str:
    record = message.record
    payload: dict[str, Any] = {
        "time": record["time"].isoformat(),
        "level": record["level"].name,
        "message": record["message"],
        "logger": record["name"],
        **record["extra"],
    }
    exc = record["exception"]
    if exc is not None and exc.type is not None:
        payload["exception"] = "".join(
            traceback.format_exception(exc.type, exc.value, exc.traceback)
        )
    return json.dumps(payload, default=str, ensure_ascii=False) + "\n"


def _json_sink(stream: TextIO) -> Callable[[Any], None]:
    def write(message: Any) -> None:
        stream.write(_json_line(message))
        stream.flush()

    return write


class InterceptHandler(logging.Handler):
    """Send stdlib ``logging`` records (the engine, llama.cpp, uvicorn) through loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).bind(logger_name=record.name).log(
            level, record.getMessage()
        )


class GuardedFile:
    """A log file whose write errors (disk full, read-only remount, I/O error) never propagate.

    A record that cannot be written is dropped and counted; stderr gets one line about it at
    most every ``warn_every_s``. Serving requests matters more than the file log, and stderr
    (the container log) still has every record.
    """

    def __init__(self, stream: TextIO, warn_every_s: float = 60.0) -> None:
        self._stream = stream
        self._warn_every_s = warn_every_s
        self._last_warning = -math.inf
        self.dropped = 0

    def write(self, text: str) -> int:
        try:
            written = self._stream.write(text)
            self._stream.flush()
            return written
        except (OSError, ValueError) as exc:  # ValueError: the stream was closed under us
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_warning >= self._warn_every_s:
                self._last_warning = now
                sys.stderr.write(
                    f"ggserve: cannot write the log file ({exc}); {self.dropped} records dropped "
                    "from it so far (stderr still has them)\n"
                )
            return 0

    def flush(self) -> None:
        """Flushing happens in ``write``; here only to look like a stream to loguru."""


def _open_log_file(log_file: Path) -> TextIO | None:
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        return log_file.open("a", encoding="utf-8")
    except OSError as exc:
        sys.stderr.write(
            f"ggserve: cannot open the log file {log_file} ({exc.strerror or exc}); logging to "
            "stderr only. Fix GGSERVE_LOG_FILE or the folder's permissions.\n"
        )
        return None


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "text"] = "json", log_file: Path | None = None
) -> None:
    """Replace loguru's default sink; ``json`` writes one flat JSON object per line.

    An unwritable ``log_file`` (missing permission, read-only or full disk) never stops the
    server: it logs to stderr only and says so there (see ``GuardedFile``).
    """
    logger.remove()
    logger.configure(extra={"request_id": "-"})
    streams: list[TextIO] = [sys.stderr]
    if log_file is not None:
        opened = _open_log_file(log_file)
        if opened is not None:
            streams.append(cast(TextIO, GuardedFile(opened)))
    for stream in streams:
        if fmt == "json":
            logger.add(_json_sink(stream), level=level, format="{message}")
        else:
            logger.add(stream, level=level, format=TEXT_FORMAT, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[InterceptHandler()], level=level, force=True)
