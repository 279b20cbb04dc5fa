"""The executor refuses plans that would hand llama.cpp an impossible copy or an overfull batch.

These checks run before any call into the context, so a fake context handle is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from server.engine.executor import Slot, StepExecutor
from server.engine.planner import DecodeToken, StepPlan


@pytest.fixture
def executor() -> Iterator[StepExecutor]:
    slots = [Slot(0, [1, 2, 3]), Slot(1, [])]
    ex = StepExecutor(ctx=0, memory=0, n_batch=2, slots=slots)
    yield ex
    ex.close()


@pytest.mark.parametrize(("src", "dst", "keep"), [(0, 1, 4), (0, 1, 0), (0, 0, 2), (1, 0, 1)])
def test_impossible_prefix_copies_are_refused(
    executor: StepExecutor, src: int, dst: int, keep: int
) -> None:
    with pytest.raises(ValueError, match="bad prefix copy"):
        executor.copy_prefix(src, dst, keep)


def test_a_plan_larger_than_the_batch_is_refused(executor: StepExecutor) -> None:
    plan = StepPlan(decodes=tuple(DecodeToken(k, k % 2, 5, 3) for k in range(3)))
    with pytest.raises(ValueError, match="the batch holds 2"):
        executor.decode(plan, lambda _key: [])


def test_keeping_at_least_what_a_slot_holds_needs_no_native_call(executor: StepExecutor) -> None:
    assert executor.keep_prefix(0, 3) == 3
    assert executor.keep_prefix(1, 0) == 0
