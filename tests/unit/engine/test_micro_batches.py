"""How many passes llama.cpp's split_equal(sequential=true) makes of the executor's batches."""

from __future__ import annotations

import random

import pytest

from server.engine.micro_batches import graph_passes


def split_equal_passes(seq_of_row: list[int], n_ubatch: int) -> int:
    """The definition: ``llama_batch_allocr::split_equal`` of the pinned llama.cpp, token by
    token (one seq id per row, as the executor writes them)."""
    used = [False] * len(seq_of_row)
    rows_of: dict[int, list[int]] = {}
    for i, seq_id in enumerate(seq_of_row):
        rows_of.setdefault(seq_id, []).append(i)
    passes = 0
    while not all(used):
        chosen: list[int] = []
        for i, seq_id in enumerate(seq_of_row):
            if used[i] or seq_id in chosen:
                continue
            if chosen and seq_id != chosen[-1] + 1:
                continue
            chosen.append(seq_id)
            if len(chosen) > n_ubatch:
                break
        cursor = {s: 0 for s in chosen}
        for s in chosen:
            while used[rows_of[s][cursor[s]]]:
                cursor[s] += 1
        taken = 0
        while all(cursor[s] < len(rows_of[s]) for s in chosen):
            for s in chosen:
                used[rows_of[s][cursor[s]]] = True
                cursor[s] += 1
            taken += 1
            if (taken + 1) * len(chosen) > n_ubatch:
                break
        passes += 1
    return passes


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], 0),
        ([(0, 1)], 1),
        ([(0, 9)], 1),  # one sequence: a draft rides in its token's pass
        ([(s, 1) for s in range(8)], 1),  # 8 decoding sequences: one pass
        ([(s, 4) for s in range(8)], 1),  # equal drafts everywhere: still one
        ([(0, 1), (1, 1), (2, 4), (3, 1)], 2),  # a draft beside others: {0..3} x 1, {2} x 3
        ([(0, 1), (1, 4), (2, 4), (3, 1)], 2),  # equal drafts on neighbours share the pass
        ([(0, 1), (1, 4), (2, 1), (3, 4)], 3),  # drafts apart: one pass each
        ([(0, 1), (1, 1), (3, 1)], 2),  # an idle slot between busy ones
        ([(0, 1), (1, 15), (2, 12)], 3),  # {0,1,2} x 1, {1,2} x 11, {1} x 3
        ([(3, 1), (0, 1), (2, 1), (1, 1)], 1),  # written in ascending order by the executor
        ([(0, 0), (1, 1)], 1),  # empty entries are no rows
        ([(2, 1), (2, 3)], 1),  # a seq listed twice is one sequence of 4 tokens
    ],
)
def test_passes_of_typical_steps(rows: list[tuple[int, int]], expected: int) -> None:
    assert graph_passes(rows) == expected


def test_a_long_prompt_is_cut_at_the_micro_batch_size() -> None:
    assert graph_passes([(0, 1000)], n_ubatch=512) == 2  # 512, then 488
    assert graph_passes([(0, 300), (1, 300)], n_ubatch=512) == 2  # 2 x 256, then 2 x 44
    assert graph_passes([(0, 1), (1, 300), (2, 300)], n_ubatch=64) == 11  # 3 x 1, then 2 x 32 ...
    assert split_equal_passes([0] + [1] * 300 + [2] * 300, 64) == 11


def test_passes_match_llama_cpp_split_equal_on_random_batches() -> None:
    rng = random.Random(7)
    for _ in range(500):
        n_seqs = rng.randint(1, 12)
        seq_ids = sorted(rng.sample(range(16), n_seqs))
        rows = [(s, rng.choice((1, 1, 1, 2, 3, 5, rng.randint(1, 70)))) for s in seq_ids]
        n_ubatch = rng.choice((8, 32, 512))
        flat = [s for s, n in rows for _ in range(n)]
        assert graph_passes(rows, n_ubatch) == split_equal_passes(flat, n_ubatch), (rows, n_ubatch)
