"""The RAM tier of the prompt cache, without a model: what the planner saves and restores, and
the LRU that holds the states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from server.engine.planner import Phase, PlanState, Restore, Save, plan
from server.engine.prompt_cache import PromptCache
from tests.unit.engine.test_planner import FakeSeq, FakeSlot, question, state

HISTORY_A = list(range(2000, 2600))  # a returning conversation's 600-token history
HISTORY_B = list(range(3000, 3600))


@dataclass
class Entry:
    entry_id: int
    tokens: tuple[int, ...]
    salt: str = ""
    adapter: str = ""


def ram_state(
    slots: Sequence[FakeSlot],
    waiting: Sequence[FakeSeq],
    ram: Sequence[Entry] = (),
    running: Sequence[FakeSeq] = (),
) -> PlanState:
    """A planner state with the RAM tier on and ``ram`` as its entries."""
    base = state(slots, running=running, waiting=waiting)
    return replace(base, ram=tuple(ram), keep_evicted=True)


# --- the planner ---------------------------------------------------------------------------


def test_a_slot_evicted_for_another_conversation_is_saved_first() -> None:
    slot = FakeSlot(0, list(HISTORY_A), last_used=1.0)
    step = plan(ram_state([slot], [FakeSeq(1, HISTORY_B + question(1))]))
    assert step.saves == (Save(0, len(HISTORY_A)),)
    assert step.admissions[0].keep == 0


def test_nothing_is_saved_with_the_ram_tier_off() -> None:
    slot = FakeSlot(0, list(HISTORY_A))
    step = plan(state([slot], waiting=[FakeSeq(1, HISTORY_B + question(1))]))
    assert step.saves == () and step.restores == ()


def test_a_slot_whose_tokens_ram_already_holds_is_not_saved_again() -> None:
    slot = FakeSlot(0, list(HISTORY_A))
    ram = [Entry(7, tuple(HISTORY_A + question(9)))]  # holds all of the slot's tokens and more
    step = plan(ram_state([slot], [FakeSeq(1, HISTORY_B + question(1))], ram))
    assert step.saves == ()


def test_a_short_slot_is_not_worth_saving() -> None:
    slot = FakeSlot(0, question(3, length=20))  # under min_copy_tokens (32)
    step = plan(ram_state([slot], [FakeSeq(1, HISTORY_B)]))
    assert step.saves == ()


def test_a_slot_that_keeps_its_whole_cache_is_not_saved() -> None:
    """The same conversation returning to its own slot drops nothing."""
    slot = FakeSlot(0, list(HISTORY_A))
    step = plan(ram_state([slot], [FakeSeq(1, HISTORY_A + question(1))]))
    assert step.saves == () and step.admissions[0].keep == len(HISTORY_A)


def test_a_returning_conversation_is_restored_from_ram() -> None:
    slot = FakeSlot(0, list(HISTORY_B))
    ram = [Entry(3, tuple(question(4, 40))), Entry(7, tuple(HISTORY_A))]
    prompt = HISTORY_A + question(1)
    step = plan(ram_state([slot], [FakeSeq(1, prompt)], ram))
    assert step.restores == (Restore(1, 0, 7, len(HISTORY_A)),)
    assert step.saves == (Save(0, len(HISTORY_B)),)  # B is kept before A takes the slot
    # The rest of the prompt is prefilled in this same step, from where the restore ends.
    assert [(c.start, c.end) for c in step.chunks] == [(len(HISTORY_A), len(prompt))]


def test_ram_restores_at_most_up_to_the_last_prompt_token() -> None:
    """The last prompt token is always evaluated: its logits give the first sample."""
    ram = [Entry(7, tuple(HISTORY_A))]
    step = plan(ram_state([FakeSlot(0)], [FakeSeq(1, list(HISTORY_A))], ram))
    assert step.restores == (Restore(1, 0, 7, len(HISTORY_A) - 1),)
    assert [(c.start, c.end) for c in step.chunks] == [(len(HISTORY_A) - 1, len(HISTORY_A))]


def test_no_restore_when_a_slot_gives_as_much() -> None:
    """A busy slot holding the same history is copied (cheaper) rather than RAM restored."""
    busy = FakeSlot(0, [*HISTORY_A, 5])
    runner = FakeSeq(9, [*HISTORY_A, 5], Phase.DECODING, len(HISTORY_A) + 1, 0, next_token=6)
    ram = [Entry(7, tuple(HISTORY_A))]
    waiting = [FakeSeq(1, HISTORY_A + question(1))]
    step = plan(ram_state([busy, FakeSlot(1)], waiting, ram, [runner]))
    assert step.restores == ()
    assert [c.keep for c in step.copies] == [len(HISTORY_A)]


def test_a_scoring_request_is_never_restored() -> None:
    ram = [Entry(7, tuple(HISTORY_A))]
    seq = FakeSeq(1, HISTORY_A + question(1), scores_prompt=True)
    step = plan(ram_state([FakeSlot(0)], [seq], ram))
    assert step.restores == () and step.chunks[0].start == 0


def test_among_equal_slots_the_one_whose_eviction_loses_nothing_is_taken() -> None:
    """Both slots share nothing with the prompt; the empty one goes, the history stays."""
    history = FakeSlot(0, list(HISTORY_A), last_used=0.0)  # older: LRU alone would take it
    empty = FakeSlot(1, [], last_used=5.0)
    step = plan(ram_state([history, empty], [FakeSeq(1, HISTORY_B)]))
    assert step.admissions[0].seq_id == 1 and step.saves == ()


# --- the LRU ---------------------------------------------------------------------------------


def test_the_lru_drops_the_least_recently_used_to_fit() -> None:
    cache = PromptCache(capacity_bytes=250)
    a = cache.put(HISTORY_A, "a", 100)
    b = cache.put(HISTORY_B, "b", 100)
    assert a is not None and b is not None
    assert cache.take(a.entry_id) is a  # a is now the most recently used
    c = cache.put(question(1, 50), "c", 100)
    assert c is not None
    assert [e.entry_id for e in cache.entries()] == [a.entry_id, c.entry_id]
    assert cache.stats.bytes == 200 and cache.stats.evictions == 1


def test_a_state_larger_than_the_cache_is_not_kept() -> None:
    cache = PromptCache(capacity_bytes=100)
    assert cache.put(HISTORY_A, "x", 101) is None and cache.entries() == ()


def test_an_entry_that_extends_another_replaces_it() -> None:
    cache = PromptCache(capacity_bytes=1000)
    cache.put(HISTORY_A, "turn 1", 100)
    longer = cache.put(HISTORY_A + question(1), "turn 2", 120)
    assert longer is not None
    assert [e.tokens for e in cache.entries()] == [longer.tokens]
    assert cache.stats.bytes == 120 and cache.covers(HISTORY_A)


def test_the_tier_off_keeps_nothing() -> None:
    cache = PromptCache(capacity_bytes=0)
    assert not cache.enabled and cache.put(HISTORY_A, "x", 1) is None


def test_another_tenants_saved_conversation_is_not_restored() -> None:
    history = question(3, length=300)
    slots = [FakeSlot(0), FakeSlot(1)]
    probe = FakeSeq(7, history + question(4), salt="key-b")
    step = plan(ram_state(slots, [probe], [Entry(1, tuple(history), salt="key-a")]))
    assert step.restores == ()
    own = replace(probe, salt="key-a")
    step = plan(ram_state(slots, [own], [Entry(1, tuple(history), salt="key-a")]))
    assert [r.keep for r in step.restores] == [len(history)]


def test_a_new_state_replaces_only_its_own_tenants_shorter_entries() -> None:
    cache = PromptCache(capacity_bytes=1000)
    mine = cache.put([1, 2, 3], object(), 10, salt="a")
    theirs = cache.put([1, 2], object(), 10, salt="b")
    assert mine is not None and theirs is not None
    cache.put([1, 2, 3, 4], object(), 10, salt="a")
    held = {(e.tokens, e.salt) for e in cache.entries()}
    assert held == {((1, 2), "b"), ((1, 2, 3, 4), "a")}


def test_a_short_gain_is_restored_when_restores_are_cheap() -> None:
    """The topic after a shared system prompt: 12 more tokens than the slot gives. Worth a
    restore when restores cost less than 12 prompt tokens, not under the default bound."""
    common = list(HISTORY_A[:24])
    slot = FakeSlot(0, common + question(5, 30))
    ram = [Entry(7, tuple(common + question(1, 12) + question(8, 40)))]
    prompt = common + question(1, 12) + question(2, 10)
    cheap = replace(ram_state([slot], [FakeSeq(1, prompt)], ram), min_restore_tokens=2)
    assert plan(cheap).restores == (Restore(1, 0, 7, 36),)
    assert plan(ram_state([slot], [FakeSeq(1, prompt)], ram)).restores == ()


def test_with_cheap_restores_a_short_slot_is_worth_saving() -> None:
    slot = FakeSlot(0, question(3, length=20))
    step = plan(replace(ram_state([slot], [FakeSeq(1, HISTORY_B)]), min_restore_tokens=4))
    assert step.saves == (Save(0, 20),)
