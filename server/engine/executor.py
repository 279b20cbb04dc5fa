"""Carry out a ``StepPlan`` on the llama.cpp context: KV cache edits, one batch, one decode.

The only module besides model loading that makes native calls per step. Everything it passes
is produced by the engine itself (slot ids, positions, lengths) or was range-checked at
submission (token ids), so no request field reaches llama.cpp unchecked.

Prefix copies rely on how the pinned llama.cpp handles sequences with ``kv_unified=False``:
every sequence owns a KV stream, and ``llama_memory_seq_cp`` between two streams only accepts
the whole range (``p0 = p1 = -1``; a partial range trips an assertion that aborts the
process). It resets the destination's cell metadata to a copy of the source's at once and
queues a copy of the stream's buffers, performed at the start of the next ``llama_decode``,
before that batch writes anything. The tail past the shared prefix is then dropped from the
destination with ``llama_memory_seq_rm(dst, keep, -1)``, which edits metadata only.

The RAM prompt cache moves a sequence's state in and out of llama.cpp with
``llama_state_seq_get_data_ext`` / ``llama_state_seq_set_data_ext`` (host memory, no flags).
The blob's sequence id is informational: a state restores into any slot. llama.cpp reports a
state it cannot read (another model's, truncated) as a zero return, never an exception, and
leaves the sequence empty.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from server.engine.planner import DecodeToken, PromptChunk, StepPlan

_STATE_FLAGS = 0  # LLAMA_STATE_SEQ_FLAGS_NONE: the whole state, in host memory


@dataclass(eq=False)
class Slot:
    """One llama.cpp sequence id. ``cached_tokens`` mirrors what its KV cache holds."""

    seq_id: int
    cached_tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    salt: str = ""  # the scope (tenant) of what it holds past any shared prefix
    adapter: str = ""  # the LoRA adapter its KV was computed with ("" = base)


@dataclass(frozen=True)
class DecodeResult:
    """``status`` of ``llama_decode`` and, per sequence key, the batch row to sample from
    (a decode's draft rows follow its row).

    ``score_rows``: per scoring sequence, the batch row of its chunk's first token.
    """

    status: int
    sample_rows: dict[int, int]
    score_rows: dict[int, int] = field(default_factory=dict)


class StepExecutor:
    """Owns the ``llama_batch``; applies KV edits and decodes one planned step."""

    def __init__(self, ctx: int, memory: int, n_batch: int, slots: Sequence[Slot]) -> None:
        self._ctx = ctx
        self._memory = memory
        self._capacity = n_batch
        self._slots = {slot.seq_id: slot for slot in slots}
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def keep_prefix(self, seq_id: int, keep: int) -> int:
        """Drop slot ``seq_id``'s cache past ``keep`` tokens; returns what was really kept."""
        slot = self._slots[seq_id]
        if keep >= len(slot.cached_tokens):
            return len(slot.cached_tokens)
        if not llama_cpp.llama_memory_seq_rm(self._memory, seq_id, keep, -1):
            # A partial removal can be refused; the whole sequence never is.
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
            keep = 0
        del slot.cached_tokens[keep:]
        return keep

    def copy_prefix(self, src: int, dst: int, keep: int) -> None:
        """Make slot ``dst`` hold the first ``keep`` tokens of slot ``src``'s cache."""
        source, target = self._slots[src], self._slots[dst]
        if not 0 < keep <= len(source.cached_tokens) or src == dst:
            raise ValueError(f"bad prefix copy {src}->{dst} keep={keep}")
        llama_cpp.llama_memory_seq_cp(self._memory, src, dst, -1, -1)  # whole stream
        target.cached_tokens = source.cached_tokens[:keep]
        if keep < len(source.cached_tokens):
            llama_cpp.llama_memory_seq_rm(self._memory, dst, keep, -1)

    def save(self, seq_id: int) -> tuple[Any, int] | None:
        """Slot ``seq_id``'s state as (ctypes buffer, size), or None if llama.cpp gave none."""
        size = int(llama_cpp.llama_state_seq_get_size_ext(self._ctx, seq_id, _STATE_FLAGS))
        if size <= 0:
            return None
        buffer = (ctypes.c_uint8 * size)()
        written = int(
            llama_cpp.llama_state_seq_get_data_ext(self._ctx, buffer, size, seq_id, _STATE_FLAGS)
        )
        return (buffer, written) if written == size else None

    def restore(self, seq_id: int, tokens: Sequence[int], data: Any, size: int, keep: int) -> int:
        """Make slot ``seq_id`` hold the first ``keep`` of ``tokens`` from a saved state;
        returns what it holds after (0 when llama.cpp refused the state: the slot is empty)."""
        slot = self._slots[seq_id]
        self.clear(seq_id)
        read = int(
            llama_cpp.llama_state_seq_set_data_ext(self._ctx, data, size, seq_id, _STATE_FLAGS)
        )
        if read != size:
            self.clear(seq_id)
            return 0
        slot.cached_tokens = list(tokens)
        return self.keep_prefix(seq_id, keep)

    def clear(self, seq_id: int) -> None:
        """Forget everything slot ``seq_id`` holds."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)
        self._slots[seq_id].cached_tokens.clear()

    def decode(self, plan: StepPlan, prompt_of: Callable[[int], Sequence[int]]) -> DecodeResult:
        """Fill the batch with the plan's decode tokens and prompt chunks and run it.

        On success each slot's ``cached_tokens`` grows by what was decoded for it.
        """
        batch = self._batch
        rows: dict[int, int] = {}
        score_rows: dict[int, int] = {}
        n = 0
        if plan.n_tokens > self._capacity:
            raise ValueError(f"plan has {plan.n_tokens} tokens, the batch holds {self._capacity}")
        # Rows go in ascending seq_id order. With one KV stream per sequence, llama.cpp splits a
        # batch into micro-batches of sequences with consecutive ids in batch order
        # (``split_equal(sequential=true)``) and runs the whole graph once per micro-batch, so
        # admission order (e.g. seqs 3, 0, 1, 2) would cost two graph runs where one does.
        entries: list[DecodeToken | PromptChunk] = [*plan.decodes, *plan.chunks]
        for item in sorted(entries, key=lambda entry: entry.seq_id):
            if isinstance(item, DecodeToken):
                rows[item.key] = n  # its draft's rows follow: n + 1 ... n + len(draft)
                for offset, token in enumerate((item.token, *item.draft)):
                    _put(batch, n, token, item.pos + offset, item.seq_id, True)
                    n += 1
                continue
            tokens = prompt_of(item.key)
            if item.all_logits:
                score_rows[item.key] = n
            for pos in range(item.start, item.end):
                _put(batch, n, tokens[pos], pos, item.seq_id, item.all_logits)
                n += 1
            if item.completes:
                batch.logits[n - 1] = True
                rows[item.key] = n - 1
        if n == 0:
            return DecodeResult(0, {})
        batch.n_tokens = n
        status = int(llama_cpp.llama_decode(self._ctx, batch))
        if status != 0:
            return DecodeResult(status, {})
        for item in plan.decodes:
            self._slots[item.seq_id].cached_tokens.extend((item.token, *item.draft))
        for chunk in plan.chunks:
            self._slots[chunk.seq_id].cached_tokens.extend(
                prompt_of(chunk.key)[chunk.start : chunk.end]
            )
        return DecodeResult(status, rows, score_rows)

    def close(self) -> None:
        """Free the batch (idempotent)."""
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None


def _put(batch: Any, n: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
    batch.token[n] = token
    batch.pos[n] = pos
    batch.n_seq_id[n] = 1
    batch.seq_id[n][0] = seq_id
    batch.logits[n] = logits
