"""The step planner, without a model: admissions, prefix sharing, waits, batches, fairness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from server.engine.planner import (
    Admission,
    DecodeToken,
    Phase,
    PlanState,
    PrefixCopy,
    PromptChunk,
    StepPlan,
    Wait,
    common_prefix_length,
    plan,
)

SYSTEM = list(range(1000, 1200))  # a 200-token shared system prompt


@dataclass
class FakeSlot:
    seq_id: int
    cached_tokens: list[int] = field(default_factory=list)
    last_used: float = 0.0
    salt: str = ""
    adapter: str = ""


@dataclass
class FakeSeq:
    key: int
    prompt: list[int]
    phase: Phase = Phase.WAITING
    prompt_pos: int = 0
    seq_id: int | None = None
    next_token: int | None = None
    scores_prompt: bool = False
    fork_of: int | None = None
    draft: tuple[int, ...] = ()
    salt: str = ""
    shared_prefix: int = 0
    adapter: str = ""


def state(
    slots: Sequence[FakeSlot],
    running: Sequence[FakeSeq] = (),
    waiting: Sequence[FakeSeq] = (),
    capacity: int = 512,
    min_copy: int = 32,
) -> PlanState:
    return PlanState(slots, running, waiting, capacity, min_copy)


def question(i: int, length: int = 10) -> list[int]:
    return [50_000 + 100 * i + j for j in range(length)]


def apply(step: StepPlan, slots: list[FakeSlot], seqs: dict[int, FakeSeq]) -> None:
    """What the executor does to the state, so multi-step scenarios can be played out."""
    by_id = {s.seq_id: s for s in slots}
    for a in step.admissions:
        seq = seqs[a.key]
        del by_id[a.seq_id].cached_tokens[a.keep :]
        seq.phase, seq.seq_id, seq.prompt_pos = Phase.PREFILLING, a.seq_id, a.keep
    for c in step.copies:
        by_id[c.dst].cached_tokens = by_id[c.src].cached_tokens[: c.keep]
        seqs[c.key].prompt_pos = c.keep
    for d in step.decodes:
        by_id[d.seq_id].cached_tokens.append(d.token)
        seqs[d.key].next_token = 7
    for ch in step.chunks:
        seq = seqs[ch.key]
        by_id[ch.seq_id].cached_tokens.extend(seq.prompt[ch.start : ch.end])
        seq.prompt_pos = ch.end
        if ch.completes:
            seq.phase, seq.next_token = Phase.DECODING, 7
    for f in step.forks:
        by_id[f.dst].cached_tokens = list(by_id[f.src].cached_tokens)
        seq = seqs[f.key]
        seq.prompt_pos, seq.phase, seq.next_token = len(seq.prompt), Phase.DECODING, 7


def play(
    slots: list[FakeSlot], seqs: list[FakeSeq], capacity: int = 512, steps: int = 50
) -> list[StepPlan]:
    """Run the planner until every sequence decodes; returns the plans."""
    table = {s.key: s for s in seqs}
    plans = []
    for _ in range(steps):
        running = [s for s in seqs if s.phase in (Phase.PREFILLING, Phase.DECODING)]
        waiting = [s for s in seqs if s.phase is Phase.WAITING]
        step = plan(state(slots, running, waiting, capacity))
        plans.append(step)
        apply(step, slots, table)
        if all(s.phase is Phase.DECODING for s in seqs):
            return plans
    raise AssertionError("the sequences never all reached DECODING")


def test_common_prefix_length_across_chunk_boundaries() -> None:
    long = list(range(300))
    assert common_prefix_length(long, [*long[:130], -1]) == 130
    assert common_prefix_length(long, long) == 300
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0


def test_waiting_request_takes_the_free_slot_with_its_longest_prefix() -> None:
    slots = [FakeSlot(0, [9, 9]), FakeSlot(1, [*SYSTEM, 5, 5]), FakeSlot(2, [])]
    seq = FakeSeq(0, SYSTEM + question(0))
    step = plan(state(slots, waiting=[seq]))
    assert step.admissions == (Admission(0, 1, len(SYSTEM)),)
    assert step.copies == ()
    assert step.chunks == (PromptChunk(0, 1, len(SYSTEM), len(seq.prompt), True),)


def test_the_last_prompt_token_is_always_evaluated_even_when_fully_cached() -> None:
    prompt = SYSTEM + question(0)
    step = plan(state([FakeSlot(0, [*prompt, 1, 2])], waiting=[FakeSeq(0, prompt)]))
    assert step.admissions == (Admission(0, 0, len(prompt) - 1),)
    assert step.chunks == (PromptChunk(0, 0, len(prompt) - 1, len(prompt), True),)


def test_idle_cache_evicted_first_is_the_least_recently_used() -> None:
    slots = [FakeSlot(0, [1], last_used=5.0), FakeSlot(1, [2], last_used=1.0), FakeSlot(2, [3], 9)]
    step = plan(state(slots, waiting=[FakeSeq(0, question(0))]))
    assert step.admissions == (Admission(0, 1, 0),)


def test_prefix_in_a_busy_slot_is_copied_not_recomputed() -> None:
    slots = [FakeSlot(0, SYSTEM + question(0) + [7, 7]), FakeSlot(1, [])]
    busy = FakeSeq(0, SYSTEM + question(0), Phase.DECODING, 210, 0, next_token=8)
    new = FakeSeq(1, SYSTEM + question(1))
    step = plan(state(slots, running=[busy], waiting=[new]))
    assert step.admissions == (Admission(1, 1, 0),)
    assert step.copies == (PrefixCopy(1, src=0, dst=1, keep=len(SYSTEM)),)
    assert step.decodes == (DecodeToken(0, 0, 8, len(slots[0].cached_tokens)),)
    assert step.chunks == (PromptChunk(1, 1, len(SYSTEM), len(new.prompt), True),)


def test_prefix_in_another_idle_slot_is_copied_when_own_slot_is_taken() -> None:
    # slot 1 is busy with an unrelated request; slot 2 holds the prefix and is idle but a
    # request that also wants slot 2 arrived first; the later one copies from slot 2.
    slots = [FakeSlot(0, []), FakeSlot(1, [5] * 50), FakeSlot(2, SYSTEM, last_used=3.0)]
    unrelated = FakeSeq(0, [5] * 50 + [6], Phase.DECODING, 51, 1, next_token=1)
    first, second = FakeSeq(1, SYSTEM + question(1)), FakeSeq(2, SYSTEM + question(2))
    step = plan(state(slots, running=[unrelated], waiting=[first, second]))
    assert step.admissions == (Admission(1, 2, len(SYSTEM)), Admission(2, 0, 0))
    assert step.copies == (PrefixCopy(2, src=2, dst=0, keep=len(SYSTEM)),)


def test_a_slot_next_to_busy_ones_wins_and_copies_the_prefix_from_further_away() -> None:
    # Busy seqs 0 and 1: a sequence in slot 5 would make every shared step two passes over the
    # weights ({0, 1}, then {5}); slot 2 keeps them one, and the prefix is copied once.
    slots = [FakeSlot(0, [5] * 50), FakeSlot(1, [6] * 50), FakeSlot(2, [7] * 80)]
    slots += [FakeSlot(i, []) for i in (3, 4)] + [FakeSlot(5, SYSTEM)]
    busy = [
        FakeSeq(0, [5] * 50 + [1], Phase.DECODING, 51, 0, next_token=1),
        FakeSeq(1, [6] * 50 + [1], Phase.DECODING, 51, 1, next_token=1),
    ]
    step = plan(state(slots, running=busy, waiting=[FakeSeq(2, SYSTEM + question(1))]))
    assert step.admissions == (Admission(2, 2, 0),)
    assert step.copies == (PrefixCopy(2, src=5, dst=2, keep=len(SYSTEM)),)


def test_a_slot_between_two_busy_runs_joins_them() -> None:
    slots = [FakeSlot(i, []) for i in range(5)]
    busy = [
        FakeSeq(k, [9, k], Phase.DECODING, 2, seq_id, next_token=1)
        for k, seq_id in ((0, 1), (1, 3))
    ]
    step = plan(state(slots, running=busy, waiting=[FakeSeq(2, [1, 2, 3])]))
    assert step.admissions == (Admission(2, 2, 0),)  # 0 and 4 touch one busy slot, 2 touches two


def test_short_shared_prefix_is_recomputed_rather_than_copied() -> None:
    preamble = list(range(10))
    slots = [FakeSlot(0, [*preamble, 1, 2]), FakeSlot(1, [])]
    busy = FakeSeq(0, [*preamble, 1], Phase.DECODING, 11, 0, next_token=2)
    step = plan(state(slots, running=[busy], waiting=[FakeSeq(1, [*preamble, 3, 4])]))
    assert step.copies == ()
    assert step.chunks[-1] == PromptChunk(1, 1, 0, 12, True)


def test_burst_sharing_a_prefix_no_slot_holds_prefills_it_once() -> None:
    slots = [FakeSlot(i) for i in range(4)]
    seqs = [FakeSeq(i, SYSTEM + question(i)) for i in range(4)]
    plans = play(slots, seqs)

    first = plans[0]
    assert [a.key for a in first.admissions] == [0, 1, 2, 3]
    assert first.chunks == (PromptChunk(0, first.admissions[0].seq_id, 0, 210, True),)
    assert {w.key: (w.leader, w.shared) for w in first.waits} == {
        k: (0, len(SYSTEM)) for k in (1, 2, 3)
    }
    copies = [c for p in plans for c in p.copies]
    assert sorted(c.key for c in copies) == [1, 2, 3]
    assert all(c.keep == len(SYSTEM) for c in copies)
    evaluated = sum(c.end - c.start for p in plans for c in p.chunks)
    assert evaluated == len(SYSTEM) + 4 * 10  # the system prompt once, each question once


def test_request_waits_for_a_prefix_still_being_prefilled_then_copies_it() -> None:
    system = list(range(1000, 1700))  # longer than one batch: the leader needs two steps
    slots = [FakeSlot(0), FakeSlot(1)]
    seqs = [FakeSeq(0, system + question(0)), FakeSeq(1, system + question(1))]
    plans = play(slots, seqs, capacity=512)
    assert plans[0].waits == (Wait(1, 0, len(system)),)
    assert plans[1].waits == (Wait(1, 0, len(system)),)  # leader is at 512 of 700
    assert plans[2].copies == (PrefixCopy(1, src=plans[0].admissions[0].seq_id, dst=1, keep=700),)
    assert sum(c.end - c.start for p in plans for c in p.chunks) == 700 + 20


def test_cancelled_leader_leaves_its_partial_prefix_to_the_waiter() -> None:
    system = list(range(1000, 1700))
    slots = [FakeSlot(0, system[:512], last_used=1.0), FakeSlot(1)]
    waiter = FakeSeq(1, system + question(1), Phase.PREFILLING, 0, 1)
    # the leader (key 0) was cancelled: slot 0 is idle and holds 512 of the 700 shared tokens
    step = plan(state(slots, running=[waiter]))
    assert step.waits == ()
    assert step.copies == (PrefixCopy(1, src=0, dst=1, keep=512),)
    assert step.chunks == (PromptChunk(1, 1, 512, 710, True),)


def test_n_greater_than_1_forks_the_first_choice_after_one_prefill() -> None:
    prompt = SYSTEM + question(0)
    slots = [FakeSlot(i) for i in range(3)]
    choices = [FakeSeq(0, list(prompt))] + [
        FakeSeq(k, list(prompt), fork_of=0) for k in (1, 2)
    ]  # the engine queues n choices; 1..n-1 name choice 0
    plans = play(slots, choices)
    leader_slot = plans[0].admissions[0].seq_id
    # choice 0's prompt completes in the first step: the forks take its cache right after the
    # decode and sample from its logits, so nothing but the prompt is ever evaluated
    assert plans[0].chunks == (PromptChunk(0, leader_slot, 0, len(prompt), True),)
    assert [(f.key, f.leader, f.src) for f in plans[0].forks] == [
        (1, 0, leader_slot),
        (2, 0, leader_slot),
    ]
    assert len(plans) == 1
    assert sum(c.end - c.start for p in plans for c in p.chunks) == len(prompt)


def test_forks_wait_while_their_first_choice_needs_several_chunks() -> None:
    prompt = list(range(1000, 1700))
    slots = [FakeSlot(0), FakeSlot(1)]
    choices = [FakeSeq(0, prompt), FakeSeq(1, list(prompt), fork_of=0)]
    plans = play(slots, choices, capacity=512)
    assert plans[0].waits == (Wait(1, 0, 700),) and plans[0].forks == ()
    assert [(f.key, f.dst) for f in plans[1].forks] == [(1, 1)]


def test_a_fork_admitted_after_its_first_choice_decodes_copies_like_any_request() -> None:
    prompt = SYSTEM + question(0)
    slots = [FakeSlot(0, [*prompt, 4]), FakeSlot(1)]
    first = FakeSeq(0, prompt, Phase.DECODING, len(prompt), 0, next_token=5)
    late = FakeSeq(1, list(prompt), fork_of=0)
    step = plan(state(slots, running=[first], waiting=[late]))
    assert step.forks == ()
    assert step.copies == (PrefixCopy(1, 0, 1, len(prompt) - 1),)


def test_a_request_never_waits_for_a_younger_one() -> None:
    slots = [FakeSlot(0), FakeSlot(1)]
    old = FakeSeq(0, SYSTEM + question(0), Phase.PREFILLING, 0, 0)
    young = FakeSeq(1, SYSTEM + question(1), Phase.PREFILLING, 0, 1)
    step = plan(state(slots, running=[young, old]))
    assert [w.key for w in step.waits] == [1]
    assert [c.key for c in step.chunks] == [0]


def test_admission_is_fifo_so_sharing_requests_cannot_starve_an_unrelated_one() -> None:
    slots = [FakeSlot(0, [*SYSTEM, 1]), FakeSlot(1)]
    running = [FakeSeq(0, SYSTEM + question(0), Phase.DECODING, 210, 0, next_token=3)]
    lonely = FakeSeq(1, question(9, 40))
    sharers = [FakeSeq(k, SYSTEM + question(k)) for k in range(2, 6)]
    step = plan(state(slots, running=running, waiting=[lonely, *sharers]))
    assert step.admissions == (Admission(1, 1, 0),)


def test_prompt_chunks_go_to_the_oldest_admission_first_within_the_batch() -> None:
    slots = [FakeSlot(i) for i in range(3)]
    decoding = FakeSeq(0, [1, 2], Phase.DECODING, 2, 0, next_token=5)
    old = FakeSeq(1, question(1, 300), Phase.PREFILLING, 0, 1)
    young = FakeSeq(2, question(2, 300), Phase.PREFILLING, 0, 2)
    step = plan(state(slots, running=[young, decoding, old], capacity=400))
    assert step.decodes == (DecodeToken(0, 0, 5, 0),)
    assert step.chunks == (PromptChunk(1, 1, 0, 300, True), PromptChunk(2, 2, 0, 99, False))
    assert step.n_tokens == 400


def test_a_slot_serving_a_copy_does_not_receive_one_in_the_same_step() -> None:
    x, y = SYSTEM[:150], SYSTEM[150:]
    slots = [FakeSlot(0, list(x)), FakeSlot(1), FakeSlot(2, x + y + [1, 1])]
    busy = FakeSeq(0, x + y + [1], Phase.DECODING, 201, 2, next_token=1)
    one = FakeSeq(1, x + question(1), Phase.PREFILLING, 0, 1)
    two = FakeSeq(2, x + y + question(2), Phase.PREFILLING, 150, 0)  # owns slot 0
    step = plan(state(slots, running=[busy, one, two]))
    # request 1 copies slot 0 (request 2's own); request 2's better copy from slot 2 waits a
    # step, so the copies can never be applied in an order that changes what they read.
    assert step.copies == (PrefixCopy(1, 0, 1, 150),)
    assert [c.key for c in step.chunks] == [1]


def test_nothing_to_do_is_an_empty_plan() -> None:
    step = plan(state([FakeSlot(0, [1, 2, 3])]))
    assert step == StepPlan()
    assert step.n_tokens == 0


@pytest.mark.parametrize("n_slots", [1, 2, 8])
def test_every_planned_batch_fits_and_each_slot_is_used_once(n_slots: int) -> None:
    slots = [FakeSlot(i) for i in range(n_slots)]
    seqs = [FakeSeq(i, SYSTEM + question(i, 5 + i)) for i in range(n_slots)]
    for step in play(slots, seqs, capacity=64, steps=200):
        assert step.n_tokens <= 64
        ids = [d.seq_id for d in step.decodes] + [c.seq_id for c in step.chunks]
        assert len(ids) == len(set(ids))


def test_a_prompt_scoring_sequence_evaluates_every_token_in_bounded_chunks() -> None:
    shared = question(1, 200)
    # Slot 0 caches the whole prompt (idle); slot 1 is busy prefilling the same prompt.
    slots = [FakeSlot(0, list(shared)), FakeSlot(1, list(shared[:150]))]
    busy = FakeSeq(1, shared, Phase.PREFILLING, prompt_pos=150, seq_id=1)
    scorer = FakeSeq(2, list(shared), scores_prompt=True)
    seqs = {1: busy, 2: scorer}
    step = plan(PlanState(slots, [busy], [scorer], 512, 32, score_chunk=64))
    assert [(a.key, a.keep) for a in step.admissions] == [(2, 0)]  # no cached prefix
    assert not step.copies and not step.waits
    (chunk,) = [c for c in step.chunks if c.key == 2]
    assert (chunk.start, chunk.end, chunk.all_logits) == (0, 64, True)
    spans = []
    while scorer.prompt_pos < len(shared):
        apply(step, slots, seqs)
        spans += [(c.start, c.end) for c in step.chunks if c.key == 2]
        busy.phase = Phase.FINISHED
        step = plan(PlanState(slots, [scorer], [], 512, 32, score_chunk=64))
    assert spans == [(0, 64), (64, 128), (128, 192), (192, 200)]


def decoding(key: int, seq_id: int, draft: tuple[int, ...] = ()) -> FakeSeq:
    return FakeSeq(key, question(key), Phase.DECODING, 10, seq_id, next_token=5, draft=draft)


def test_a_draft_follows_its_decode_token_in_the_batch() -> None:
    slots = [FakeSlot(0, question(0)), FakeSlot(1, question(1))]
    step = plan(state(slots, running=[decoding(0, 0, (8, 9, 10)), decoding(1, 1)]))
    by_key = {d.key: d for d in step.decodes}
    assert by_key[0].draft == (8, 9, 10) and by_key[0].pos == 10
    assert by_key[1].draft == ()
    assert step.n_tokens == 2 + 3


def test_prompt_chunks_take_the_room_before_drafts() -> None:
    """Speculation never delays a prompt: drafts get only what the chunks leave."""
    slots = [FakeSlot(0, question(0)), FakeSlot(1), FakeSlot(2, question(2))]
    newcomer = FakeSeq(9, question(9, length=60))
    running = [decoding(0, 0, tuple(range(8))), decoding(2, 2, tuple(range(8)))]
    step = plan(state(slots, running=running, waiting=[newcomer], capacity=66))
    assert [c.key for c in step.chunks] == [9]
    assert step.chunks[0].end == 60
    drafts = {d.key: d.draft for d in step.decodes}
    assert drafts == {0: (0, 1, 2, 3), 2: ()}  # 66 - 2 decodes - 60 prompt tokens = 4
    assert step.n_tokens == 66


def test_no_room_no_drafts() -> None:
    slots = [FakeSlot(0, question(0)), FakeSlot(1)]
    newcomer = FakeSeq(9, question(9, length=200))
    step = plan(state(slots, running=[decoding(0, 0, (1, 2))], waiting=[newcomer], capacity=64))
    assert step.decodes[0].draft == ()
    assert step.n_tokens == 64


# --- tenants: prefix reuse never crosses scopes past the server-owned prefix --------------


def test_another_tenants_cached_prompt_is_not_reused() -> None:
    secret = SYSTEM + question(1)
    slots = [FakeSlot(0, [*secret, 9, 9], salt="key-a"), FakeSlot(1)]
    probe = FakeSeq(5, secret + question(2), salt="key-b")
    step = plan(state(slots, waiting=[probe]))
    assert step.admissions[0].keep == 0
    assert step.copies == ()


def test_the_server_owned_prefix_is_shared_across_tenants() -> None:
    slots = [FakeSlot(0, SYSTEM + question(1), salt="key-a"), FakeSlot(1)]
    seq = FakeSeq(5, SYSTEM + question(2), salt="key-b", shared_prefix=len(SYSTEM))
    step = plan(state(slots, waiting=[seq]))
    kept = step.admissions[0].keep + sum(c.keep for c in step.copies)
    assert kept == len(SYSTEM)


def test_the_same_tenant_reuses_its_own_prompt() -> None:
    secret = SYSTEM + question(1)
    slots = [FakeSlot(0, [*secret, 9, 9], salt="key-a"), FakeSlot(1)]
    again = FakeSeq(5, secret + question(2), salt="key-a")
    step = plan(state(slots, waiting=[again]))
    assert step.admissions[0].keep == len(secret)


def test_a_busy_slot_of_another_tenant_is_neither_copied_nor_waited_for() -> None:
    secret = SYSTEM + question(1, length=100)
    leader = FakeSeq(0, secret, Phase.PREFILLING, 0, 0, salt="key-a")
    slots = [FakeSlot(0, [], salt="key-a"), FakeSlot(1)]
    follower = FakeSeq(1, secret + question(2), salt="key-b")
    step = plan(state(slots, running=[leader], waiting=[follower], capacity=1024))
    assert step.waits == () and step.copies == ()
    assert {c.key for c in step.chunks} == {0, 1}


# --- LoRA adapters: one adapter set per step, groups take turns -----------------------------


def test_sequences_of_different_adapters_take_turns_step_by_step() -> None:
    slots = [FakeSlot(i, question(i)) for i in range(3)]
    base = decoding(0, 0)
    tuned = [replace_adapter(decoding(1, 1), "fix"), replace_adapter(decoding(2, 2), "fix")]
    running = [base, *tuned]
    first = plan(replace(state(slots, running=running), previous_adapter=""))
    assert first.adapter == "fix" and {d.key for d in first.decodes} == {1, 2}
    second = plan(replace(state(slots, running=running), previous_adapter="fix"))
    assert second.adapter == "" and {d.key for d in second.decodes} == {0}


def test_one_adapter_alone_runs_every_step() -> None:
    slots = [FakeSlot(0, question(0))]
    running = [replace_adapter(decoding(0, 0), "fix")]
    for previous in ("", "fix", "other"):
        step = plan(replace(state(slots, running=running), previous_adapter=previous))
        assert step.adapter == "fix" and len(step.decodes) == 1


def test_a_cache_computed_under_another_adapter_is_never_reused() -> None:
    prompt = SYSTEM + question(1)
    slots = [FakeSlot(0, [*prompt, 9]), FakeSlot(1)]
    tuned = replace_adapter(FakeSeq(5, prompt + question(2), shared_prefix=len(SYSTEM)), "fix")
    step = plan(state(slots, waiting=[tuned]))
    assert step.admissions[0].keep == 0 and step.copies == ()
    assert step.adapter == "fix" and step.chunks[0].start == 0


def replace_adapter(seq: FakeSeq, adapter: str) -> FakeSeq:
    seq.adapter = adapter
    return seq
