"""When taking a cached prompt prefix beats recomputing it, from costs measured on this machine.

A prefix can come from another slot (``llama_memory_seq_cp``: with one KV stream per sequence
it copies the whole stream, ``n_ctx`` cells, whatever the prefix length) or from the RAM prompt
cache (``llama_state_seq_set_data``: the entry's bytes). Either is worth it when it costs less
than evaluating the tokens it saves. On a compute-bound CPU a prompt token costs about as much
as a decode token (4 ms for SmolLM2-135M on 2 cores) while a restore moves bytes at memory
speed (0.5 ms for a 120-token state): one saved token pays for it. On a GPU a prompt token
costs almost nothing, and only long prefixes are worth a copy.

:class:`ReuseCost` learns the bytes per KV cell and the copy bandwidth from the engine's own
saves and restores, and turns them, with the step cost's per-token seconds, into the least
gain (in tokens) worth a copy or a restore. Until it has measured both it answers the
configured ceiling, which is also the most it ever answers.
"""

from __future__ import annotations

import math

# Exponential weight of a new measurement; states of one model vary little in cost per byte.
_WEIGHT = 0.2


class ReuseCost:
    """The least prefix gain worth a slot copy or a RAM restore; see the module doc."""

    def __init__(self, ceiling: int, cells_per_stream: int) -> None:
        self.ceiling = max(1, ceiling)
        self._cells = cells_per_stream
        self._bytes_per_cell: float | None = None
        self._state_bytes: float | None = None
        self._bytes_per_s: float | None = None
        self._restore_s: float | None = None

    def observe_state(self, n_bytes: int, n_tokens: int, seconds: float) -> None:
        """A sequence state of ``n_tokens`` took ``n_bytes`` and ``seconds`` to move."""
        if n_bytes <= 0 or n_tokens <= 0 or seconds <= 0:
            return
        self._bytes_per_cell = _mix(self._bytes_per_cell, n_bytes / n_tokens)
        self._state_bytes = _mix(self._state_bytes, float(n_bytes))
        self._bytes_per_s = _mix(self._bytes_per_s, n_bytes / seconds)

    def observe_restore(self, seconds: float) -> None:
        """One RAM restore took ``seconds`` (the state read back, its tail dropped)."""
        if seconds > 0:
            self._restore_s = _mix(self._restore_s, seconds)

    def restore_seconds(self) -> float | None:
        """What a restore is expected to cost: measured, else a saved state's size at the
        rate saves moved it."""
        if self._restore_s is not None:
            return self._restore_s
        if self._state_bytes is None or not self._bytes_per_s:
            return None
        return self._state_bytes / self._bytes_per_s

    def copy_seconds(self) -> float | None:
        """What a slot-to-slot copy is expected to cost: a whole stream at the measured rate."""
        if self._bytes_per_cell is None or not self._bytes_per_s:
            return None
        return self._cells * self._bytes_per_cell / self._bytes_per_s

    def min_copy_tokens(self, per_token_s: float | None) -> int:
        """The least gain worth a copy when a prompt token costs ``per_token_s``."""
        return self._threshold(self.copy_seconds(), per_token_s)

    def min_restore_tokens(self, per_token_s: float | None) -> int:
        """The least gain worth a RAM restore (or a save that makes one possible later)."""
        return self._threshold(self.restore_seconds(), per_token_s)

    def _threshold(self, cost_s: float | None, per_token_s: float | None) -> int:
        if cost_s is None or per_token_s is None or per_token_s <= 0:
            return self.ceiling
        return max(1, min(self.ceiling, math.ceil(cost_s / per_token_s)))


def _mix(old: float | None, new: float) -> float:
    return new if old is None else old + _WEIGHT * (new - old)
