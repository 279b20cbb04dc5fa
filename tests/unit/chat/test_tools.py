"""Tool calling logic without a model: grammar building, history checks, rendering, parsing."""

from __future__ import annotations

import json

import pytest

from server.chat.template import CHATML_TEMPLATE, ChatTemplate
from server.chat.tools.formats import HERMES
from server.chat.tools.grammar import tool_call_grammar
from server.chat.tools.history import check_tool_history
from server.chat.tools.parser import (
    ArgumentsDelta,
    CallStart,
    ContentDelta,
    ToolCallStream,
    parse_output,
)
from server.chat.tools.plan import plan_tools
from server.chat.tools.render import prepare_chat, tool_preamble
from server.chat.tools.spec import ToolSpec, ToolSpecError, check_tools, resolve_choice
from server.engine.sampling import LazyTriggerGuard

WEATHER = ToolSpec(
    "get_weather",
    "Current weather in a city",
    {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
)
TIME = ToolSpec("get_time", "", {"type": "object", "properties": {"tz": {"type": "string"}}})


def _rules(grammar: str) -> dict[str, str]:
    return dict(line.split(" ::= ", 1) for line in grammar.splitlines() if line)


def test_call_grammar_fixes_each_tool_name_and_constrains_its_arguments() -> None:
    rules = _rules(tool_call_grammar([WEATHER, TIME], parallel=False))
    assert rules["root"] == "tool-call"
    assert '"<tool_call>\\n"' in rules["tool-call"]
    assert "get-weather-call" in rules["tool-call"] and "get-time-call" in rules["tool-call"]
    assert rules["get-weather-call"].startswith(
        '"{\\"name\\": \\"get_weather\\", \\"arguments\\": " get-weather-arguments'
    )
    assert "city" in rules["get-weather-arguments-city-kv"]


def test_parallel_grammar_repeats_calls() -> None:
    assert _rules(tool_call_grammar([WEATHER], parallel=True))["root"].endswith("tool-call )*")


def test_tools_with_refs_resolve_against_their_own_schema() -> None:
    nested = ToolSpec(
        "add_item",
        "",
        {
            "type": "object",
            "$defs": {"item": {"type": "object", "properties": {"sku": {"type": "string"}}}},
            "properties": {"item": {"$ref": "#/$defs/item"}},
        },
    )
    assert "sku" in tool_call_grammar([nested, WEATHER], parallel=False)


def test_schema_that_cannot_become_a_grammar_names_the_tool_parameters() -> None:
    broken = ToolSpec("f", "", {"type": "object", "properties": {"x": {"$ref": "#/nope/x"}}})
    with pytest.raises(ToolSpecError) as info:
        tool_call_grammar([WEATHER, broken], parallel=False)
    assert info.value.param == "tools[1].function.parameters"


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([ToolSpec("bad name!")], "tools[0].function.name"),
        ([ToolSpec("")], "tools[0].function.name"),
        ([ToolSpec("x" * 65)], "tools[0].function.name"),
        ([WEATHER, WEATHER], "tools[1].function.name"),
        ([ToolSpec("f", "", {"type": "array"})], "tools[0].function.parameters"),
    ],
)
def test_bad_tool_definitions_name_the_field(tools: list[ToolSpec], param: str) -> None:
    with pytest.raises(ToolSpecError) as info:
        check_tools(tools)
    assert info.value.param == param


def test_tool_choice_naming_an_unknown_function_is_rejected() -> None:
    with pytest.raises(ToolSpecError) as info:
        resolve_choice([WEATHER], "get_time")
    assert info.value.param == "tool_choice"
    assert resolve_choice([WEATHER, TIME], "get_time") == [TIME]
    assert resolve_choice([WEATHER], "none") == []


def _call(call_id: str, name: str = "get_weather", arguments: str = '{"city": "Paris"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [_call("a"), _call("b")]},
    {"role": "tool", "tool_call_id": "a", "content": "18C"},
    {"role": "tool", "tool_call_id": "b", "content": "25C"},
    {"role": "user", "content": "Thanks"},
]


def test_a_complete_round_trip_passes_the_history_check() -> None:
    check_tool_history(ROUND_TRIP)


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "tool_call_id": "a", "content": "x"}], "messages[0].tool_call_id"),
        ([*ROUND_TRIP[:2], {"role": "tool", "content": "x"}], "messages[2].tool_call_id"),
        (
            [*ROUND_TRIP[:2], {"role": "tool", "tool_call_id": "zzz", "content": "x"}],
            "messages[2].tool_call_id",
        ),
        ([*ROUND_TRIP[:3], ROUND_TRIP[4]], "messages[3]"),  # call b never answered
        ([*ROUND_TRIP[:3], ROUND_TRIP[2]], "messages[3].tool_call_id"),  # a answered twice
        (
            [{"role": "assistant", "tool_calls": [_call("a", arguments="{not json")]}],
            "messages[0].tool_calls[0].function.arguments",
        ),
        ([{"role": "assistant", "tool_calls": []}], "messages[0].tool_calls"),
        (
            [{"role": "assistant", "tool_calls": [{"id": "a", "function": {}}]}],
            "messages[0].tool_calls[0].function.name",
        ),
    ],
)
def test_broken_tool_protocol_names_the_message(messages: list[dict], param: str) -> None:
    with pytest.raises(ToolSpecError) as info:
        check_tool_history(messages)
    assert info.value.param == param


def test_generic_rendering_works_with_a_plain_chatml_template() -> None:
    messages, extra = prepare_chat(ROUND_TRIP, [WEATHER])
    assert extra == {}
    assert messages[0]["role"] == "system" and "get_weather" in messages[0]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "user"]
    call_text = messages[2]["content"]
    assert call_text.count("<tool_call>") == 2
    assert parse_output(call_text).calls[0].name == "get_weather"
    assert messages[3]["content"].count("<tool_response>") == 2  # both results in one turn
    text = ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="").render(messages)
    assert "18C" in text and "25C" in text


