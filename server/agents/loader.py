"""Load the agent named by ``GGSERVE_AGENT`` (``package.module:Class``), or the built-in one."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, cast

from server.agents.rag_agent import RagAgent
from server.agents.types import Agent


class AgentLoadError(Exception):
    """The configured agent cannot be used; the message says why and what to check."""


def load_agent(spec: str | None) -> Agent:
    """An instance of the class named by ``spec``; :class:`RagAgent` when ``spec`` is empty.

    The class is instantiated without arguments; it receives settings, retriever and the
    engine through the ``AgentContext`` of each call.
    """
    if not spec or not spec.strip():
        return RagAgent()
    module_name, sep, class_name = spec.strip().partition(":")
    if not sep or not module_name or not class_name or not class_name.isidentifier():
        raise AgentLoadError(
            f"GGSERVE_AGENT must look like 'package.module:ClassName', got {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise AgentLoadError(
            f"cannot import module '{module_name}' for GGSERVE_AGENT={spec}: {exc}. "
            "Install the package or add its folder to PYTHONPATH."
        ) from exc
    except Exception as exc:  # the user's module failed while importing: say how
        raise AgentLoadError(
            f"importing '{module_name}' for GGSERVE_AGENT={spec} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    cls: Any = getattr(module, class_name, None)
    if cls is None:
        public = sorted(n for n, v in vars(module).items() if inspect.isclass(v))
        raise AgentLoadError(
            f"module '{module_name}' has no class '{class_name}' (GGSERVE_AGENT={spec}); "
            f"classes there: {', '.join(public) or 'none'}"
        )
    if not inspect.isclass(cls):
        raise AgentLoadError(f"GGSERVE_AGENT={spec}: '{class_name}' is not a class")
    for method in ("answer", "answer_stream"):
        if not callable(getattr(cls, method, None)):
            raise AgentLoadError(
                f"GGSERVE_AGENT={spec}: {class_name} has no '{method}' method; an agent "
                "needs 'async def answer(question, ctx)' and 'answer_stream(question, ctx)' "
                "(see docs/rag.md)"
            )
    if not inspect.iscoroutinefunction(getattr(cls, "answer", None)):
        raise AgentLoadError(
            f"GGSERVE_AGENT={spec}: {class_name}.answer must be 'async def answer(question, ctx)'"
        )
    try:
        agent = cast(Agent, cls())
    except Exception as exc:
        raise AgentLoadError(
            f"GGSERVE_AGENT={spec}: {class_name}() failed: {type(exc).__name__}: {exc}. "
            "Agent classes are created without arguments."
        ) from exc
    return agent
