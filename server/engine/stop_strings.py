"""Stop strings on a text stream: never emit a stop string, never emit text past it.

Text that might be the beginning of a stop string is held back until the next pieces prove it
is not (then it is released) or complete the stop string (then generation stops and the held
text is dropped).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StopCheck:
    """Result of feeding text: what may be sent now, and whether a stop string was hit."""

    text: str
    stopped: bool


class StopStringMatcher:
    """Streams text through, cutting it at the first occurrence of any stop string."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> StopCheck:
        """Add ``text``; returns the part safe to emit now."""
        if self.stopped:
            return StopCheck("", True)
        if not self._stops:
            return StopCheck(text, False)
        buffer = self._held + text
        first_hit = min(
            (index for index in (buffer.find(s) for s in self._stops) if index >= 0),
            default=-1,
        )
        if first_hit >= 0:
            self.stopped = True
            self._held = ""
            return StopCheck(buffer[:first_hit], True)
        keep = self._longest_partial_stop_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return StopCheck(buffer[: len(buffer) - keep], False)

    def flush(self) -> str:
        """End of stream without a stop: release what was held back."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_partial_stop_suffix(self, buffer: str) -> int:
        """Length of the longest suffix of ``buffer`` that is a proper prefix of a stop string."""
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best
