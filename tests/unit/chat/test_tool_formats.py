"""Tool-call formats per model family, on the families' real chat templates.

Each family: the template is recognised, a conversation with tools, a call and its result
renders through the server's own template code, and a recorded-style output of that family
parses into the same calls whole and streamed (split at every character boundary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from server.chat.reasoning import split_reasoning, template_opens_thinking
from server.chat.template import CHATML_TEMPLATE, ChatTemplate
from server.chat.tools.formats import REGISTRY, detect_format, format_named
from server.chat.tools.parser import (
    ArgumentsDelta,
    CallStart,
    ContentDelta,
    StreamItem,
    ToolCallStream,
    parse_output,
)
from server.chat.tools.plan import plan_tools
from server.chat.tools.spec import ToolSpec

TEMPLATES = Path(__file__).resolve().parents[2] / "fixtures" / "chat_templates"
WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "City name"}},
        "required": ["city"],
    },
)
TIME = ToolSpec(
    "get_time", "Current time", {"type": "object", "properties": {"tz": {"type": "string"}}}
)
# A finished tool round: the user asks, the assistant called, the tool answered.
ROUND = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_abc",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc", "content": "18C and sunny"},
]
PARIS = ("get_weather", {"city": "Paris"})
UTC = ("get_time", {"tz": "UTC"})


@dataclass(frozen=True)
class Family:
    template: str  # file under tests/fixtures/chat_templates ("" = ChatML, no tool support)
    name: str  # the format detected
    output: str  # what a model of the family writes (reasoning included, if it thinks)
    calls: tuple[tuple[str, dict[str, object]], ...]
    content: str = ""
    history_call: str = ""  # how the template writes the history's call back

    def source(self) -> str:
        return (TEMPLATES / self.template).read_text() if self.template else CHATML_TEMPLATE


FAMILIES = [
    Family(
        "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
        "hermes",
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {"tz": "UTC"}}\n'
        "</tool_call>",
        (PARIS, UTC),
        "Let me check.",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
    Family(
        "Qwen-Qwen3-0.6B.jinja",
        "qwen3",
        "<think>\nThe user wants the weather; I should call the tool.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        (PARIS,),
        "",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
    Family(
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
        "llama3",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}',
        (PARIS,),
        "",
        '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
    ),
    Family(
        "meta-llama-Llama-3.3-70B-Instruct.jinja",
        "llama3",
        '<|python_tag|>{"name": "get_time", "parameters": {"tz": "UTC"}}',
        (UTC,),
    ),
    Family(
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_time", "arguments": {"tz": "UTC"}, "id": "a1b2c3d4e"}]',
        (PARIS, UTC),
        "",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "',
    ),
    Family(
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "deepseek",
        # R1's template opens <think> in the prompt: the output starts inside the thinking.
        "Two lookups.\n</think>\n\n"
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris"}\n```<｜tool▁call▁end｜>\n'
        "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n"
        '```json\n{"tz": "UTC"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        (PARIS, UTC),
        "",
        "<｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
        '{"city": "Paris"}\n```<｜tool▁call▁end｜>',
    ),
    Family(
        "",
        "generic",
        'Sure. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        (PARIS,),
        "Sure.",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    ),
]
IDS = [f"{f.name}-{i}" for i, f in enumerate(FAMILIES)]


def _answer(family: Family) -> str:
    """The output as the tool parser sees it: after the reasoning is split off."""
    source = family.source()
    if not detect_format(source).thinks:
        return family.output
    reasoning, answer = split_reasoning(family.output, opened=template_opens_thinking(source))
    assert reasoning  # the thinking was found and kept out of the answer
    return answer


def _calls(calls: list[tuple[str, str]]) -> list[tuple[str, object]]:
    return [(name, json.loads(arguments)) for name, arguments in calls]


def _collect(items: list[StreamItem]) -> tuple[str, list[tuple[str, str]]]:
    content = "".join(i.text for i in items if isinstance(i, ContentDelta))
    starts = [i for i in items if isinstance(i, CallStart)]
    assert [s.index for s in starts] == list(range(len(starts)))
    arguments = [
        "".join(i.text for i in items if isinstance(i, ArgumentsDelta) and i.index == s.index)
        for s in starts
    ]
    return content, [(s.name, a) for s, a in zip(starts, arguments, strict=True)]


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_the_family_is_detected_from_its_chat_template(family: Family) -> None:
    assert detect_format(family.source()).name == family.name


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_tools_and_a_tool_round_render_through_the_real_template(family: Family) -> None:
    plan = plan_tools(
        ROUND, [WEATHER, TIME], "auto", parallel=True, template_source=family.source()
    )
    template = ChatTemplate(family.source(), bos_token="<s>", eos_token="</s>")
    prompt = template.render(plan.messages, **plan.template_vars)
    assert "get_weather" in prompt and "get_time" in prompt  # the tools are shown
    assert "18C and sunny" in prompt  # the tool result is there
    if family.history_call:  # the earlier call, written back as the family writes calls
        assert family.history_call in prompt, prompt
    assert "<｜Assistant｜><｜end▁of▁sentence｜>" not in prompt  # no empty turn after a call


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_a_recorded_output_parses_into_its_calls(family: Family) -> None:
    fmt = detect_format(family.source())
    parsed = parse_output(_answer(family), fmt=fmt)
    assert _calls([(c.name, c.arguments) for c in parsed.calls]) == list(family.calls)
    assert parsed.content == family.content
    assert len({c.id for c in parsed.calls}) == len(parsed.calls)


@pytest.mark.parametrize("family", FAMILIES, ids=IDS)
def test_streaming_split_anywhere_gives_the_whole_parse(family: Family) -> None:
    fmt = detect_format(family.source())
    text = _answer(family)
    pieces = [[text[:cut], text[cut:]] for cut in range(len(text) + 1)]
    pieces.append(list(text))  # one character at a time
    for split in pieces:
        stream = ToolCallStream(fmt)
        items: list[StreamItem] = []
        for piece in split:
            items += stream.feed(piece)
        items += stream.finish()
        content, calls = _collect(items)
        assert content.strip() == family.content, split
        for marker in fmt.markers:  # no wrapper text ever reaches the content
            assert marker not in content
        assert _calls(calls) == list(family.calls), split
        assert [(c.name, json.loads(c.arguments)) for c in stream.calls] == list(family.calls)


@pytest.mark.parametrize("name", [family.name for family in REGISTRY])
def test_a_forced_call_reads_back_from_its_prefill_in_every_family(name: str) -> None:
    fmt = format_named(name)
    whole = fmt.calls_text([("get_weather", '{"city": "Oslo"}')])
    named = fmt.prefill([WEATHER], named=True)
    assert whole.startswith(named) and "get_weather" in named  # the name is not generated
    generated = whole[len(named) :]
    assert [
        (c.name, c.arguments) for c in parse_output(generated, prefill=named, fmt=fmt).calls
    ] == [("get_weather", '{"city": "Oslo"}')]
    stream = ToolCallStream(fmt, named)
    items = stream.start() + stream.feed(generated) + stream.finish()
    assert _collect(items) == ("", [("get_weather", '{"city": "Oslo"}')])
    # Cut by the budget inside the arguments: no call, and nothing leaks into content.
    cut = parse_output(generated[:6], prefill=named, fmt=fmt)
    assert cut.calls == [] and cut.content == ""


@pytest.mark.parametrize("name", [family.name for family in REGISTRY])
def test_the_grammar_spells_the_family_canonical_call(name: str) -> None:
    fmt = format_named(name)
    grammar = fmt.grammar([WEATHER, TIME], parallel=True)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines() if line)
    head = json.dumps(fmt.head(WEATHER), ensure_ascii=False)
    assert rules["get-weather-call"].startswith(f"{head} get-weather-arguments")
    assert "city" in rules["get-weather-arguments-city-kv"]
    if fmt.section_open:
        assert rules["root"].startswith(json.dumps(fmt.section_open, ensure_ascii=False))
    if fmt.separator is None:  # one call per turn: no repetition
        assert "*" not in rules["root"]
    else:
        assert "tool-call )*" in rules["root"]
    trigger = fmt.trigger([WEATHER])
    assert trigger.heads[0].startswith(trigger.marker)


def test_text_that_only_looks_like_a_wrapper_stays_content() -> None:
    mistral = format_named("mistral")
    assert parse_output("Use [TOOL_CALLS] wisely.", fmt=mistral).content == (
        "Use [TOOL_CALLS] wisely."
    )
    llama = format_named("llama3")
    text = 'In JSON: {"a": 1}'
    assert parse_output(text, fmt=llama).content == text
    deepseek = format_named("deepseek")
    odd = "<｜tool▁calls▁begin｜>nothing"
    assert parse_output(odd, fmt=deepseek).content == odd


def test_mistral_history_ids_become_the_nine_characters_its_template_needs() -> None:
    fmt = format_named("mistral")
    messages = fmt.render_messages(ROUND)
    call_id = messages[2]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum()
    assert messages[3]["tool_call_id"] == call_id
