"""/v1/embeddings over a stand-in embedder: what the route asks of the embedder, and where."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from fastapi.testclient import TestClient

from tests.unit.api.conftest import auth


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class LockedEmbedder:
    """Stands in for ``server.rag.embedder.Embedder``: one word per token, and it notes
    whether each call ran on the event loop (the real one's calls wait for the lock that a
    running encode holds, so on the loop they would stall every request)."""

    name = "stand-in"
    dimension = 4

    def __init__(self) -> None:
        self.on_loop: list[tuple[str, bool]] = []

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.on_loop.append(("embed", _on_event_loop()))
        return np.full((len(texts), self.dimension), 0.5, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        self.on_loop.append(("count_tokens", _on_event_loop()))
        return len(text.split())


def test_embedding_and_token_counting_run_off_the_event_loop(client: TestClient) -> None:
    embedder = LockedEmbedder()
    client.app.state.services.embedder._embedder = embedder  # type: ignore[attr-defined]
    response = client.post(
        "/v1/embeddings", json={"input": ["three short words", "two words"]}, headers=auth()
    )
    assert response.status_code == 200, response.text
    assert response.json()["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert embedder.on_loop == [("embed", False), ("count_tokens", False), ("count_tokens", False)]
