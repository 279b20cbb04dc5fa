"""GBNF grammars for JSON output, built with llama-cpp-python's JSON-schema converter.

The converter (a port of llama.cpp's json_schema_to_grammar.py) reports problems with bare
asserts and KeyErrors; they are turned into ``InvalidRequestError`` naming the schema problem.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from server.engine.types import InvalidRequestError


def json_object_grammar() -> str:
    """GBNF for any JSON object (OpenAI ``response_format={"type": "json_object"}``)."""
    return JSON_GBNF


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF accepting exactly the JSON documents valid under ``schema``."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(
            f"The JSON schema must be an object, got {type(schema).__name__}."
        )
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"The JSON schema is not serializable JSON: {exc}") from exc
    try:
        return json_schema_to_gbnf(text)
    except (AssertionError, KeyError, ValueError, TypeError, IndexError, RecursionError) as exc:
        detail = str(exc) or type(exc).__name__
        raise InvalidRequestError(
            f"Unsupported or invalid JSON schema ({detail}). Use standard JSON Schema keywords "
            "(type, properties, required, items, enum, const, anyOf, $ref to #/$defs)."
        ) from exc
