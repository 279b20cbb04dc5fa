"""The executor refuses plans that would hand llama.cpp an impossible copy or an overfull batch.

These checks run before any call into the context, so a fake context handle is never touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llama_cpp
import pytest

from server.engine.executor import Slot, StepExecutor
from server.engine.planner import DecodeToken, PromptChunk, StepPlan


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


def test_batch_rows_go_in_seq_id_order_so_llama_cpp_runs_one_micro_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With one KV stream per sequence llama.cpp groups a batch into micro-batches of
    # consecutive seq ids in batch order: admission order (3, 0, 2, then 1's prompt) would
    # cost three graph runs. The rows must come sorted, and each key must still find its row.
    slots = [Slot(seq_id) for seq_id in range(4)]
    ex = StepExecutor(ctx=0, memory=0, n_batch=8, slots=slots)
    seen: list[tuple[int, int, bool]] = []

    def fake_decode(_ctx: int, batch: object) -> int:
        b: Any = batch
        seen.extend((b.seq_id[i][0], b.pos[i], bool(b.logits[i])) for i in range(b.n_tokens))
        return 0

    monkeypatch.setattr(llama_cpp, "llama_decode", fake_decode)
    plan = StepPlan(
        decodes=(DecodeToken(30, 3, 7, 10), DecodeToken(0, 0, 7, 20), DecodeToken(20, 2, 7, 5)),
        chunks=(PromptChunk(10, 1, 0, 3, completes=True),),
    )
    try:
        result = ex.decode(plan, lambda _key: [4, 5, 6])
    finally:
        ex.close()
    assert [seq for seq, _, _ in seen] == [0, 1, 1, 1, 2, 3]
    assert [pos for _, pos, _ in seen] == [20, 0, 1, 2, 5, 10]
    assert [logits for _, _, logits in seen] == [True, False, False, True, True, True]
    assert result.sample_rows == {0: 0, 10: 3, 20: 4, 30: 5}
    assert slots[1].cached_tokens == [4, 5, 6] and slots[3].cached_tokens == [7]
