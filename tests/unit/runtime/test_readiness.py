"""The readiness state machine."""

from __future__ import annotations

import pytest

from server.runtime.readiness import InvalidTransitionError, Readiness


def test_readiness_moves_loading_to_ready_or_failed_only() -> None:
    r = Readiness()
    assert r.state == "loading"
    r.failed("model file x.gguf is not a GGUF file")
    assert r.snapshot().reason == "model file x.gguf is not a GGUF file"
    with pytest.raises(InvalidTransitionError):
        r.ready()
    r.loading()
    r.ready()
    assert r.is_ready and r.snapshot().reason is None
