"""Drift settings as one small value, built from :class:`server.settings.Settings`."""

from __future__ import annotations

from dataclasses import dataclass

from server.drift.report import SIGNALS


@dataclass(frozen=True)
class DriftConfig:
    """Window sizes, the minimum sample for a verdict, the test budget and the schedule."""

    reference_size: int = 500
    window_size: int = 500
    min_samples: int = 200
    min_feedback: int = 50
    permutations: int = 500
    alpha: float = 0.05  # family-wise: shared by every signal with a verdict (Bonferroni)
    interval_s: float = 300.0
    psi_bins: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_samples < 2 or self.min_feedback < 2:
            raise ValueError("the minimum samples must be at least 2")
        if self.min_samples > min(self.reference_size, self.window_size):
            raise ValueError(
                f"min_samples ({self.min_samples}) cannot exceed the window sizes "
                f"(reference {self.reference_size}, current {self.window_size}): "
                "no verdict could ever be reached"
            )
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must be between 0 and 1")
        if self.interval_s <= 0 or self.psi_bins < 2:
            raise ValueError("interval_s must be positive and psi_bins at least 2")
        # The smallest permutation p-value is 1/(permutations+1); it must be able to pass the
        # per-signal threshold alpha/len(SIGNALS), or the embedding test could never flag.
        needed = int(len(SIGNALS) / self.alpha)
        if self.permutations < needed:
            raise ValueError(
                f"permutations ({self.permutations}) must be at least {needed} at alpha "
                f"{self.alpha}: fewer can never reach a p-value below alpha/{len(SIGNALS)}"
            )
