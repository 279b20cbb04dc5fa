"""Plan one engine step as plain data: admissions, prefix copies, waits, decodes, prompt chunks.

``plan(state) -> StepPlan`` is pure: it reads the slots (what each sequence's KV cache holds)
and the sequences (their named phase, prompt and progress) and decides, without touching
llama.cpp,

- which waiting sequences get which free slot, and how much of that slot's cache they keep;
- which evicted slot states go to the host-RAM prompt cache first (``Save``), and which
  admitted sequences take a longer prefix back from it (``Restore``) instead of prefilling it;
- which prompt prefixes are copied from another slot, idle or busy, instead of recomputed
  (``llama_memory_seq_cp`` of the whole stream, then ``llama_memory_seq_rm`` of the tail);
- which sequences wait one step for an older sequence that is prefilling the same prefix, so a
  burst of requests sharing a long system prompt evaluates it once;
- which choices of an ``n > 1`` request fork from choice 0 once its prompt is evaluated: they
  take its whole KV cache and sample their first token from its logits, so the prompt is
  evaluated once and every choice continues from bit-identical state;
- which sequences decode one token, and which prompt chunks fill the rest of the batch;
- which caches a sequence may reuse at all: past its server-owned ``shared_prefix``, only
  those written under its own ``salt`` (its tenant), so prefix reuse leaks nothing between
  tenants;
- which LoRA adapter the step runs with: a decode applies one adapter set to the whole batch,
  so sequences of different adapters take turns, step by step;
- which speculative drafts are verified: only in the room prompt chunks leave, so
  speculation never delays a prompt.

Fairness: waiting sequences are admitted oldest first, prompt chunks are served oldest
admission first, and a sequence only ever waits for an *older* sequence that is itself making
progress, so no stream of sharing requests can starve another request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

_CHUNK = 64  # common_prefix_length compares this many tokens at a time with C-speed slices


class Phase(Enum):
    """Where a sequence is in its life; the planner and the executor speak only these."""

    WAITING = "waiting"  # queued, no slot yet
    PREFILLING = "prefilling"  # has a slot; prompt not fully in its KV cache
    DECODING = "decoding"  # prompt evaluated; one token per step
    FINISHED = "finished"  # done; its slot (if any) is free


class SlotView(Protocol):
    """What the planner reads about a slot (one llama.cpp sequence id)."""

    @property
    def seq_id(self) -> int: ...

    @property
    def cached_tokens(self) -> Sequence[int]: ...

    @property
    def last_used(self) -> float: ...

    @property
    def salt(self) -> str: ...  # whose content the cache holds past any shared prefix

    @property
    def adapter(self) -> str: ...  # the LoRA adapter its KV was computed with ("" = base)


class SequenceView(Protocol):
    """What the planner reads about one sequence (one request, or one choice of an n > 1 one)."""

    @property
    def key(self) -> int: ...  # unique, and increasing in submission order

    @property
    def phase(self) -> Phase: ...

    @property
    def prompt(self) -> Sequence[int]: ...

    @property
    def prompt_pos(self) -> int: ...  # prompt tokens already in its slot's KV cache

    @property
    def seq_id(self) -> int | None: ...  # its slot, None while WAITING

    @property
    def next_token(self) -> int | None: ...  # DECODING: sampled, not yet in the KV cache

    @property
    def scores_prompt(self) -> bool: ...  # needs every prompt token's logits (prompt logprobs)

    @property
    def fork_of(self) -> int | None: ...  # choices 1..n-1: the key of choice 0

    @property
    def draft(self) -> Sequence[int]: ...  # DECODING: tokens proposed to follow next_token

    @property
    def salt(self) -> str: ...  # its prefix-cache scope (the tenant, unless shared globally)

    @property
    def shared_prefix(self) -> int: ...  # prompt tokens any scope may share (server-owned)

    @property
    def adapter(self) -> str: ...  # its LoRA adapter ("" = the base model)


class CachedView(Protocol):
    """What the planner reads about one entry of the host-RAM prompt cache."""

    @property
    def entry_id(self) -> int: ...

    @property
    def tokens(self) -> Sequence[int]: ...

    @property
    def salt(self) -> str: ...

    @property
    def adapter(self) -> str: ...


@dataclass(frozen=True)
class PlanState:
    """Everything one step's decisions depend on."""

    slots: Sequence[SlotView]
    running: Sequence[SequenceView]  # PREFILLING or DECODING, any order
    waiting: Sequence[SequenceView]  # WAITING, oldest first
    batch_capacity: int  # most tokens one llama_decode may take
    min_copy_tokens: int = 32  # a shorter gain is cheaper to recompute than to copy
    min_restore_tokens: int = 32  # ... than to restore from RAM (and not worth saving)
    score_chunk: int = 64  # most prompt tokens per step for a prompt-scoring sequence
    ram: Sequence[CachedView] = ()  # the host-RAM prompt cache's entries
    keep_evicted: bool = False  # the RAM tier is on: save slot states before dropping them
    previous_adapter: str = ""  # the adapter the last step ran with (steps take turns)


