"""The outcome of one drift evaluation: a row per signal, and an overall verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

SIGNALS = (
    "query_embedding",
    "top1_score",
    "no_context",
    "answer_tokens",
    "refusal",
    "finish_length",
    "negative_feedback",
)


@dataclass(frozen=True)
class SignalReport:
    """One signal, reference vs current.

    ``drifted`` is None when either window holds fewer than the minimum sample (``note``
    says so): a verdict on a handful of requests would be noise.
    """

    name: str
    test: str  # "mmd_permutation", "ks", "two_proportion"
    reference_n: int
    current_n: int
    reference_value: float | None  # mean or rate; None for embeddings
    current_value: float | None
    statistic: float | None
    p_value: float | None
    drifted: bool | None
    psi: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class DriftReport:
    """Every signal of one evaluation.

    ``p_threshold`` is ``alpha`` divided by the number of signals that reached a verdict
    (Bonferroni), so the chance that *any* signal flags when nothing changed stays ≤ alpha.
    """

    evaluated_at: float
    elapsed_s: float
    alpha: float
    p_threshold: float | None
    min_samples: int
    reference_size: int
    window_size: int
    reference_source: str  # "traffic" or the reference file's path
    reference_frozen: bool
    signals: list[SignalReport] = field(default_factory=list)

    @property
    def drifted(self) -> bool | None:
        """True if any signal flagged; None if none could reach a verdict."""
        verdicts = [s.drifted for s in self.signals if s.drifted is not None]
        if not verdicts:
            return None
        return any(verdicts)

    def signal(self, name: str) -> SignalReport:
        """The row of ``name``; KeyError if this report has none."""
        for s in self.signals:
            if s.name == name:
                return s
        raise KeyError(name)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (what ``GET /admin/drift`` returns)."""
        out = asdict(self)
        out["drifted"] = self.drifted
        return out
