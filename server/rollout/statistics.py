"""Champion/challenger: when live traffic says promote, roll back, or stop undecided.

Pure statistics, no I/O: the server (or a test with simulated users) feeds each arm's
outcomes — a request's error and time to first token, a response's 👍/👎 — and asks
:meth:`Rollout.decide`. It can ask after every request: the test is *sequential*.

**Why always-valid confidence sequences (mSPRT), not a fixed-sample test or a plain SPRT.**
A rollout is watched continuously and stopped as soon as the answer is clear; a fixed-sample
test checked after every request would promote a no-better challenger far more often than its
nominal α. Wald's SPRT fixes that but tests one simple alternative (one effect size chosen in
advance) for one metric. The mixture SPRT of Johari, Pekelis & Walsh ("Always valid inference",
2017; what Optimizely's stats engine runs) mixes the alternatives over a normal prior of scale
``tau``: its likelihood ratio Λₙ satisfies P(∃n: Λₙ ≥ 1/α) ≤ α under the null at *any*
stopping time, and inverting it gives a confidence sequence — an interval for the difference
that holds at every n simultaneously. Intervals compose naturally: "worse" is the lower bound
above 0, "better" the upper bound below 0, "no worse" the upper bound below a margin.

Each metric is a difference of two proportions, challenger − champion, with the normal
approximation (Agresti-style ``+1/+2`` smoothing keeps the variance positive at 0 errors):

* **👎 share** among rated responses — what the challenger should improve;
* **error rate** among requests (5xx, engine errors) — a guard;
* **slow share**: requests whose TTFT is above the champion's p95, measured once on the first
  ``ttft_warmup`` champion requests and then fixed. "Challenger p95 ≤ champion p95" is exactly
  "at most 5 % of challenger requests are slower than the champion's p95", a proportion, so
  p95 TTFT is tested with the same machinery (a quantile has no mean to test directly).

α is split evenly over the three metrics (Bonferroni), so P(any wrong decision) ≤ α overall.

**Decisions**, checked in this order once each arm has ``min_samples`` requests:

1. *rollback* when any metric is worse with confidence (lower bound > 0);
2. *promote* when the 👎 share is lower with confidence (upper bound < 0) and the guards are
   no worse than their margins (error rate upper bound < ``error_margin``, slow share upper
   bound < ``slow_margin``);
3. *undecided* once the challenger has ``max_samples`` requests: the rollout stops, the
   champion keeps serving;
4. otherwise *continue*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["continue", "promote", "rollback", "undecided"]
Variant = Literal["champion", "challenger"]
METRICS = ("thumbs_down", "error", "slow")


@dataclass(frozen=True)
class Policy:
    """The test's settings; the defaults are documented in docs/flywheel.md ("Rollout")."""

    alpha: float = 0.05  # P(a wrong promote or rollback), all metrics together
    tau: float = 0.1  # prior scale of the difference: effects of ~10 points are expected
    min_samples: int = 30  # requests per arm before any decision (the normal approximation)
    max_samples: int = 5000  # challenger requests after which the rollout stops undecided
    error_margin: float = 0.02  # "no worse": error rate at most 2 points above the champion's
    slow_margin: float = 0.05  # "no worse": at most 5 points more requests above champion p95
    ttft_quantile: float = 0.95
    ttft_warmup: int = 50  # champion requests whose TTFT fix the slow threshold
    # The slow threshold is the champion's quantile times (1 + this): 0.2 lets an adapter's
    # own cost make the challenger's p95 up to 20 % slower before it counts against it.
    ttft_tolerance: float = 0.0

    def __post_init__(self) -> None:
        floats = (self.alpha, self.tau, self.error_margin, self.slow_margin, self.ttft_tolerance)
        if not all(math.isfinite(value) for value in floats):
            raise ValueError("every rate, margin and scale must be a finite number")
        # Below these the interval's arithmetic underflows (tau² = 0, ln(1/alpha) = inf).
        if not 1e-6 <= self.alpha < 1 or not 1e-3 <= self.tau <= 10:
            raise ValueError("alpha must be in [1e-6, 1) and tau in [0.001, 10]")
        if not 1 <= self.min_samples <= self.max_samples:
            raise ValueError("need 1 <= min_samples <= max_samples")
        if not 0 < self.ttft_quantile < 1 or self.ttft_warmup < 1:
            raise ValueError("ttft_quantile must be in (0, 1), ttft_warmup >= 1")
        if self.ttft_tolerance < 0:
            raise ValueError("ttft_tolerance must be >= 0")


@dataclass(frozen=True)
class Interval:
    """An always-valid confidence interval for challenger − champion, and its figures."""

    estimate: float
    low: float
    high: float
    champion: tuple[int, int]  # (events, trials)
    challenger: tuple[int, int]


