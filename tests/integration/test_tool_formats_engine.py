"""Every family's call grammar on the real engine: a forced call comes out in that family's
format and reads back with that family's parser.

SmolLM2 does not know these formats; the grammar (after the prefilled known start) is what
makes the output a call, so this proves each grammar is valid GBNF for llama.cpp and that the
canonical text it allows is what the parser reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.chat.prompt import ChatPrompt
from server.chat.tools.formats import REGISTRY, format_named
from server.chat.tools.parser import parse_output
from server.chat.tools.spec import ToolSpec
from server.engine.config import EngineConfig
from server.engine.llama_engine import LlamaEngine
from server.engine.types import GenerationRequest, SamplingParams, TokenEvent

pytestmark = pytest.mark.slow

MODEL = Path(__file__).resolve().parents[2] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
TIME = ToolSpec("get_time", "", {"type": "object", "properties": {"tz": {"type": "string"}}})


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaEngine]:
    eng = LlamaEngine(EngineConfig(model_path=MODEL, n_slots=1, n_ctx=1024, max_queue=8))
    yield eng
    eng.close()


def _generate(engine: LlamaEngine, prompt: list[int], params: SamplingParams) -> str:
    async def go() -> str:
        events = engine.generate(GenerationRequest("t", prompt, params))
        return "".join([e.text async for e in events if isinstance(e, TokenEvent)])

    return asyncio.run(go())


@pytest.mark.parametrize("name", [family.name for family in REGISTRY])
def test_a_required_call_follows_the_family_grammar(engine: LlamaEngine, name: str) -> None:
    fmt = format_named(name)
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    prompt = ChatPrompt(engine).tokens(messages)
    prefill = fmt.prefill([WEATHER, TIME], named=False)
    prompt += engine.tokenize(prefill, add_special=False)
    grammar = fmt.grammar([WEATHER, TIME], parallel=False, prefill=prefill)
    text = _generate(engine, prompt, SamplingParams(max_tokens=80, temperature=0, grammar=grammar))
    calls = parse_output(text, prefill=prefill, fmt=fmt).calls
    assert len(calls) == 1 and calls[0].name in ("get_weather", "get_time"), text
    arguments = json.loads(calls[0].arguments)
    if calls[0].name == "get_weather":
        assert set(arguments) == {"city", "unit"}, text
