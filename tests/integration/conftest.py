"""Integration fixtures: one real server (real SmolLM2) shared by the tests that can share it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from server.security.api_keys import hash_key
from tests.integration.server_proc import MODEL, TEST_KEY, ServerHandle, running_server

OTHER_KEY = "ggs-integration-other-key"


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


@pytest.fixture(scope="session")
def capture_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback") / "feedback.db"


@pytest.fixture(scope="session")
def capturing(capture_db: Path) -> Iterator[ServerHandle]:
    """A server capturing in full into ``capture_db``, with a second key ``OTHER_KEY``."""
    env = {
        "GGSERVE_CAPTURE": "full",
        "GGSERVE_FEEDBACK_DB": str(capture_db),
        "GGSERVE_API_KEYS": f"test:{hash_key(TEST_KEY)},other:{hash_key(OTHER_KEY)}",
    }
    with running_server(env) as handle:
        yield handle