@dataclass(frozen=True)
class Admission:
    """``key`` takes the free slot ``seq_id`` and keeps its first ``keep`` cached tokens."""

    key: int
    seq_id: int
    keep: int


@dataclass(frozen=True)
class Save:
    """Before anything else this step, keep slot ``seq_id``'s state (its first ``length``
    cached tokens, i.e. all of them) in the RAM prompt cache: an admission is about to drop
    tokens no other slot or entry holds."""

    seq_id: int
    length: int


@dataclass(frozen=True)
class Restore:
    """After its admission, slot ``seq_id`` (of ``key``) takes RAM entry ``entry_id``'s state
    and keeps its first ``keep`` tokens: a longer prefix than any slot can give."""

    key: int
    seq_id: int
    entry_id: int
    keep: int


@dataclass(frozen=True)
class PrefixCopy:
    """Copy slot ``src``'s KV into slot ``dst`` (the slot of ``key``), keep ``keep`` tokens."""

    key: int
    src: int
    dst: int
    keep: int


@dataclass(frozen=True)
class Wait:
    """``key`` skips this step: the older ``leader`` is prefilling ``shared`` tokens it needs."""

    key: int
    leader: int
    shared: int


@dataclass(frozen=True)
class Fork:
    """After this step's decode, slot ``dst`` (choice ``key``) takes slot ``src``'s whole cache
    (choice ``leader``'s evaluated prompt) and samples from ``leader``'s logits row."""

    key: int
    leader: int
    src: int
    dst: int


@dataclass(frozen=True)
class DecodeToken:
    """One sampled token of a DECODING sequence goes into the batch (logits wanted), followed
    by the ``draft`` tokens to verify at ``pos + 1 ...`` (logits wanted for each)."""

    key: int
    seq_id: int
    token: int
    pos: int
    draft: tuple[int, ...] = ()


@dataclass(frozen=True)
class PromptChunk:
    """Prompt tokens ``[start, end)`` of ``key``; ``completes``: the last one gets logits.

    ``all_logits``: every token gets logits (prompt scoring).
    """

    key: int
    seq_id: int
    start: int
    end: int
    completes: bool
    all_logits: bool = False


@dataclass(frozen=True)
class StepPlan:
    """One step, in execution order: saves, admissions, restores, copies, one batch of decodes
    and prompt chunks, forks."""

    admissions: tuple[Admission, ...] = ()
    copies: tuple[PrefixCopy, ...] = ()
    waits: tuple[Wait, ...] = ()
    decodes: tuple[DecodeToken, ...] = ()
    chunks: tuple[PromptChunk, ...] = ()
    forks: tuple[Fork, ...] = ()
    saves: tuple[Save, ...] = ()
    restores: tuple[Restore, ...] = ()
    adapter: str = ""  # the LoRA adapter this step's batch runs with ("" = base)

    @property
    def is_empty(self) -> bool:
        """Nothing to do: the engine may sleep until a request arrives."""
        return not (self.admissions or self.copies or self.decodes or self.chunks or self.forks)

    @property
    def n_tokens(self) -> int:
        """Tokens the batch will hold."""
        decoded = sum(1 + len(d.draft) for d in self.decodes)
        return decoded + sum(c.end - c.start for c in self.chunks)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i + _CHUNK <= n and a[i : i + _CHUNK] == b[i : i + _CHUNK]:
        i += _CHUNK
    while i < n and a[i] == b[i]:
        i += 1
    return i


