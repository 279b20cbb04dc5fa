"""The continuous-batching engine with the real SmolLM2 model (no HTTP).

Two engines are shared by the module: ``engine`` (4 slots, roomy queue) for the batching
behaviour, and ``tiny`` (1 slot, 1 waiting place, 1.5 s timeout, n_gpu_layers=-1) for the limits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.chat.json_grammar import json_schema_grammar
from server.chat.prompt import ChatPrompt
from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import (
    ContextLengthExceededError,
    EngineEvent,
    FinishEvent,
    GenerationRequest,
    InvalidRequestError,
    ModelLoadError,
    QueueFullError,
    SamplingParams,
    TokenEvent,
)

pytestmark = pytest.mark.slow

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
GREEDY = SamplingParams(max_tokens=32, temperature=0.0)


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    if not MODEL.is_file():
        pytest.fail(f"{MODEL} missing: run 'make setup' (ggserve models fetch) first")
    # Flash attention off: the bit-exact comparisons below (a prefix copied or forked vs a fresh
    # prefill) hold only then; with it on, a token's attention depends on how many rows its
    # batch has (docs/engine.md, "Flash attention"). Serving defaults to on.
    eng = LlamaEngine(
        EngineConfig(model_path=MODEL, n_slots=4, n_ctx=2048, max_queue=32, flash_attn=False)
    )
    eng.warmup()
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tiny() -> Iterator[LlamaEngine]:
    config = EngineConfig(
        model_path=MODEL,
        n_slots=1,
        n_ctx=256,
        max_queue=1,
        request_timeout_s=1.5,
        n_gpu_layers=-1,
        flash_attn=False,
    )
    eng = LlamaEngine(config)
    yield eng
    eng.close()


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish: FinishEvent
    submitted_at: float


def chat(engine: LlamaEngine, question: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return engine.tokenize(ChatPrompt(engine).render(messages))


async def collect(stream: AsyncIterator[EngineEvent], submitted_at: float = 0.0) -> Result:
    texts: list[str] = []
    tokens: list[int] = []
    async for event in stream:
        if isinstance(event, FinishEvent):
            return Result("".join(texts), tokens, event, submitted_at)
        texts.append(event.text)
        tokens.append(event.token_id)
    raise AssertionError("stream ended without a FinishEvent")


async def wait_idle(engine: LlamaEngine) -> None:
    """Closed streams are reaped by the engine thread at its next step: wait for that."""
    for _ in range(200):
        stats = engine.stats()
        if stats.slots_active == 0 and stats.queue_depth == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"engine still busy: {engine.stats()}")


async def run(engine: LlamaEngine, prompt: list[int], params: SamplingParams = GREEDY) -> Result:
    submitted_at = time.perf_counter()
    return await collect(engine.generate(GenerationRequest("t", prompt, params)), submitted_at)


PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three colors.",
    "Explain what a CPU does in two sentences.",
    "Count from 1 to 10.",
    "Why is the sky blue?",
    "Name a famous painter.",
    "Give me a recipe for pancakes.",
]


async def test_greedy_output_is_identical_alone_and_among_7_concurrent_requests(
    engine: LlamaEngine,
) -> None:
    target = chat(engine, "Tell me a short story about a robot who learns to paint.")
    engine.reset_prefix_cache()
    alone = await run(engine, target, SamplingParams(max_tokens=48, temperature=0.0))
    engine.reset_prefix_cache()  # the concurrent run must evaluate the whole prompt again

    others = [
        run(engine, chat(engine, p), SamplingParams(max_tokens=8 + 9 * i, temperature=0.0))
        for i, p in enumerate(PROMPTS[:7])
    ]
    tasks = [asyncio.ensure_future(o) for o in others[:5]]
    await asyncio.sleep(0.3)  # the target joins while the others are mid-generation
    target_task = asyncio.ensure_future(
        run(engine, target, SamplingParams(max_tokens=48, temperature=0.0))
    )
    tasks += [asyncio.ensure_future(o) for o in others[5:]]
    crowded = await target_task
    await asyncio.gather(*tasks)

    # only the chat template's shared system preamble may come from the cache
    assert crowded.finish.timings.prompt_tokens_evaluated > 10
    assert crowded.tokens == alone.tokens
    assert crowded.text == alone.text


async def test_16_concurrent_streams_over_4_slots_all_complete_in_fifo_order(
    engine: LlamaEngine,
) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    results = []
    for i in range(16):
        prompt = chat(engine, f"Request number {i}: say something about the number {i}.")
        results.append(asyncio.ensure_future(run(engine, prompt, params)))
        await asyncio.sleep(0)
    done = await asyncio.gather(*results)

    assert [r.finish.finish_reason for r in done] == ["length"] * 16
    assert all(r.finish.usage.completion_tokens == 12 for r in done)
    admitted_at = [r.submitted_at + r.finish.timings.queue_ms / 1000 for r in done]
    # Requests admitted in one step share one engine timestamp; what differs between them is only
    # the gap between the test's clock read and the engine's at submission (over 1 ms on a loaded
    # machine). Steps here are far more than 50 ms apart, so 50 ms slack still checks the order.
    in_order = all(later >= earlier - 0.05 for earlier, later in itertools.pairwise(admitted_at))
    assert in_order, f"admission must follow submission order: {admitted_at}"
    waits = [r.finish.timings.queue_ms for r in done]
    assert max(waits[:4]) < min(waits[4:]), "the first 4 start at once, the rest wait their turn"
    assert engine.stats().queue_depth == 0


async def test_cancelling_a_stream_frees_its_slot_for_a_queued_request_at_once(
    engine: LlamaEngine,
) -> None:
    long = SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True)
    streams = [
        engine.generate(GenerationRequest(f"r{i}", chat(engine, p), long))
        for i, p in enumerate(PROMPTS[:4])
    ]
    others = [asyncio.ensure_future(collect(s)) for s in streams[1:]]
    queued = asyncio.ensure_future(run(engine, chat(engine, PROMPTS[4]), GREEDY))
    first = streams[0]
    for _ in range(3):  # a few steps: every request has been admitted or queued by now
        assert isinstance(await anext(first), TokenEvent)
    assert engine.stats().slots_active == 4
    cancelled_at = time.perf_counter()
    await first.aclose()

    late = await queued
    admitted_at = late.submitted_at + late.finish.timings.queue_ms / 1000
    finished = await asyncio.gather(*others)
    assert cancelled_at <= admitted_at < cancelled_at + 1.0
    assert all(r.finish.usage.completion_tokens == 100 for r in finished), "others unaffected"
    assert late.finish.finish_reason in ("stop", "length")


async def test_cancelling_the_consumer_task_cancels_the_generation(engine: LlamaEngine) -> None:
    long = SamplingParams(max_tokens=300, temperature=0.0, ignore_eos=True)
    first_token = asyncio.Event()

    async def consume() -> None:
        async for _event in engine.generate(GenerationRequest("c", chat(engine, PROMPTS[5]), long)):
            first_token.set()

    task = asyncio.ensure_future(consume())
    await first_token.wait()
    assert engine.stats().slots_active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(1.0)  # several engine steps
    assert engine.stats().slots_active == 0


async def test_shared_1000_token_prefix_is_evaluated_once(engine: LlamaEngine) -> None:
    facts = " ".join(
        f"Fact {i}: the warehouse in city {i} stores {i * 7} crates." for i in range(60)
    )
    system = f"You answer questions about warehouses. {facts}"
    first_prompt = chat(engine, "Which city stores 21 crates?", system=system)
    second_prompt = chat(engine, "How many crates are in city 5?", system=system)
    shared = next(
        i for i, (a, b) in enumerate(zip(first_prompt, second_prompt, strict=False)) if a != b
    )
    assert shared >= 1000

    first = await run(engine, first_prompt, SamplingParams(max_tokens=4, temperature=0.0))
    second = await run(engine, second_prompt, SamplingParams(max_tokens=4, temperature=0.0))

    first_cached = first.finish.usage.cached_prompt_tokens
    assert first_cached < 50  # at most the chat template's preamble was cached before
    assert first.finish.timings.prompt_tokens_evaluated == len(first_prompt) - first_cached
    assert second.finish.usage.cached_prompt_tokens == shared
    assert second.finish.timings.prompt_tokens_evaluated == len(second_prompt) - shared
    assert second.finish.timings.prompt_ms < first.finish.timings.prompt_ms


async def test_stop_string_cuts_the_output_before_it(engine: LlamaEngine) -> None:
    prompt = chat(engine, "Count from 1 to 10, separated by commas.")
    full = await run(engine, prompt)
    stop = full.text[len(full.text) // 3 : len(full.text) // 3 + 3]
    assert stop.strip(), f"output too short to pick a stop string: {full.text!r}"
    cut = await run(engine, prompt, SamplingParams(max_tokens=32, temperature=0.0, stop=(stop,)))
    assert cut.finish.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


async def test_max_tokens_ends_with_length_and_eos_ends_with_stop(engine: LlamaEngine) -> None:
    short = await run(engine, chat(engine, PROMPTS[7]), SamplingParams(max_tokens=5, temperature=0))
    assert short.finish.finish_reason == "length"
    assert short.finish.usage.completion_tokens == 5 == len(short.tokens)

    answer = await run(
        engine, chat(engine, "What is 2+2?"), SamplingParams(max_tokens=200, temperature=0)
    )
    assert answer.finish.finish_reason == "stop"
    assert answer.finish.usage.completion_tokens < 200


async def test_streamed_text_equals_detokenized_tokens_even_for_multibyte_output(
    engine: LlamaEngine,
) -> None:
    prompt = chat(engine, "Write the word 'hello' in Japanese, Chinese and Russian, with emoji.")
    result = await run(engine, prompt, SamplingParams(max_tokens=40, temperature=0.0))
    # only a character cut off by max_tokens at the very end may become U+FFFD
    assert "\ufffd" not in result.text[:-1]
    assert result.text == engine.detokenize(result.tokens)
    assert any(ord(c) > 127 for c in result.text)


async def test_same_seed_reproduces_sampled_output_and_another_seed_differs(
    engine: LlamaEngine,
) -> None:
    prompt = chat(engine, "Invent a name for a new planet and describe it.")
    sampled = [
        SamplingParams(max_tokens=24, temperature=1.0, top_p=1.0, min_p=0.0, seed=s)
        for s in (7, 7, 8)
    ]
    a, b, c = await asyncio.gather(*(run(engine, prompt, p) for p in sampled))
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens


async def test_json_schema_grammar_yields_parseable_json(engine: LlamaEngine) -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population": {"type": "integer"},
        },
        "required": ["city", "population"],
    }
    params = SamplingParams(max_tokens=64, temperature=0.0, grammar=json_schema_grammar(schema))
    result = await run(engine, chat(engine, "Describe Paris as JSON."), params)
    assert result.finish.finish_reason == "stop"
    data = json.loads(result.text)
    assert set(data) == {"city", "population"}
    assert isinstance(data["population"], int)


async def test_bad_grammar_and_bad_token_ids_are_rejected_before_queueing(
    engine: LlamaEngine,
) -> None:
    with pytest.raises(InvalidRequestError, match="grammar"):
        engine.generate(GenerationRequest("g", [1, 2], SamplingParams(grammar="root ::= (")))
    with pytest.raises(InvalidRequestError, match="token id 999999"):
        engine.generate(GenerationRequest("t", [1, 999999], GREEDY))
    with pytest.raises(InvalidRequestError, match="empty"):
        engine.generate(GenerationRequest("e", [], GREEDY))


async def test_full_queue_rejects_immediately(tiny: LlamaEngine) -> None:
    long = SamplingParams(max_tokens=100, temperature=0.0, ignore_eos=True)
    running = tiny.generate(GenerationRequest("a", chat(tiny, "hi"), long))
    waiting = tiny.generate(GenerationRequest("b", chat(tiny, "hello"), long))
    started = time.perf_counter()
    with pytest.raises(QueueFullError) as excinfo:
        tiny.generate(GenerationRequest("c", chat(tiny, "hey"), long))
    assert time.perf_counter() - started < 0.05
    assert excinfo.value.retry_after_s >= 1.0
    assert tiny.stats().requests_rejected_total >= 1
    await running.aclose()
    await waiting.aclose()
    await wait_idle(tiny)


async def test_context_overflow_is_rejected_before_queueing(tiny: LlamaEngine) -> None:
    prompt = chat(tiny, "word " * 100)
    with pytest.raises(ContextLengthExceededError, match="256 tokens"):
        tiny.generate(
            GenerationRequest("o", prompt, SamplingParams(max_tokens=256 - len(prompt) + 1))
        )
    exactly_full = SamplingParams(max_tokens=256 - len(prompt), temperature=0)
    await tiny.generate(GenerationRequest("f", prompt, exactly_full)).aclose()
    await wait_idle(tiny)


async def test_request_running_past_its_timeout_ends_with_timeout(tiny: LlamaEngine) -> None:
    endless = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
    result = await run(tiny, chat(tiny, "Tell me everything about the ocean."), endless)
    assert result.finish.finish_reason == "timeout"
    assert 0 < result.finish.usage.completion_tokens < 200
    assert 1400 < result.finish.timings.total_ms < 3000


def test_model_info_comes_from_the_gguf_metadata(tiny: LlamaEngine) -> None:
    info = tiny.model_info()
    assert info.architecture == "llama"
    assert info.file_name == MODEL.name
    assert info.size_bytes == MODEL.stat().st_size
    assert 100e6 < info.n_params < 200e6
    assert info.n_ctx_train == 8192
    assert info.chat_template and "<|im_start|>" in info.chat_template
    assert tiny.n_ctx_per_slot == 256


def test_missing_model_file_is_a_load_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelLoadError, match=f"not found: {missing}"):
        LlamaEngine(EngineConfig(model_path=missing))


def test_non_gguf_file_is_a_load_error_naming_the_file(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(ModelLoadError, match=f"{fake} is not a GGUF file"):
        LlamaEngine(EngineConfig(model_path=fake))


def test_truncated_gguf_is_a_load_error_naming_the_file(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.gguf"
    with MODEL.open("rb") as source:
        truncated.write_bytes(source.read(200_000))
    with pytest.raises(ModelLoadError, match=f"could not load the model {truncated}") as excinfo:
        LlamaEngine(EngineConfig(model_path=truncated))
    assert "llama.cpp said" in str(excinfo.value)


def test_bad_lora_file_is_a_load_error_naming_the_adapter(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter.gguf"
    with MODEL.open("rb") as source:  # a GGUF, but a full model, not a LoRA
        adapter.write_bytes(source.read(300_000))
    with pytest.raises(ModelLoadError, match=f"LoRA adapter {adapter}"):
        LlamaEngine(EngineConfig(model_path=MODEL, n_slots=1, n_ctx=128, lora_path=adapter))


def write_lora(path: Path, *, rank: int, scale_b: float, layers: int = 30) -> Path:
    """A real GGUF LoRA for SmolLM2's attention queries; ``scale_b == 0`` makes it a no-op."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    for layer in range(layers):
        lora_a = rng.standard_normal((rank, 576), dtype=np.float32) * 0.05
        lora_b = rng.standard_normal((576, rank), dtype=np.float32) * scale_b
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_a", lora_a)
        writer.add_tensor(f"blk.{layer}.attn_q.weight.lora_b", lora_b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


async def lora_output(lora: Path | None) -> list[int]:
    config = EngineConfig(model_path=MODEL, n_slots=1, n_ctx=256, lora_path=lora, lora_scale=1.0)
    eng = LlamaEngine(config)
    try:
        result = await run(eng, chat(eng, "Name three fruits."), GREEDY)
        return result.tokens
    finally:
        eng.close()


async def test_gguf_lora_is_applied_at_load_time(tmp_path: Path) -> None:
    base = await lora_output(None)
    noop = await lora_output(write_lora(tmp_path / "noop.gguf", rank=4, scale_b=0.0))
    strong = await lora_output(write_lora(tmp_path / "strong.gguf", rank=4, scale_b=2.0))
    assert noop == base  # B = 0: the adapter is loaded but changes nothing
    assert strong != base  # a real delta changes what the model says


def test_chat_prompt_tokens_are_the_tokenized_template(tiny: LlamaEngine) -> None:
    messages = [{"role": "user", "content": "Hi there"}]
    prompt = ChatPrompt(tiny)
    tokens = prompt.tokens(messages)
    assert tokens == tiny.tokenize(prompt.render(messages))
    assert tiny.detokenize(tokens).endswith("Hi there\nassistant\n")  # control tokens render ''


@pytest.mark.parametrize("kv_cache_type", ["q8_0", "q4_0"])
async def test_quantized_kv_cache_loads_and_answers(kv_cache_type: str) -> None:
    config = EngineConfig(
        model_path=MODEL,
        n_slots=1,
        n_ctx=256,
        kv_cache_type=kv_cache_type,  # type: ignore[arg-type]
    )
    eng = LlamaEngine(config)  # quantized V needs flash attention: switched on automatically
    try:
        result = await run(eng, chat(eng, "Count from 1 to 10, separated by commas."), GREEDY)
    finally:
        eng.close()
    assert all(str(n) in result.text for n in range(1, 7)), result.text


def test_context_too_big_for_memory_is_a_load_error_with_the_fix() -> None:
    # 8 x 2M tokens of f16 KV cache is ~340 GiB: the allocation fails at once, nothing is touched
    config = EngineConfig(model_path=MODEL, n_slots=8, n_ctx=2_000_000)
    with pytest.raises(ModelLoadError, match="Lower GGSERVE_N_CTX or GGSERVE_N_SLOTS") as excinfo:
        LlamaEngine(config)
    assert "failed to allocate" in str(excinfo.value)


async def test_request_timing_out_while_queued_never_runs(tiny: LlamaEngine) -> None:
    endless = SamplingParams(max_tokens=200, temperature=0.0, ignore_eos=True)
    running = asyncio.ensure_future(run(tiny, chat(tiny, "Tell me about rivers."), endless))
    await asyncio.sleep(0)
    # A shorter limit than the running request's, so it expires while still waiting: with equal
    # limits the slot could free up a moment before the waiting request's own deadline.
    short = GenerationRequest("queued", chat(tiny, "Tell me about lakes."), endless, timeout_s=0.5)
    queued = await collect(tiny.generate(short), time.perf_counter())
    assert (await running).finish.finish_reason == "timeout"
    assert queued.finish.finish_reason == "timeout"
    assert queued.finish.usage.completion_tokens == 0
    assert queued.finish.timings.prompt_tokens_evaluated == 0


async def test_grammar_overrides_what_the_model_would_say(engine: LlamaEngine) -> None:
    prompt = chat(engine, "What is your favourite animal? Answer in one word.")
    free = await run(engine, prompt, SamplingParams(max_tokens=8, temperature=0.0))
    schema = {"type": "string", "enum": ["red", "green"]}
    params = SamplingParams(max_tokens=8, temperature=0.0, grammar=json_schema_grammar(schema))
    constrained = await run(engine, prompt, params)
    assert "red" not in free.text and "green" not in free.text
    assert json.loads(constrained.text) in ("red", "green")
    assert constrained.finish.finish_reason == "stop"


# --- prefix sharing across slots and n > 1 -------------------------------------------------


def warehouse_system(tag: str, n_facts: int = 60) -> str:
    """A ~1,000-token system prompt; ``tag`` makes it unlike any other test's."""
    facts = " ".join(
        f"Fact {i}: the {tag} depot in city {i} stores {i * 7} crates." for i in range(n_facts)
    )
    return f"You answer questions about {tag} depots. {facts}"


async def alone_cold(engine: LlamaEngine, prompt: list[int], params: SamplingParams) -> Result:
    """The reference answer: no other request, nothing cached."""
    await wait_idle(engine)
    engine.reset_prefix_cache()
    return await run(engine, prompt, params)


async def test_prefix_copied_from_a_busy_slot_gives_the_same_greedy_output(
    engine: LlamaEngine,
) -> None:
    system = warehouse_system("copper")
    busy_prompt = chat(engine, "List every city.", system=system)
    prompt = chat(engine, "How many crates are in city 5?", system=system)
    params = SamplingParams(max_tokens=24, temperature=0.0)
    reference = await alone_cold(engine, prompt, params)

    engine.reset_prefix_cache()
    endless = SamplingParams(max_tokens=400, temperature=0.0, ignore_eos=True)
    busy = engine.generate(GenerationRequest("busy", busy_prompt, endless))
    assert isinstance(await anext(busy), TokenEvent)  # its prompt is in its slot, it generates
    before = engine.stats()
    shared = run(engine, prompt, params)
    copied = await shared
    after = engine.stats()
    await busy.aclose()

    assert after.prefix_copies_total == before.prefix_copies_total + 1
    assert copied.finish.usage.cached_prompt_tokens >= 1000
    assert copied.finish.timings.prompt_tokens_evaluated < 30
    assert copied.tokens == reference.tokens
    assert copied.text == reference.text


async def test_burst_sharing_an_uncached_prefix_prefills_it_once_with_unchanged_answers(
    engine: LlamaEngine,
) -> None:
    system = warehouse_system("tin")
    questions = [f"How many crates are in city {i}?" for i in (3, 11, 27, 42)]
    prompts = [chat(engine, q, system=system) for q in questions]
    params = SamplingParams(max_tokens=12, temperature=0.0)
    references = [await alone_cold(engine, p, params) for p in prompts]

    engine.reset_prefix_cache()
    before = engine.stats()
    burst = await asyncio.gather(*(run(engine, p, params) for p in prompts))
    after = engine.stats()

    shared = min(len(p) for p in prompts) - 20
    evaluated = after.prompt_tokens_evaluated_total - before.prompt_tokens_evaluated_total
    # the shared context once (plus each question); without sharing it would be 4 times
    assert evaluated < len(prompts[0]) + 4 * 40
    assert evaluated < 2 * shared
    assert after.prefix_copies_total - before.prefix_copies_total == 3
    assert [r.tokens for r in burst] == [r.tokens for r in references]


async def test_cancelling_the_request_whose_prefix_is_shared_leaves_the_others_intact(
    engine: LlamaEngine,
) -> None:
    system = warehouse_system("zinc", n_facts=90)  # ~1,500 tokens: three prompt chunks
    leader_prompt = chat(engine, "Which city stores the most crates?", system=system)
    prompts = [chat(engine, f"How many crates are in city {i}?", system=system) for i in (4, 9)]
    params = SamplingParams(max_tokens=12, temperature=0.0)
    references = [await alone_cold(engine, p, params) for p in prompts]

    engine.reset_prefix_cache()
    start = engine.stats().prompt_tokens_evaluated_total
    leader = engine.generate(GenerationRequest("leader", leader_prompt, params))
    followers = [asyncio.ensure_future(run(engine, p, params)) for p in prompts]
    for _ in range(2000):  # cancel the leader once it has prefilled part of the shared prefix
        if engine.stats().prompt_tokens_evaluated_total - start >= 256:
            break
        await asyncio.sleep(0.002)
    await leader.aclose()
    done = await asyncio.gather(*followers)

    reasons = [r.finish.finish_reason for r in done]
    assert reasons == [r.finish.finish_reason for r in references]
    assert [r.tokens for r in done] == [r.tokens for r in references]


async def test_n_choices_fork_one_prefill_and_choice_0_equals_the_single_answer(
    engine: LlamaEngine,
) -> None:
    prompt = chat(engine, "Write one sentence about the moon.", system=warehouse_system("iron"))
    greedy = SamplingParams(max_tokens=16, temperature=0.0)
    single = await alone_cold(engine, prompt, greedy)

    engine.reset_prefix_cache()
    before = engine.stats()
    events = [e async for e in engine.generate(GenerationRequest("n", prompt, greedy, n=3))]
    after = engine.stats()

    finishes = [e for e in events if isinstance(e, FinishEvent)]
    assert sorted(f.index for f in finishes) == [0, 1, 2]
    assert isinstance(events[-1], FinishEvent)
    for index in range(3):
        tokens = [e.token_id for e in events if isinstance(e, TokenEvent) and e.index == index]
        assert tokens == single.tokens, f"choice {index} differs from the single answer"
    assert all(f.usage.prompt_tokens == len(prompt) for f in finishes)
    evaluated = after.prompt_tokens_evaluated_total - before.prompt_tokens_evaluated_total
    assert evaluated == len(prompt)  # one prefill; the forks sample from choice 0's logits
    assert after.prefix_copies_total - before.prefix_copies_total == 2


async def test_sampled_choices_differ_and_reproduce_with_a_seed(engine: LlamaEngine) -> None:
    prompt = chat(engine, "Invent a name for a new planet.")
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=1.0, min_p=0.0, seed=11)

    async def choices() -> list[list[int]]:
        # Cold both times: a prompt evaluated in a different batch shape gets logits that differ
        # in the last bits, which greedy decoding ignores but a seeded draw may not.
        await wait_idle(engine)
        engine.reset_prefix_cache()
        out: list[list[int]] = [[], [], []]
        async for event in engine.generate(GenerationRequest("s", prompt, params, n=3)):
            if isinstance(event, TokenEvent):
                out[event.index].append(event.token_id)
        return out

    first, again = await choices(), await choices()
    assert first == again
    assert len({tuple(c) for c in first}) == 3, "each choice draws with its own seed"


