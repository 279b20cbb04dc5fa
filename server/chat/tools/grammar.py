"""The GBNF grammar of a tool call, built from the tools' JSON schemas, in a family's format.

Each call is fixed to its family's canonical text (for Hermes/Qwen: ``<tool_call>\\n{"name":
"<name>", "arguments": <object>}\\n</tool_call>``), with ``<object>`` constrained by that tool's
parameter schema (through ``JsonConverter``: llama-cpp-python's JSON-schema converter with
llama.cpp's string rule). ``required`` / a named tool use the grammar from the first token;
``auto`` uses it lazily, from the moment the model writes the family's marker, so a plain text
answer is never constrained. The grammar itself is built by ``ToolFormat.grammar``.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.chat.tools.formats import HERMES, ToolFormat
from server.chat.tools.spec import ToolSpec


def call_head(tool: ToolSpec, fmt: ToolFormat = HERMES) -> str:
    """The text of a call to ``tool`` up to its arguments object (after the call wrapper)."""
    return fmt.head(tool)


def tool_call_grammar(
    tools: Sequence[ToolSpec], *, parallel: bool, prefill: str = "", fmt: ToolFormat = HERMES
) -> str:
    """GBNF for one call (or, with ``parallel``, one or more calls) to any of ``tools``.

    ``prefill`` is the start of the first call, already written into the prompt (a forced
    call); the grammar then covers only the rest of that call, so the budget goes to what is
    unknown. Raises ``ToolSpecError`` naming the tool whose schema cannot become a grammar.
    """
    return fmt.grammar(tools, parallel=parallel, prefill=prefill)