def usable_prefix(prompt: Sequence[int], tokens: Sequence[int]) -> int:
    """How much of ``tokens`` a sequence with ``prompt`` can take over.

    The last prompt token is always left to evaluate: its logits are what the first sample
    needs, and a copied cache holds no logits.
    """
    return min(common_prefix_length(prompt, tokens), max(len(prompt) - 1, 0))


def reusable(seq: SequenceView, tokens: Sequence[int], salt: str, adapter: str) -> int:
    """How much of a cache holding ``tokens`` written under ``salt`` ``seq`` may take over.

    Across scopes only the sequence's server-owned prefix (``shared_prefix``) is shared, so
    one tenant can never learn, from its cached-token count or its latency, what another
    tenant's prompt begins with (the reason vLLM has ``cache_salt``). A cache computed under
    another LoRA adapter holds other numbers: nothing of it is reusable.
    """
    if adapter != seq.adapter:
        return 0
    length = usable_prefix(seq.prompt, tokens)
    return length if salt == seq.salt else min(length, seq.shared_prefix)


@dataclass
class _Cache:
    """The planner's running picture of one slot's KV cache within this step."""

    slot: SlotView
    tokens: Sequence[int]
    length: int
    occupied: bool
    salt: str = ""
    adapter: str = ""
    copy_dst: bool = False  # receives a copy this step: not a source until the next one
    copy_src: bool = False  # serves a copy this step: not a destination until the next one

    def view(self) -> Sequence[int]:
        return self.tokens[: self.length] if self.length < len(self.tokens) else self.tokens


@dataclass
class _Progress:
    """A sequence as this step leaves it."""

    seq: SequenceView
    seq_id: int
    prompt_pos: int


@dataclass
class _Admitted:
    """What admission decided: the admissions, the saves and restores around them, and the
    admitted sequences as this step leaves them."""

    admissions: list[Admission] = field(default_factory=list)
    saves: list[Save] = field(default_factory=list)
    restores: list[Restore] = field(default_factory=list)
    progress: list[_Progress] = field(default_factory=list)


def _held_elsewhere(cache: _Cache, caches: dict[int, _Cache], state: PlanState) -> bool:
    """Whether evicting ``cache`` loses nothing: it is short, or a RAM entry or a busy slot
    (which is not evicted this step) holds all of its tokens."""
    tokens = cache.view()
    n = len(tokens)
    if n < state.min_restore_tokens:
        return True
    holders = [e.tokens for e in state.ram] + [
        c.view() for c in caches.values() if c is not cache and c.occupied
    ]
    return any(len(h) >= n and common_prefix_length(h, tokens) == n for h in holders)


def _best_entry(seq: SequenceView, state: PlanState) -> tuple[int, int]:
    """The RAM entry holding the longest usable prefix of ``seq``'s prompt: (entry_id, length)."""
    best_id, best_len = -1, 0
    for entry in state.ram:
        length = reusable(seq, entry.tokens, entry.salt, entry.adapter)
        if length > best_len:
            best_id, best_len = entry.entry_id, length
    return best_id, best_len


