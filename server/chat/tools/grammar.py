"""The GBNF grammar of a tool call, built from the tools' JSON schemas.

Each call is fixed to the canonical text ``{"name": "<name>", "arguments": <object>}`` between
the call markers, with ``<object>`` constrained by that tool's parameter schema (through
``JsonConverter``: llama-cpp-python's JSON-schema converter with llama.cpp's string rule).
``required`` / a named tool use the grammar from the first token; ``auto`` uses it lazily, from
the moment the model writes the opening marker (``TRIGGER_PATTERN``), so a plain text answer is
never constrained.
"""

from __future__ import annotations

import json
import re
from typing import Any

from server.chat.json_grammar import JsonConverter
from server.chat.tools.spec import CALL_CLOSE, CALL_OPEN, ToolSpec, ToolSpecError

# llama.cpp's lazy grammar matches the whole text generated so far against this pattern; the
# grammar is then fed the text from the first capture group on, so the marker is part of it.
TRIGGER_PATTERN = r"[\s\S]*?(" + re.escape(CALL_OPEN) + r")[\s\S]*"

_SCHEMA_ERRORS = (AssertionError, KeyError, ValueError, TypeError, IndexError, RecursionError)


def _literal(text: str) -> str:
    """A GBNF string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def call_head(tool: ToolSpec) -> str:
    """The text of a call to ``tool`` up to its arguments object."""
    return '{"name": ' + json.dumps(tool.name) + ', "arguments": '


def tool_call_grammar(tools: list[ToolSpec], *, parallel: bool, prefill: str = "") -> str:
    """GBNF for one call (or, with ``parallel``, one or more calls) to any of ``tools``.

    ``prefill`` is the start of the first call, already written into the prompt (a forced
    call: ``<tool_call>\n{"name": "`` for ``required``, up to the arguments for a named tool);
    the grammar then covers only the rest of that call, so the budget goes to what is unknown.
    Raises ``ToolSpecError`` naming the tool whose schema cannot become a grammar.
    """
    opening = CALL_OPEN + "\n"
    if prefill and not prefill.startswith(opening):
        raise ValueError(f"a call prefill starts with {opening!r}")
    known = prefill[len(opening) :]
    if not tools:
        raise ValueError("tool_call_grammar needs at least one tool")
    converter = JsonConverter()
    alternatives: list[str] = []
    firsts: list[str] = []  # the rest of the first call, after the prefill
    for index, tool in enumerate(tools):
        try:
            # Round-trip through JSON: the converter rewrites $refs in place, and the schema
            # must be plain JSON (no NaN, no non-string keys) to be shown to the model anyway.
            schema: dict[str, Any] = json.loads(json.dumps(tool.parameters, allow_nan=False))
            resolved = converter.resolve_refs(schema, f"tool{index}")
            arguments = converter.visit(resolved, f"{tool.name}-arguments")
        except _SCHEMA_ERRORS as exc:
            detail = str(exc) or type(exc).__name__
            raise ToolSpecError(
                f"Tool {tool.name!r}: its parameters schema cannot be turned into a grammar "
                f"({detail}). Use standard JSON Schema keywords (type, properties, required, "
                "items, enum, const, anyOf, $ref to #/$defs).",
                f"tools[{index}].function.parameters",
            ) from exc
        head = call_head(tool)
        alternatives.append(
            converter._add_rule(f"{tool.name}-call", f'{_literal(head)} {arguments} "}}"')
        )
        if head.startswith(known):
            rest = head[len(known) :]
            firsts.append(f'{_literal(rest) if rest else ""} {arguments} "}}"'.strip())
    if not firsts:
        raise ValueError(f"no tool's call starts with the prefill {prefill!r}")
    rules = converter.format_grammar()
    close = _literal(chr(10) + CALL_CLOSE)
    lines = [f"tool-call ::= {_literal(opening)} ( {' | '.join(alternatives)} ) {close}", rules]
    first = "tool-call"
    if prefill:
        first = "first-call"
        lines.insert(0, f"first-call ::= ( {' | '.join(firsts)} ) {close}")
    root = f'root ::= {first} ( "\\n" tool-call )*' if parallel else f"root ::= {first}"
    return "\n".join((root, *lines))
