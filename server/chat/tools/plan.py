"""One decision per chat request: how tools reach the prompt and how the output is constrained."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.chat.tools.formats import GENERIC, ToolFormat, detect_format
from server.chat.tools.history import check_tool_history
from server.chat.tools.render import prepare_chat, template_shows_tools
from server.chat.tools.spec import ToolChoice, ToolSpec, check_tools, resolve_choice
from server.engine.types import GrammarTrigger


@dataclass(frozen=True)
class ToolPlan:
    """What a chat request with tools becomes: template input plus generation constraints."""

    messages: list[dict[str, Any]]
    template_vars: dict[str, Any]
    grammar: str | None  # GBNF; lazy when ``trigger`` is set
    trigger: GrammarTrigger | None
    parse_calls: bool  # read tool calls out of the output
    # The start of a forced call, put in the prompt after the generation prompt instead of
    # being generated; the output is read as if the model had written it.
    prefill: str = ""
    fmt: ToolFormat = field(default_factory=lambda: GENERIC)  # how calls are written and read


def plan_tools(
    messages: Sequence[Mapping[str, Any]],
    tools: list[ToolSpec],
    choice: ToolChoice,
    *,
    parallel: bool,
    template_source: str,
) -> ToolPlan:
    """Validate tools and history, render them, and pick the grammar for ``choice``.

    The call format is the model family's, detected from its chat template (``formats``).
    ``required`` and a named function constrain the output from its first token, so it is
    always a well-formed call whose arguments match the schema (one call for a named
    function; one or more with ``parallel`` for ``required``, where the family allows it); the
    part of the call that is known (the wrapper, and a named function's name) goes into the
    prompt as ``prefill``. ``auto`` constrains lazily, once the model writes the family's call
    marker. ``none`` leaves tools out of the prompt.
    """
    check_tools(tools)
    check_tool_history(messages)
    fmt = detect_format(template_source)
    usable = resolve_choice(tools, choice) if tools else []
    shown = tools if choice != "none" else []
    rendered, template_vars = prepare_chat(
        messages, shown, fmt=fmt, shows_tools=template_shows_tools(template_source)
    )
    if not usable:
        return ToolPlan(rendered, template_vars, None, None, parse_calls=False, fmt=fmt)
    if choice == "auto":
        grammar = fmt.grammar(usable, parallel=parallel)
        return ToolPlan(
            rendered, template_vars, grammar, fmt.trigger(usable), parse_calls=True, fmt=fmt
        )
    # Forced: what is known is not generated. ``required`` knows the call opens, a named
    # choice knows the name too; the grammar covers the rest.
    prefill = fmt.prefill(usable, named=choice != "required")
    grammar = fmt.grammar(usable, parallel=parallel and choice == "required", prefill=prefill)
    return ToolPlan(
        rendered, template_vars, grammar, None, parse_calls=True, prefill=prefill, fmt=fmt
    )