def confidence_sequence(
    champion: tuple[int, int], challenger: tuple[int, int], *, alpha: float, tau: float
) -> Interval:
    """The mSPRT confidence sequence for p_challenger − p_champion at level 1 − ``alpha``.

    With θ̂ the observed difference and V its variance, the normal-mixture likelihood ratio
    for θ₀ is sqrt(V / (V + τ²)) · exp(τ² (θ̂ − θ₀)² / (2 V (V + τ²))); the θ₀ it keeps below
    1/α form θ̂ ± sqrt(V (V + τ²) / τ² · (2 ln(1/α) + ln((V + τ²) / V))).
    """
    (x_a, n_a), (x_b, n_b) = champion, challenger
    if n_a == 0 or n_b == 0:
        return Interval(0.0, -1.0, 1.0, champion, challenger)
    p_a, p_b = x_a / n_a, x_b / n_b
    s_a, s_b = (x_a + 1) / (n_a + 2), (x_b + 1) / (n_b + 2)  # smoothed for the variance only
    variance = s_a * (1 - s_a) / n_a + s_b * (1 - s_b) / n_b
    t2 = tau * tau
    half = math.sqrt(
        variance
        * (variance + t2)
        / t2
        * (2 * math.log(1 / alpha) + math.log((variance + t2) / variance))
    )
    estimate = p_b - p_a
    if not math.isfinite(half):  # degenerate inputs: say nothing rather than fail
        return Interval(estimate, -1.0, 1.0, champion, challenger)
    return Interval(estimate, estimate - half, estimate + half, champion, challenger)


@dataclass
class Arm:
    """One variant's outcomes so far."""

    requests: int = 0
    errors: int = 0
    rated: int = 0
    thumbs_down: int = 0
    timed: int = 0  # requests with a TTFT after the slow threshold was fixed
    slow: int = 0


@dataclass(frozen=True)
class Decision:
    """What the rollout should do now, why, and the figures behind it (for the registry)."""

    verdict: Verdict
    reason: str
    intervals: dict[str, Interval]
    ttft_threshold_s: float | None
    requests: dict[str, int]


@dataclass
class Rollout:
    """A running comparison; feed it outcomes, ask it :meth:`decide`."""

    policy: Policy = field(default_factory=Policy)
    arms: dict[str, Arm] = field(default_factory=lambda: {"champion": Arm(), "challenger": Arm()})
    ttft_threshold_s: float | None = None
    _warmup: list[float] = field(default_factory=list)

    def observe(self, variant: Variant, *, error: bool, ttft_s: float | None = None) -> None:
        """One finished request: whether it failed and, when it generated, its TTFT."""
        arm = self.arms[variant]
        arm.requests += 1
        arm.errors += int(error)
        if ttft_s is None or error:
            return
        if self.ttft_threshold_s is None:
            if variant == "champion":  # the threshold is the champion's own p95
                self._warmup.append(ttft_s)
                if len(self._warmup) >= self.policy.ttft_warmup:
                    quantile = _quantile(self._warmup, self.policy.ttft_quantile)
                    self.ttft_threshold_s = quantile * (1 + self.policy.ttft_tolerance)
            return
        arm.timed += 1
        arm.slow += int(ttft_s > self.ttft_threshold_s)

    def rate(self, variant: Variant, *, thumbs_down: bool) -> None:
        """A user's 👍 (False) or 👎 (True) on one of ``variant``'s responses."""
        arm = self.arms[variant]
        arm.rated += 1
        arm.thumbs_down += int(thumbs_down)

    def intervals(self) -> dict[str, Interval]:
        """Each metric's confidence sequence, at α split over the metrics."""
        a, b = self.arms["champion"], self.arms["challenger"]
        alpha = self.policy.alpha / len(METRICS)
        counts = {
            "thumbs_down": ((a.thumbs_down, a.rated), (b.thumbs_down, b.rated)),
            "error": ((a.errors, a.requests), (b.errors, b.requests)),
            "slow": ((a.slow, a.timed), (b.slow, b.timed)),
        }
        return {
            name: confidence_sequence(champion, challenger, alpha=alpha, tau=self.policy.tau)
            for name, (champion, challenger) in counts.items()
        }

    def decide(self) -> Decision:
        """promote, rollback, undecided (at the maximum sample) or continue."""
        policy, a, b = self.policy, self.arms["champion"], self.arms["challenger"]
        intervals = self.intervals()
        requests = {"champion": a.requests, "challenger": b.requests}

        def decision(verdict: Verdict, reason: str) -> Decision:
            return Decision(verdict, reason, intervals, self.ttft_threshold_s, requests)

        if min(a.requests, b.requests) < policy.min_samples:
            return decision("continue", f"fewer than {policy.min_samples} requests on an arm")
        names = {"thumbs_down": "👎 share", "error": "error rate", "slow": "share above p95 TTFT"}
        for metric in METRICS:
            interval = intervals[metric]
            if interval.low > 0:
                return decision(
                    "rollback",
                    f"{names[metric]} is worse: challenger − champion in "
                    f"[{interval.low:+.3f}, {interval.high:+.3f}]",
                )
        down, error, slow = intervals["thumbs_down"], intervals["error"], intervals["slow"]
        better = down.high < 0
        no_worse = error.high < policy.error_margin and (
            self.ttft_threshold_s is not None and slow.high < policy.slow_margin
        )
        if better and no_worse:
            return decision(
                "promote",
                f"👎 share lower by {-down.estimate:.3f} (interval [{down.low:+.3f}, "
                f"{down.high:+.3f}]); errors and TTFT within their margins",
            )
        if b.requests >= policy.max_samples:
            return decision(
                "undecided", f"{policy.max_samples} challenger requests without a decision"
            )
        return decision("continue", "no interval is conclusive yet")


def _quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank, the value at or above it)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
