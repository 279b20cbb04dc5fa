"""Background traffic for the integration tests: the shared harness's ``LoadGenerator``."""

from __future__ import annotations

from bench.harness.load import LoadGenerator, LoadReport

__all__ = ["LoadGenerator", "LoadReport"]
