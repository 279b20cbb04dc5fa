"""How the pipeline reports its steps: a small protocol the CLI implements with rich."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class StepHandle(Protocol):
    """Progress of one running step."""

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        """Move the step's bar (``total`` None keeps the current one)."""


class Reporter(Protocol):
    """Receives the pipeline's steps, their progress and their timings."""

    def step(self, name: str, total: float | None = None) -> AbstractContextManager[StepHandle]:
        """A step starts when the block is entered and ends when it exits."""

    def done(self, name: str, seconds: float) -> None:
        """A step finished after ``seconds``."""

    def message(self, text: str) -> None:
        """A line for the user (warnings such as fallback tensor counts)."""


class _NullHandle:
    def update(self, completed: float | None = None, total: float | None = None) -> None:
        return None


class SilentReporter:
    """A Reporter that shows nothing: for library use and tests."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @contextmanager
    def step(self, name: str, total: float | None = None) -> Iterator[StepHandle]:
        """Yield a handle that ignores updates."""
        yield _NullHandle()

    def done(self, name: str, seconds: float) -> None:
        """Ignore timings (the pipeline records them in the manifest anyway)."""

    def message(self, text: str) -> None:
        """Keep messages so callers can inspect them."""
        self.messages.append(text)


def quiet_transformers() -> None:
    """transformers' own tqdm bars would fight with the step display."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