def _admit(state: PlanState, caches: dict[int, _Cache]) -> _Admitted:
    """Give free slots to waiting sequences, oldest first; keep the longest own prefix.

    Among free slots, first the one next to the most busy slots: llama.cpp runs the busy seq
    ids of a step in passes of consecutive ids (``micro_batches``), so a sequence admitted into
    a gap (busy 0 and 1, admitted into 3) costs every step they share an extra pass (+26 % on
    an 8-sequence step of the 2-core CPU), while a prefix held by a slot further away is
    copied from it once (when worth a copy; see ``min_copy_tokens``). Then the one sharing the
    longest prefix; then one whose eviction loses nothing (its tokens are short or held
    elsewhere); then the least recently used. With the RAM tier on, a slot whose tokens would
    be lost is saved first, and a sequence whose prompt a RAM entry holds longer than any slot
    (by ``min_restore_tokens``) restores it.
    """
    out = _Admitted()
    if not state.waiting:
        return out
    # Only free slots can be evicted; this reads every RAM entry, so only when someone waits.
    safe = {
        seq_id: _held_elsewhere(c, caches, state) for seq_id, c in caches.items() if not c.occupied
    }
    for seq in state.waiting:
        free = [c for c in caches.values() if not c.occupied]
        if not free:
            break
        busy = {seq_id for seq_id, c in caches.items() if c.occupied}
        best = max(
            free,
            key=lambda c: (
                (c.slot.seq_id - 1 in busy) + (c.slot.seq_id + 1 in busy),
                reusable(seq, c.view(), c.salt, c.adapter),
                safe[c.slot.seq_id],
                -c.slot.last_used,
            ),
        )
        # A scoring sequence evaluates its whole prompt: cached tokens have no logits.
        keep = 0 if seq.scores_prompt else reusable(seq, best.view(), best.salt, best.adapter)
        if state.keep_evicted and keep < best.length and not safe[best.slot.seq_id]:
            out.saves.append(Save(best.slot.seq_id, best.length))
        best.occupied = True
        best.length = keep
        best.salt, best.adapter = seq.salt, seq.adapter
        out.admissions.append(Admission(seq.key, best.slot.seq_id, keep))
        progress = _Progress(seq, best.slot.seq_id, keep)
        if not seq.scores_prompt:
            entry_id, from_ram = _best_entry(seq, state)
            from_slots = max(
                [keep]
                + [
                    reusable(seq, c.view(), c.salt, c.adapter)
                    for c in caches.values()
                    if c is not best
                ]
            )
            if from_ram - from_slots >= state.min_restore_tokens:
                out.restores.append(Restore(seq.key, best.slot.seq_id, entry_id, from_ram))
                entry = next(e for e in state.ram if e.entry_id == entry_id)
                best.tokens, best.length, best.copy_dst = entry.tokens, from_ram, True
                progress.prompt_pos = from_ram
        out.progress.append(progress)
    return out


def _best_source(seq: SequenceView, own: int, caches: dict[int, _Cache]) -> tuple[int, int]:
    """The other slot holding the longest usable prefix of ``seq``'s prompt: (seq_id, length)."""
    best_id, best_len = -1, 0
    for cache in caches.values():
        if cache.slot.seq_id == own or cache.copy_dst:
            continue
        length = reusable(seq, cache.view(), cache.salt, cache.adapter)
        if length > best_len:
            best_id, best_len = cache.slot.seq_id, length
    return best_id, best_len


def _leader(me: _Progress, prefilling: Sequence[_Progress]) -> tuple[int, int]:
    """The older prefilling sequence that will compute the most of my prompt: (key, shared).

    Only older sequences count, so waits always point backwards: the oldest prefilling sequence
    never waits, and every wait ends.
    """
    best_key, best_shared = -1, 0
    for other in prefilling:
        if other.seq.key >= me.seq.key:
            continue
        shared = reusable(me.seq, other.seq.prompt, other.seq.salt, other.seq.adapter)
        if shared > best_shared:
            best_key, best_shared = other.seq.key, shared
    return best_key, best_shared


def _step_adapter(with_work: Sequence[str], previous: str) -> str:
    """The adapter whose sequences run this step: the next one after ``previous`` (in name
    order, cyclically) among those with work, so adapters take turns and none starves."""
    groups = sorted(set(with_work))
    if not groups:
        return previous
    return next((g for g in groups if g > previous), groups[0])


def _with_drafts(
    decodes: list[DecodeToken], running: Sequence[SequenceView], room: int
) -> list[DecodeToken]:
    """Give each decode its sequence's draft, oldest first, while the batch has room."""
    drafts = {seq.key: seq.draft for seq in running if seq.draft}
    if not drafts or room <= 0:
        return decodes
    out: list[DecodeToken] = []
    for decode in sorted(decodes, key=lambda d: d.key):
        draft = tuple(drafts.get(decode.key, ())[: max(room, 0)])
        room -= len(draft)
        out.append(replace(decode, draft=draft) if draft else decode)
    return out


