"""When a cached prefix is worth a copy or a restore, from measured costs."""

from __future__ import annotations

import pytest

from server.engine.reuse_cost import ReuseCost
from server.engine.speculation import StepCost

# SmolLM2-135M on 2 cores: a 120-token state is 2.77 MB, saved in 1.2 ms, restored in 0.45 ms;
# a prompt token costs about 4 ms.
STATE_BYTES, STATE_TOKENS, SAVE_S, RESTORE_S, CPU_TOKEN_S = 2_767_012, 120, 0.0012, 0.00045, 0.004


def measured(cells: int = 1024) -> ReuseCost:
    cost = ReuseCost(ceiling=32, cells_per_stream=cells)
    cost.observe_state(STATE_BYTES, STATE_TOKENS, SAVE_S)
    return cost


def test_the_ceiling_until_anything_is_measured() -> None:
    cost = ReuseCost(ceiling=32, cells_per_stream=1024)
    assert cost.min_copy_tokens(CPU_TOKEN_S) == 32
    assert cost.min_restore_tokens(CPU_TOKEN_S) == 32
    assert measured().min_restore_tokens(None) == 32  # no per-token cost yet


def test_on_a_compute_bound_cpu_one_saved_token_pays_for_a_restore() -> None:
    cost = measured()
    assert cost.min_restore_tokens(CPU_TOKEN_S) == 1  # estimated from the save
    cost.observe_restore(RESTORE_S)
    assert cost.min_restore_tokens(CPU_TOKEN_S) == 1


def test_a_copy_moves_a_whole_stream_so_it_costs_more_with_a_longer_context() -> None:
    short, long = measured(cells=1024), measured(cells=8192)
    # 1,024 cells x 23 KB at 2.3 GB/s: ~10 ms, 3 prompt tokens; 8,192 cells: 8x that.
    assert short.min_copy_tokens(CPU_TOKEN_S) == 3
    assert long.min_copy_tokens(CPU_TOKEN_S) == 21
    assert long.min_copy_tokens(CPU_TOKEN_S / 10) == 32  # bounded by the ceiling


def test_where_prompt_tokens_are_nearly_free_only_long_prefixes_are_taken() -> None:
    cost = measured()
    cost.observe_restore(RESTORE_S)
    assert cost.min_restore_tokens(1e-6) == 32
    assert cost.min_copy_tokens(0.0) == 32  # a GPU: extra tokens measured free


@pytest.mark.parametrize("bad", [(0, 10, 0.1), (100, 0, 0.1), (100, 10, 0.0), (-5, 10, 0.1)])
def test_degenerate_measurements_are_ignored(bad: tuple[int, int, float]) -> None:
    cost = ReuseCost(ceiling=32, cells_per_stream=1024)
    cost.observe_state(*bad)
    cost.observe_restore(0.0)
    assert cost.copy_seconds() is None and cost.restore_seconds() is None


def test_step_cost_knows_the_per_token_cost_only_once_step_sizes_vary() -> None:
    steps = StepCost()
    assert steps.per_token_seconds() is None
    for _ in range(10):
        steps.observe(8, 0.041)
    assert steps.per_token_seconds() is None  # every step the same size: no slope
    for n in (1, 2, 4, 8) * 5:
        steps.observe(n, 0.005 + 0.0045 * n)
    assert steps.per_token_seconds() == pytest.approx(0.0045, rel=0.05)
