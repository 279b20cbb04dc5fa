"""Champion/challenger on live traffic: who gets which variant, what each arm did, and what
happens when the statistics (``server/rollout/statistics.py``) decide.

A rollout compares two variants of the served model — the champion, what requests for the
model get today (the base, or an adapter promoted earlier), and a challenger (a loaded LoRA
adapter). A share of the traffic goes to the challenger, *sticky*: the same key (or the same
end user of a key, OpenAI's ``user`` field) always lands on the same arm for the whole
rollout, so a conversation never switches variant halfway. Every finished request and every
👍/👎 on a response feeds its arm; after each, the sequential test is asked for a verdict:

* **promote**: the challenger becomes what requests for the model get (``default_adapter``);
* **rollback**: every request goes back to the champion;
* **undecided**: the maximum sample was reached; the champion keeps serving;
* an operator's **stop** ends it the same way as undecided.

The controller lives on the event loop (no locks) and does no I/O: ``on_end`` is told of each
ending (the server writes it to the registry and the log).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from server.rollout.statistics import Decision, Policy, Rollout, Variant

Sticky = Literal["key", "user"]
Status = Literal["running", "promoted", "rolled_back", "undecided", "stopped"]
_ENDINGS: dict[str, Status] = {
    "promote": "promoted",
    "rollback": "rolled_back",
    "undecided": "undecided",
}


class RolloutError(Exception):
    """A rollout cannot be started or stopped now; ``kind`` says why."""

    def __init__(self, kind: Literal["running", "none_running", "invalid"], message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class RolloutSpec:
    """What an operator asks for."""

    challenger: str  # a loaded adapter's name ("" = the base model)
    share: float = 0.5  # of the traffic to the challenger
    sticky: Sticky = "user"
    policy: Policy = field(default_factory=Policy)
    # Distinct users (or keys) each arm must have served before a promotion: a user's
    # requests are not independent trials, and a few heavy users are not the population.
    min_units: int = 5
    challenger_version: int | None = None  # registry versions, when the variants have one
    champion_version: int | None = None


@dataclass(frozen=True)
class Assignment:
    """What one request runs with."""

    adapter: str  # "" = the base model
    variant: Variant | None = None  # None: no rollout is running
    rollout_id: str | None = None
    unit: bytes = b""  # the sticky unit (user or key), hashed


@dataclass
class RolloutRun:
    """One rollout, running or ended."""

    id: str
    spec: RolloutSpec
    champion: str  # the adapter the champion serves ("" = the base model)
    started_by: str
    started_at: float = field(default_factory=time.time)
    statistics: Rollout = field(default_factory=Rollout)
    status: Status = "running"
    decision: Decision | None = None
    ended_at: float | None = None
    ended_by: str | None = None  # "rollout" (the statistics) or the admin key that stopped it
    units: dict[str, set[bytes]] = field(
        default_factory=lambda: {"champion": set(), "challenger": set()}
    )  # the sticky units (hashed) each arm has served

    def summary(self) -> dict[str, Any]:
        """Everything about it, JSON-ready: the API's answer and the registry's record."""
        decision = self.decision or self.statistics.decide()
        return {
            "id": self.id,
            "status": self.status,
            "champion": {"adapter": self.champion, "version": self.spec.champion_version},
            "challenger": {
                "adapter": self.spec.challenger,
                "version": self.spec.challenger_version,
            },
            "share": self.spec.share,
            "sticky": self.spec.sticky,
            "policy": asdict(self.spec.policy),
            "started_at": _iso(self.started_at),
            "started_by": self.started_by,
            "ended_at": None if self.ended_at is None else _iso(self.ended_at),
            "ended_by": self.ended_by,
            "verdict": decision.verdict,
            "reason": decision.reason,
            "ttft_threshold_s": decision.ttft_threshold_s,
            "arms": {
                name: {**asdict(arm), "units": len(self.units[name])}
                for name, arm in self.statistics.arms.items()
            },
            "min_units": self.spec.min_units,
            "intervals": {name: asdict(i) for name, i in decision.intervals.items()},
        }


class RolloutController:
    """The rollout of one server; see the module docstring."""

    def __init__(
        self,
        default_adapter: str = "",
        *,
        on_end: Callable[[RolloutRun], None] | None = None,
        remembered: int = 100_000,
    ) -> None:
        self.default_adapter = default_adapter  # what a request for the served model gets
        self.current: RolloutRun | None = None  # the running rollout, else the last one
        self.on_end = on_end
        self._responses: OrderedDict[str, tuple[str, Variant]] = OrderedDict()
        self._remembered = remembered

    @property
    def running(self) -> RolloutRun | None:
        current = self.current
        return current if current is not None and current.status == "running" else None

    def start(self, spec: RolloutSpec, *, by: str) -> RolloutRun:
        """Begin sending ``spec.share`` of the traffic to the challenger."""
        if (running := self.running) is not None:
            raise RolloutError("running", f"rollout {running.id} is still running; stop it first")
        if spec.challenger == self.default_adapter:
            raise RolloutError(
                "invalid", "the challenger is what requests get already (the champion)"
            )
        if not 0 < spec.share < 1:
            raise RolloutError("invalid", "share must be between 0 and 1 (exclusive)")
        self.current = RolloutRun(
            id=f"ro-{secrets.token_hex(6)}",
            spec=spec,
            champion=self.default_adapter,
            started_by=by,
            statistics=Rollout(spec.policy),
        )
        return self.current

    def stop(self, *, by: str) -> RolloutRun:
        """End the running rollout without a decision: the champion keeps serving."""
        run = self.running
        if run is None:
            raise RolloutError("none_running", "no rollout is running")
        self._end(run, "stopped", by)
        return run

    def uses(self, adapter: str) -> bool:
        """Whether ``adapter`` serves an arm of the running rollout (it must stay loaded)."""
        run = self.running
        return run is not None and adapter in (run.champion, run.spec.challenger)

    def assign(self, key_id: str, user: str | None) -> Assignment:
        """The variant of a request for the served model (not one naming an adapter)."""
        run = self.running
        if run is None:
            return Assignment(self.default_adapter)
        who = key_id if run.spec.sticky == "key" else f"{key_id}\x00{user or ''}"
        digest = hashlib.sha256(f"{run.id}\x00{who}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 < run.spec.share:
            return Assignment(run.spec.challenger, "challenger", run.id, digest[8:24])
        return Assignment(run.champion, "champion", run.id, digest[8:24])

    def finished(
        self,
        assignment: Assignment,
        response_id: str | None,
        *,
        error: bool,
        ttft_s: float | None = None,
    ) -> None:
        """A request of ``assignment`` ended (an error, or an answer after ``ttft_s``)."""
        run = self.running
        variant = assignment.variant
        if run is None or variant is None or assignment.rollout_id != run.id:
            return  # no rollout, or one that ended while this request ran
        run.statistics.observe(variant, error=error, ttft_s=ttft_s)
        run.units[variant].add(assignment.unit)
        if response_id is not None and not error:
            self._responses[response_id] = (run.id, variant)
            while len(self._responses) > self._remembered:
                self._responses.popitem(last=False)
        self._check(run)

    def rated(self, response_id: str, *, thumbs_down: bool) -> Variant | None:
        """A first rating of a response; the arm it counted for, or None (not in a rollout)."""
        run = self.running
        found = self._responses.pop(response_id, None)
        if run is None or found is None or found[0] != run.id:
            return None
        run.statistics.rate(found[1], thumbs_down=thumbs_down)
        self._check(run)
        return found[1]

    def _check(self, run: RolloutRun) -> None:
        decision = run.statistics.decide()
        policy, arms = run.spec.policy, run.statistics.arms
        if decision.verdict == "promote" and min(map(len, run.units.values())) < run.spec.min_units:
            decision = replace(
                decision,
                verdict="continue",
                reason=f"better, but an arm has served fewer than {run.spec.min_units} users",
            )
        total = sum(arm.requests for arm in arms.values())
        if decision.verdict == "continue" and total >= policy.max_samples / run.spec.share:
            # The challenger should have had max_samples by now: its units are too few.
            decision = replace(
                decision, verdict="undecided", reason=f"{total} requests without a decision"
            )
        if decision.verdict == "continue":
            return
        run.decision = decision
        if decision.verdict == "promote":
            self.default_adapter = run.spec.challenger
        self._end(run, _ENDINGS[decision.verdict], "rollout")

    def _end(self, run: RolloutRun, status: Status, by: str) -> None:
        run.status, run.ended_at, run.ended_by = status, time.time(), by
        if run.decision is None:
            run.decision = run.statistics.decide()
        self._responses.clear()
        if self.on_end is not None:
            self.on_end(run)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
