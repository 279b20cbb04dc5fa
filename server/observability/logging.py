"""Loguru set-up: JSON lines (one record per request plus whatever the code logs), or text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from loguru import logger


def configure_logging(
    level: str = "INFO", fmt: Literal["json", "text"] = "json", log_file: Path | None = None
) -> None:
    """Replace loguru's default sink. ``json`` writes one serialized record per line."""
    logger.remove()
    serialize = fmt == "json"
    text_format = (
        "<green>{time:HH:mm:ss.SSS}</green> <level>{level: <7}</level> "
        "<cyan>{extra[request_id]}</cyan> {message}"
    )
    logger.configure(extra={"request_id": "-"})
    logger.add(
        sys.stderr,
        level=level,
        serialize=serialize,
        format=text_format,
        backtrace=False,
        diagnose=False,
    )
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            log_file,
            level=level,
            serialize=serialize,
            format=text_format,
            backtrace=False,
            diagnose=False,
            enqueue=True,
        )
