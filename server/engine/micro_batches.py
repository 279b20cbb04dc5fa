"""How many graph runs llama.cpp makes for one of our batches.

With one KV stream per sequence (``kv_unified=False``, how the engine creates its context), the
pinned llama.cpp splits a batch with ``split_equal(sequential=true)``
(``src/llama-batch.cpp``). Each micro-batch takes the next sequences whose ids are consecutive
in batch order and the same number of tokens from each, as many as every one of them still has;
every micro-batch is a full pass over the model's weights. So one token from each of seqs 0..7
is one pass, while the same step with 3 draft tokens on seq 5 is two ({0..7} × 1, then
{5} × 3), and seqs 0, 1, 3 (an idle slot between) are two as well.

On the 2-core CPU (SmolLM2 Q4_1, ``python -m bench pass_costs``) 8 sequences take 37.1 ms in
one pass and 46.6 ms split by a gap into two, so the engine counts passes when it decides what
a draft costs, and the planner keeps busy slots adjacent.
"""

from __future__ import annotations

from collections.abc import Iterable


def graph_passes(rows: Iterable[tuple[int, int]], n_ubatch: int = 512) -> int:
    """The micro-batches llama.cpp runs for a batch of ``(seq_id, n_tokens)`` entries written
    in ascending ``seq_id`` order (the executor's order); a seq listed twice is merged."""
    remaining: dict[int, int] = {}
    for seq_id, n_tokens in rows:
        if n_tokens > 0:
            remaining[seq_id] = remaining.get(seq_id, 0) + n_tokens
    order = sorted(remaining)
    passes = 0
    while remaining:
        run: list[int] = []
        for seq_id in order:
            if seq_id not in remaining:
                continue
            if run and seq_id != run[-1] + 1:
                continue  # llama.cpp takes only the seq after the last one taken
            run.append(seq_id)
            if len(run) > n_ubatch:
                break
        # Grow every sequence of the run by the same count while all have tokens and the
        # micro-batch stays within n_ubatch (llama.cpp takes at least one token from each).
        take = max(1, min(min(remaining[s] for s in run), n_ubatch // len(run)))
        for seq_id in run:
            left = remaining[seq_id] - take
            if left > 0:
                remaining[seq_id] = left
            else:
                del remaining[seq_id]
        passes += 1
    return passes
