"""Property: any arguments valid under a tool's schema survive every family's call format,
read whole or streamed in arbitrary pieces (strings with quotes, braces, escapes, any text)."""

from __future__ import annotations

import itertools
import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.chat.tools.formats import REGISTRY, format_named
from server.chat.tools.parser import ArgumentsDelta, CallStart, ToolCallStream, parse_output
from tests.schema_strategies import instances, object_schemas


@st.composite
def arguments(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = draw(object_schemas())
    value = draw(instances(schema))
    jsonschema.validate(value, schema)  # the strategy itself stays honest
    return schema, value


@pytest.mark.parametrize("name", [family.name for family in REGISTRY])
@settings(max_examples=40, derandomize=True, deadline=None)
@given(case=arguments(), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_valid_arguments_round_trip_through_the_family_format(
    name: str, case: tuple[dict[str, Any], dict[str, Any]], cuts: list[int]
) -> None:
    _, value = case
    fmt = format_named(name)
    text = "Calling now.\n" + fmt.calls_text(
        [("fill_record", json.dumps(value, ensure_ascii=False))]
    )
    parsed = parse_output(text, fmt=fmt)
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [("fill_record", value)]
    stream = ToolCallStream(fmt)
    items = []
    bounds = sorted({min(cut, len(text)) for cut in cuts} | {0, len(text)})
    for start, end in itertools.pairwise(bounds):
        items += stream.feed(text[start:end])
    items += stream.finish()
    assert [i.name for i in items if isinstance(i, CallStart)] == ["fill_record"]
    streamed = "".join(i.text for i in items if isinstance(i, ArgumentsDelta))
    assert json.loads(streamed) == value
