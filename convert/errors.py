"""The one error type of the conversion pipeline: a problem and the fix, shown as one line."""

from __future__ import annotations


class ConvertError(Exception):
    """A conversion cannot proceed; ``str()`` is one line naming the problem and the fix."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} — {fix}")


class QualityGateError(ConvertError):
    """The conversion finished but a quant lost more quality than allowed; outputs are kept."""