async def test_n_beyond_the_slots_is_refused_before_queueing(engine: LlamaEngine) -> None:
    with pytest.raises(InvalidRequestError, match="n must be between 1 and 4"):
        engine.generate(GenerationRequest("n", [1, 2], GREEDY, n=5))
    with pytest.raises(InvalidRequestError, match="n must be between 1 and 4"):
        engine.generate(GenerationRequest("n", [1, 2], GREEDY, n=0))


async def test_greedy_output_with_flash_attention_is_identical_alone_and_among_7_others() -> None:
    """The condition for turning flash attention on by default (llama-server's CPU default)."""
    # A prefix copied from a busy slot is another matter (docs/engine.md, flash_attn): the
    # fixed bound keeps this prompt's short shared prefix recomputed, whatever the timings.
    config = EngineConfig(
        model_path=MODEL,
        n_slots=8,
        n_ctx=512,
        max_queue=8,
        flash_attn=True,
        prefix_reuse_cost_aware=False,
    )
    eng = LlamaEngine(config)
    try:
        target = chat(eng, "Tell me a short story about a robot who learns to paint.")
        params = SamplingParams(max_tokens=48, temperature=0.0)
        alone = await run(eng, target, params)
        eng.reset_prefix_cache()
        others = [
            asyncio.ensure_future(
                run(eng, chat(eng, p), SamplingParams(max_tokens=40, temperature=0.0))
            )
            for p in PROMPTS[:7]
        ]
        await asyncio.sleep(0.3)  # the target joins while the others are mid-generation
        crowded = await run(eng, target, params)
        await asyncio.gather(*others)
    finally:
        eng.close()
    assert crowded.tokens == alone.tokens


async def test_a_preserved_control_token_keeps_its_text(engine: LlamaEngine) -> None:
    """Tool-call wrappers that are control tokens (Mistral's [TOOL_CALLS]) must reach the
    parser: listed in ``preserved_tokens`` they render as their text, otherwise as ''."""
    (marker,) = engine.tokenize("<|im_start|>", add_special=False)
    forced = SamplingParams(max_tokens=1, temperature=0.0, logit_bias=((marker, 100.0),))
    prompt = chat(engine, "Say hi.")
    plain = await run(engine, prompt, forced)
    kept = await run(engine, prompt, dataclasses.replace(forced, preserved_tokens=(marker,)))
    assert plain.tokens == kept.tokens == [marker]
    assert plain.text == ""
    assert kept.text == "<|im_start|>"
