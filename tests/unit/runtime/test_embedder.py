"""The embedder provider: nothing loaded until asked, a clear error for a bad folder."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from server.rag.errors import EmbedderLoadError, RagError
from server.runtime.embedder import EmbedderProvider
from server.settings import Settings


def test_nothing_is_loaded_until_the_embedder_is_asked_for(tmp_path: Path) -> None:
    provider = EmbedderProvider(tmp_path / "missing")
    assert provider.loaded is None


def test_a_folder_that_is_no_model_fails_with_the_reason_every_time(tmp_path: Path) -> None:
    provider = EmbedderProvider(tmp_path)

    async def ask_twice() -> list[BaseException]:
        results = await asyncio.gather(provider.get(), provider.get(), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    errors = asyncio.run(ask_twice())
    assert len(errors) == 2 and all(isinstance(e, EmbedderLoadError) for e in errors)
    assert isinstance(errors[0], RagError) and "ggserve models fetch" in str(errors[0])
    assert provider.loaded is None


def test_the_server_embeds_on_one_torch_thread_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int | None] = []

    class Recorded:
        def __init__(self, path: Path, *, threads: int | None = None) -> None:
            made.append(threads)

    monkeypatch.setattr("server.runtime.embedder.Embedder", Recorded)
    monkeypatch.delenv("GGSERVE_EMBEDDER_THREADS", raising=False)
    for setting, expected in (("", 1), ("3", 3), ("0", None)):  # 0 = torch's own default
        if setting:
            monkeypatch.setenv("GGSERVE_EMBEDDER_THREADS", setting)
        settings = Settings(_env_file=None)
        asyncio.run(EmbedderProvider(tmp_path, settings.embedder_threads).get())
        assert made[-1] == expected
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv("GGSERVE_EMBEDDER_THREADS", bad)
        with pytest.raises(ValueError, match="embedder_threads"):
            Settings(_env_file=None)