def plan(state: PlanState) -> StepPlan:
    """Decide one step. Pure: the same state always gives the same plan."""
    caches = {
        slot.seq_id: _Cache(
            slot,
            slot.cached_tokens,
            len(slot.cached_tokens),
            occupied=False,
            salt=slot.salt,
            adapter=slot.adapter,
        )
        for slot in state.slots
    }
    for seq in state.running:
        if seq.seq_id is not None:
            caches[seq.seq_id].occupied = True
    admitted = _admit(state, caches)

    decodes: list[DecodeToken] = []
    prefilling: list[_Progress] = []
    for seq in state.running:
        assert seq.seq_id is not None
        if seq.phase is Phase.DECODING and seq.next_token is not None:
            pos = caches[seq.seq_id].length
            decodes.append(DecodeToken(seq.key, seq.seq_id, seq.next_token, pos))
        elif seq.phase is Phase.PREFILLING:
            prefilling.append(_Progress(seq, seq.seq_id, seq.prompt_pos))
    prefilling.extend(admitted.progress)
    prefilling.sort(key=lambda p: p.seq.key)  # oldest first: fairness for copies and chunks
    # One LoRA adapter set per decode (it applies to the whole context): sequences of other
    # adapters wait for their turn, which comes at the next step.
    adapter_of = {seq.key: seq.adapter for seq in state.running}
    active = _step_adapter(
        [adapter_of[d.key] for d in decodes] + [p.seq.adapter for p in prefilling],
        state.previous_adapter,
    )
    decodes = [d for d in decodes if adapter_of[d.key] == active]
    prefilling = [p for p in prefilling if p.seq.adapter == active]

    copies: list[PrefixCopy] = []
    waits: list[Wait] = []
    ready: list[_Progress] = []
    forking: list[_Progress] = []
    leaders = {p.seq.key: p for p in prefilling}
    for progress in prefilling:
        seq, own = progress.seq, progress.seq_id
        if seq.scores_prompt:  # no copies, no waiting: every prompt token must be evaluated
            ready.append(progress)
            continue
        if seq.fork_of is not None and seq.fork_of in leaders:
            forking.append(progress)  # decided once the leader's chunk is known
            continue
        src, available = _best_source(seq, own, caches)
        leader, shared = _leader(progress, prefilling)
        gain_now = available - progress.prompt_pos
        if shared > available and shared - progress.prompt_pos >= state.min_copy_tokens:
            waits.append(Wait(seq.key, leader, shared))
            continue
        if gain_now >= state.min_copy_tokens:
            if caches[own].copy_src:  # its old cache feeds another copy first; copy next step
                continue
            copies.append(PrefixCopy(seq.key, src, own, available))
            caches[src].copy_src = True
            dst = caches[own]
            dst.tokens, dst.length, dst.copy_dst = caches[src].view(), available, True
            dst.salt, dst.adapter = seq.salt, seq.adapter
            progress.prompt_pos = available
        ready.append(progress)

    chunks: list[PromptChunk] = []
    room = state.batch_capacity - len(decodes)
    for progress in ready:
        if room <= 0:
            break
        prompt = progress.seq.prompt
        scores = progress.seq.scores_prompt
        # Scoring materializes logits for every token: a bounded chunk bounds that memory.
        end = min(
            len(prompt), progress.prompt_pos + (min(room, state.score_chunk) if scores else room)
        )
        if end <= progress.prompt_pos:
            continue
        chunks.append(
            PromptChunk(
                progress.seq.key,
                progress.seq_id,
                progress.prompt_pos,
                end,
                end == len(prompt),
                all_logits=scores,
            )
        )
        room -= end - progress.prompt_pos
    decodes = _with_drafts(decodes, state.running, room)
    completing = {c.key: c.seq_id for c in chunks if c.completes}
    forks: list[Fork] = []
    for progress in forking:
        first = progress.seq.fork_of
        assert first is not None
        if first in completing:
            forks.append(Fork(progress.seq.key, first, completing[first], progress.seq_id))
        else:
            waits.append(Wait(progress.seq.key, first, len(progress.seq.prompt)))
    return StepPlan(
        tuple(admitted.admissions),
        tuple(copies),
        tuple(waits),
        tuple(decodes),
        tuple(chunks),
        tuple(forks),
        tuple(admitted.saves),
        tuple(admitted.restores),
        active,
    )
