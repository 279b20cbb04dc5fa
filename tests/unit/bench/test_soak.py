"""The soak's verdict: which statuses count as server errors, and what a miss prints."""

from __future__ import annotations

import random

import pytest

from bench.soak import Sample, Soak, report


def _soak(statuses: list[str]) -> Soak:
    soak = Soak("http://127.0.0.1:1", 0.0, 0.0, 0.2, random.Random(0))
    # Two minutes of traffic, the same latency in the first and the last minute.
    for i, status in enumerate(statuses):
        soak.samples.append(Sample("chat", status, started=float(i % 120), latency=1.0))
    return soak


def test_503_overload_and_disconnects_pass(capsys: pytest.CaptureFixture[str]) -> None:
    soak = _soak(["200"] * 50 + ["503", "disconnect", "ReadTimeout"] + ["200"] * 70)
    assert report(soak, 2.0, (900.0, 910.0), slots_end=0)
    assert "[ok] no 5xx other than 503" in capsys.readouterr().out


def test_one_500_is_a_miss(capsys: pytest.CaptureFixture[str]) -> None:
    soak = _soak(["200"] * 60 + ["500"] + ["200"] * 60)
    assert not report(soak, 2.0, (900.0, 910.0), slots_end=0)
    assert "[MISSED] no 5xx other than 503" in capsys.readouterr().out


def test_a_held_slot_or_memory_growth_is_a_miss() -> None:
    ok = ["200"] * 120
    assert not report(_soak(ok), 2.0, (900.0, 910.0), slots_end=1)
    assert not report(_soak(ok), 2.0, (900.0, 960.0), slots_end=0)  # +6.7 %
