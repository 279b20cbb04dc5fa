"""uvicorn's own records (an exception that escaped the app) reach the JSON log."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from loguru import logger

from server.api.uvicorn_server import uvicorn_config
from server.observability.logging import configure_logging
from server.settings import Settings


def test_an_exception_uvicorn_logs_is_a_loguru_record_with_its_traceback() -> None:
    configure_logging("INFO", "json")
    uvicorn_config(FastAPI(), Settings(_env_file=None))  # uvicorn sets logging up here
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(message.record), level="INFO")
    try:
        try:
            raise RuntimeError("escaped the app")
        except RuntimeError:
            # what uvicorn's run_asgi does with an exception the app raised
            logging.getLogger("uvicorn.error").error(
                "Exception in ASGI application\n", exc_info=True
            )
    finally:
        logger.remove(sink)
    [record] = records
    assert record["level"].name == "ERROR"
    assert record["message"].startswith("Exception in ASGI application")
    assert record["exception"] is not None
    assert isinstance(record["exception"].value, RuntimeError)


def test_uvicorn_never_rewrites_the_client_address_from_forwarded_headers() -> None:
    """GGSERVE_TRUSTED_PROXIES alone decides which X-Forwarded-For is believed: uvicorn's own
    handling (on for loopback peers by default) would let a local proxy's header through first."""
    config = uvicorn_config(FastAPI(), Settings(_env_file=None))
    assert config.proxy_headers is False