def test_generic_preamble_joins_an_existing_system_message() -> None:
    messages, _ = prepare_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [WEATHER],
    )
    assert messages[0]["content"].startswith("Be brief.\n\n")
    assert tool_preamble([WEATHER]) in messages[0]["content"]
    assert len(messages) == 2


TOOL_TEMPLATE = (
    "{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}\n{% endif %}"
    "{% for m in messages %}{{ m.role }}:{{ m.content }}"
    "{% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments.city }}]"
    "{% endfor %}\n{% endfor %}"
)


def test_a_template_that_knows_tools_gets_them_natively() -> None:
    messages, extra = prepare_chat(ROUND_TRIP, [WEATHER], fmt=HERMES)
    text = ChatTemplate(TOOL_TEMPLATE, bos_token="", eos_token="").render(messages, **extra)
    assert text.startswith("TOOLS:get_weather;")
    assert "[get_weather Paris]" in text  # arguments handed over as a mapping
    assert "tool:18C" in text


def test_plan_picks_grammar_and_laziness_by_choice() -> None:
    chat = [{"role": "user", "content": "Weather?"}]
    auto = plan_tools(chat, [WEATHER], "auto", parallel=True, template_source=CHATML_TEMPLATE)
    assert auto.grammar and auto.trigger and auto.trigger.marker == "<tool_call>"
    named = plan_tools(chat, [WEATHER, TIME], "get_time", parallel=True, template_source="")
    assert named.trigger is None and named.grammar and "get-weather-call" not in named.grammar
    none = plan_tools(chat, [WEATHER], "none", parallel=True, template_source="")
    assert none.grammar is None and not none.parse_calls
    assert "get_weather" not in json.dumps(none.messages)


def test_parse_output_splits_content_and_calls() -> None:
    text = (
        "Let me check.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
    )
    parsed = parse_output(text)
    assert parsed.content == "Let me check."
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {}),
    ]
    assert len({c.id for c in parsed.calls}) == 2


def test_malformed_call_blocks_stay_text() -> None:
    text = "<tool_call>\nnot json\n</tool_call>"
    parsed = parse_output(text)
    assert parsed.calls == [] and parsed.content == text


@pytest.mark.parametrize("piece_size", [1, 3, 7, 1000])
def test_streamed_calls_match_the_whole_text_parse(piece_size: int) -> None:
    text = (
        "Sure. <tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Pa\\"r}is", "n": [1, {"x": 2}]}}\n'
        "</tool_call>\n<tool_call>\n"
        '{"name": "get_time", "arguments": {"tz": "UTC"}}\n</tool_call>'
    )
    stream = ToolCallStream()
    items = []
    for start in range(0, len(text), piece_size):
        items += stream.feed(text[start : start + piece_size])
    items += stream.finish()
    content = "".join(i.text for i in items if isinstance(i, ContentDelta))
    starts = [i for i in items if isinstance(i, CallStart)]
    args = [
        "".join(i.text for i in items if isinstance(i, ArgumentsDelta) and i.index == k)
        for k in range(2)
    ]
    assert content == "Sure. "
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "get_time")]
    assert json.loads(args[0]) == {"city": 'Pa"r}is', "n": [1, {"x": 2}]}
    assert json.loads(args[1]) == {"tz": "UTC"}
    assert [c.name for c in stream.calls] == ["get_weather", "get_time"]
    assert [c.id for c in stream.calls] == [s.id for s in starts]


def test_stream_releases_text_that_only_looked_like_a_marker() -> None:
    stream = ToolCallStream()
    held = stream.feed("a <tool")
    assert held == [ContentDelta("a ")]
    assert stream.feed("s are here") == [ContentDelta("<tools are here")]
    assert stream.finish() == []


def test_lazy_guard_vets_the_text_completing_the_marker() -> None:
    heads = ('<tool_call>\n{"name": "get_weather", "arguments": ',)
    from server.engine.types import GrammarTrigger

    ok = LazyTriggerGuard(GrammarTrigger("<tool_call>", heads))
    assert all(ok.accepts(p) for p in [b"Hi ", b"<", b"tool", b"_call", b">\n{"])
    assert ok.triggered and ok.accepts(b"anything after the trigger")
    bad = LazyTriggerGuard(GrammarTrigger("<tool_call>", heads))
    assert bad.accepts(b"<tool_")
    assert not bad.accepts(b"call>\n\n")


def test_strict_call_problem_checks_only_strict_tools() -> None:
    from server.chat.tools.spec import ToolCall, strict_call_problem

    strict = ToolSpec(WEATHER.name, WEATHER.description, WEATHER.parameters, strict=True)
    bad = ToolCall("call_1", "get_weather", '{"unit": "c"}')  # city is required
    good = ToolCall("call_2", "get_weather", '{"city": "Oslo", "unit": "f"}')
    assert strict_call_problem([good], [strict]) is None
    problem = strict_call_problem([good, bad], [strict])
    assert problem is not None and "city" in problem
    assert strict_call_problem([bad], [WEATHER]) is None  # not strict: returned as generated


def test_a_strict_tool_with_an_unenforceable_keyword_is_refused() -> None:
    parameters = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    with pytest.raises(ToolSpecError) as info:
        check_tools([ToolSpec("count", "", parameters, strict=True)])
    assert info.value.param == "tools[0].function.parameters.properties.n.minimum"
    check_tools([ToolSpec("count", "", parameters)])  # not strict: fine
