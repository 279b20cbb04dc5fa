"""Loguru set-up: flat JSON lines (one record per request, plus what the code logs), or text."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO

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


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "text"] = "json", log_file: Path | None = None
) -> None:
    """Replace loguru's default sink; ``json`` writes one flat JSON object per line."""
    logger.remove()
    logger.configure(extra={"request_id": "-"})
    streams: list[TextIO] = [sys.stderr]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        streams.append(log_file.open("a", encoding="utf-8"))
    for stream in streams:
        if fmt == "json":
            logger.add(_json_sink(stream), level=level, format="{message}")
        else:
            logger.add(stream, level=level, format=TEXT_FORMAT, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[InterceptHandler()], level=level, force=True)
