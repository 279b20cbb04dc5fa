"""Agents answer ``/v1/ask``: the protocol, the built-in RAG agent, and the user-class loader."""

from server.agents.loader import AgentLoadError, load_agent
from server.agents.rag_agent import RagAgent
from server.agents.types import (
    Agent,
    AgentContext,
    AgentError,
    Answer,
    AnswerEvent,
    AnswerTimings,
    Delta,
    Done,
    QuestionTooLongError,
    Retrieved,
    Source,
    answer_from_stream,
)

__all__ = [
    "Agent",
    "AgentContext",
    "AgentError",
    "AgentLoadError",
    "Answer",
    "AnswerEvent",
    "AnswerTimings",
    "Delta",
    "Done",
    "QuestionTooLongError",
    "RagAgent",
    "Retrieved",
    "Source",
    "answer_from_stream",
    "load_agent",
]
