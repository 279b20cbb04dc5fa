"""The loss curve of a training run as a PNG (matplotlib, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def save_loss_curve(
    losses: Sequence[float], path: Path, title: str, drift: Sequence[float] = ()
) -> Path:
    """Plot loss per step (a moving average when there are enough steps, and the replay's KL
    drift when there was a replay) into ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    steps = list(range(1, len(losses) + 1))
    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=110)
    try:
        axes.plot(steps, losses, marker="o", markersize=2.5, linewidth=1, label="loss")
        window = max(2, len(losses) // 8)
        if len(losses) >= 2 * window:
            smooth = [
                sum(losses[i - window + 1 : i + 1]) / window for i in range(window - 1, len(losses))
            ]
            axes.plot(steps[window - 1 :], smooth, linewidth=2, label=f"mean of {window}")
        if drift:
            axes.plot(steps[: len(drift)], drift, linewidth=1, label="replay KL drift")
        axes.set_xlabel("step")
        axes.set_ylabel("cross-entropy (answer tokens)")
        axes.set_title(title, fontsize=9)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
