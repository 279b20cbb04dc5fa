"""Integration fixtures: one real server (real SmolLM2) shared by the tests that can share it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.server_proc import MODEL, ServerHandle, running_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def server() -> Iterator[ServerHandle]:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} missing: run 'make setup' (ggserve models fetch) first")
    with running_server() as handle:
        yield handle
