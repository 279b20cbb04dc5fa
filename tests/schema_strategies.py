"""Hypothesis strategies for the bounded family of JSON schemas that agents send for structured
output and tool parameters: objects of string / integer / number / boolean / enum / array
properties, a subset of them required, ``additionalProperties: false``."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

NAMES = ("city", "country", "count", "score", "active", "tags", "color", "year", "note")

_SCALARS: list[st.SearchStrategy[dict[str, Any]]] = [
    st.just({"type": "string"}),
    st.just({"type": "integer"}),
    st.just({"type": "number"}),
    st.just({"type": "boolean"}),
    st.lists(
        st.sampled_from(["red", "green", "blue", "small", "large"]),
        min_size=1,
        max_size=3,
        unique=True,
    ).map(lambda values: {"enum": values}),
]
PROPERTY = st.one_of(
    *_SCALARS,
    st.tuples(st.sampled_from(["string", "integer"]), st.integers(1, 3)).map(
        lambda pair: {"type": "array", "items": {"type": pair[0]}, "maxItems": pair[1]}
    ),
)


@st.composite
def object_schemas(draw: st.DrawFn, max_properties: int = 4) -> dict[str, Any]:
    """An object schema from the bounded family."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=max_properties, unique=True))
    properties = {name: draw(PROPERTY) for name in names}
    required = [name for name in names if draw(st.booleans())]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _value(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "array":
        return st.lists(_value(schema["items"]), max_size=schema["maxItems"])
    return {
        "string": st.text(max_size=20),
        "integer": st.integers(-(10**6), 10**6),
        "number": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "boolean": st.booleans(),
    }[kind]


@st.composite
def instances(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """A value valid under ``schema`` (one of ``object_schemas``): every required property,
    any of the others. (hypothesis-jsonschema would do this, but its 0.23 release does not run
    on current hypothesis.)"""
    out: dict[str, Any] = {}
    for name, sub in schema["properties"].items():
        if name in schema["required"] or draw(st.booleans()):
            out[name] = draw(_value(sub))
    return out
