"""GBNF grammars for JSON output, and the check every JSON answer passes before it is returned.

The grammars come from llama-cpp-python's port of llama.cpp's JSON-schema converter, with one
rule replaced: the port's string character rule admits control characters (a raw newline inside
a string: not JSON), where llama.cpp's own C++ converter excludes ``\\x00-\\x1F`` and ``\\x7F``.
``JsonConverter`` uses the C++ rule; the tool-call grammars use it too. The converter reports
problems with bare asserts and KeyErrors; they become ``InvalidRequestError``.

A grammar shapes the text, but not every JSON Schema keyword can be a grammar (``minimum``,
``multipleOf``, ``uniqueItems``, most ``format``s …). So the answer itself is parsed and
validated (``check_answer``) before it is returned as a success. With OpenAI's ``strict: true``
a schema that uses such a keyword is refused up front (``strict_violations``), so a strict
answer that ends with ``stop`` always validates.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
from llama_cpp.llama_grammar import JSON_GBNF, BuiltinRule, SchemaConverter

from server.engine.types import InvalidRequestError

# llama.cpp's json-schema-to-grammar.cpp: no raw control characters inside a string.
STRICT_CHAR = BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | [\\] (["\\/bfnrt] | "u" '
    r"[0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])",
    [],
)
_SCHEMA_ERRORS = (AssertionError, KeyError, ValueError, TypeError, IndexError, RecursionError)
# Keywords the grammar does not enforce: allowed without ``strict`` (the answer is checked after
# generation), refused with it, as OpenAI's strict mode refuses what it cannot guarantee.
UNENFORCED_KEYWORDS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "patternProperties",
        "propertyNames",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "if",
        "then",
        "else",
        "not",
        "minProperties",
        "maxProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
GRAMMAR_CACHE_SIZE = 256  # converted grammars kept (schemas, and sets of tools), least recent out
ENFORCED_FORMATS = frozenset({"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3"})


class JsonConverter(SchemaConverter):
    """llama-cpp-python's converter with llama.cpp's string character rule."""

    def __init__(self) -> None:
        super().__init__(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        return str(super()._add_primitive(name, STRICT_CHAR if name == "char" else rule))


def json_object_grammar() -> str:
    """GBNF for any JSON object (OpenAI ``response_format={"type": "json_object"}``)."""
    return JSON_GBNF


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF accepting exactly the JSON documents valid under ``schema``'s enforceable part."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            f"The JSON schema must be an object, got {type(schema).__name__}."
        )
    try:
        canonical = json.dumps(schema, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"The JSON schema is not serializable JSON: {exc}") from exc
    return _schema_grammar(canonical)


@functools.lru_cache(maxsize=GRAMMAR_CACHE_SIZE)
def _schema_grammar(canonical: str) -> str:
    """The conversion, memoized by the schema's canonical JSON text: agents send the same
    schema on every request, and a large one costs tens of milliseconds or more (optional
    properties make the converter's rules grow quadratically). Errors are not cached."""
    try:
        converter = JsonConverter()
        converter.visit(converter.resolve_refs(json.loads(canonical), "request"), "")
        return str(converter.format_grammar())
    except _SCHEMA_ERRORS as exc:
        detail = str(exc) or type(exc).__name__
        raise InvalidRequestError(
            f"Unsupported or invalid JSON schema ({detail}). Use standard JSON Schema keywords "
            "(type, properties, required, items, enum, const, anyOf, $ref to #/$defs)."
        ) from exc


def strict_violations(schema: Any, path: str = "schema") -> Iterator[str]:
    """Paths of the keywords in ``schema`` the grammar cannot guarantee (for ``strict``)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in UNENFORCED_KEYWORDS:
                yield f"{path}.{key}"
            elif key == "format" and value not in ENFORCED_FORMATS:
                yield f"{path}.format"
            elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for name, sub in value.items():
                    yield from strict_violations(sub, f"{path}.{key}.{name}")
            elif isinstance(value, dict | list):
                yield from strict_violations(value, f"{path}.{key}")
    elif isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from strict_violations(item, f"{path}[{index}]")


def check_answer(text: str, schema: dict[str, Any] | None) -> str | None:
    """Why ``text`` is not an acceptable JSON answer (not JSON; for ``json_object`` not an
    object; not valid under ``schema``), or None when it is."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"the answer is not JSON ({exc})"
    if schema is None:
        return None if isinstance(value, dict) else "the answer is not a JSON object"
    try:
        error = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(schema).iter_errors(value)
        )
    except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.RefResolutionError) as exc:
        return f"the schema cannot be checked ({exc.message if hasattr(exc, 'message') else exc})"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the answer"
    return f"{where}: {error.message}"
