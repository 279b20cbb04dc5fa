"""Drift detector, measured: power on topic shifts, false alarms on random splits, cost.

Questions come from ``bench/harness/drift_questions.py`` (reference topics: cooking, gardening,
travel; shifted: networking, finance, cars) and are embedded with the real embedder. Every
evaluation is the server's own ``server.drift.windows.evaluate`` at the default settings,
with synthetic answer outputs drawn from one distribution in both windows, so only the
questions differ and the Bonferroni threshold is the one the server uses (6 signals).

    flock /tmp/ggserve-heavy.lock python -m bench drift \
        [--embedder models/all-MiniLM-L6-v2] [--splits 100] [--trials 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.harness import drift_questions as dq
from bench.harness.server import ROOT
from server.drift.config import DriftConfig
from server.drift.observation import Observation
from server.drift.windows import WindowSample, evaluate
from server.rag.embedder import Embedder

DEFAULT = DriftConfig()
SHARES = (1.0, 0.5, 0.3, 0.2, 0.1)
SIZES = (25, 50, 100, 200, 300, 500)


class Cache:
    """Each distinct question is embedded once for the whole benchmark."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.rows: dict[str, np.ndarray] = {}

    def vectors(self, texts: list[str]) -> np.ndarray:
        new = sorted({t for t in texts if t not in self.rows})
        if new:
            for text, row in zip(new, self.embedder.embed(new), strict=True):
                self.rows[text] = row
        return np.vstack([self.rows[t] for t in texts])


def outputs(texts: list[str], rng: np.random.Generator) -> list[Observation]:
    """Answer-side fields from one fixed distribution (so they never differ by design)."""
    out = []
    for i, text in enumerate(texts):
        no_context = bool(rng.random() < 0.1)
        out.append(
            Observation(
                at=float(i),
                route="ask",
                query=text,
                finish_reason="no_context" if no_context else "stop",
                answer_tokens=0 if no_context else int(rng.poisson(80)),
                top_score=float(rng.normal(0.6, 0.08)),
                no_context=no_context,
            )
        )
    return out


def sample(cache: Cache, texts: list[str], rng: np.random.Generator) -> WindowSample:
    return WindowSample(outputs(texts, rng), cache.vectors(texts))


def topic_shift(cache: Cache, trials: int) -> dict[str, object]:
    """Reference topics vs shifted topics at the default windows (500 / 500)."""
    flagged, p_values, stats = 0, [], []
    for t in range(trials):
        rng = np.random.default_rng(t)
        ref = dq.generate(dq.REFERENCE_TOPICS, DEFAULT.reference_size, seed=1000 + t)
        cur = dq.generate(dq.SHIFTED_TOPICS, DEFAULT.window_size, seed=2000 + t)
        report = evaluate(
            sample(cache, ref, rng), sample(cache, cur, rng), replace(DEFAULT, seed=t)
        )
        signal = report.signal("query_embedding")
        flagged += bool(signal.drifted)
        p_values.append(signal.p_value)
        stats.append(signal.statistic)
    return {
        "trials": trials,
        "flagged": flagged,
        "max_p_value": max(p for p in p_values if p is not None),
        "mean_mmd2": float(np.mean([s for s in stats if s is not None])),
    }


def random_splits(cache: Cache, splits: int) -> dict[str, object]:
    """One pool of reference-topic questions split at random into two windows, ``splits``
    times: any flag is a false alarm."""
    pool = dq.generate(dq.REFERENCE_TOPICS, DEFAULT.reference_size + DEFAULT.window_size, 7)
    embedding_flags = overall_flags = 0
    p_values = []
    mmd = []
    for s in range(splits):
        rng = np.random.default_rng(10_000 + s)
        order = rng.permutation(len(pool))
        ref = [pool[i] for i in order[: DEFAULT.reference_size]]
        cur = [pool[i] for i in order[DEFAULT.reference_size :]]
        report = evaluate(
            sample(cache, ref, rng), sample(cache, cur, rng), replace(DEFAULT, seed=s)
        )
        signal = report.signal("query_embedding")
        embedding_flags += bool(signal.drifted)
        overall_flags += bool(report.drifted)
        p_values.append(signal.p_value)
        mmd.append(signal.statistic)
    return {
        "splits": splits,
        "embedding_false_alarms": embedding_flags,
        "embedding_false_alarm_rate": embedding_flags / splits,
        "overall_false_alarms": overall_flags,
        "overall_false_alarm_rate": overall_flags / splits,
        "share_p_below_0.05": float(np.mean([p is not None and p < 0.05 for p in p_values])),
        "mean_mmd2": float(np.mean([m for m in mmd if m is not None])),
    }


def samples_needed(cache: Cache, trials: int) -> dict[str, object]:
    """Detection rate of the embedding signal for a share of questions on new topics, by
    window size (both windows the same size, the minimum sample lowered to match)."""
    grid: dict[str, dict[str, float]] = {}
    needed: dict[str, int | None] = {}
    for share in SHARES:
        rates: dict[str, float] = {}
        first: int | None = None
        for n in SIZES:
            config = replace(DEFAULT, reference_size=n, window_size=n, min_samples=n)
            hits = 0
            for t in range(trials):
                rng = np.random.default_rng(t)
                ref = dq.generate(dq.REFERENCE_TOPICS, n, seed=30_000 + t)
                cur = dq.mixture(dq.REFERENCE_TOPICS, dq.SHIFTED_TOPICS[:1], share, n, 40_000 + t)
                report = evaluate(
                    sample(cache, ref, rng), sample(cache, cur, rng), replace(config, seed=t)
                )
                hits += bool(report.signal("query_embedding").drifted)
            rates[str(n)] = hits / trials
            if first is None and hits / trials >= 0.8:
                first = n
        grid[f"{share:.0%}"] = rates
        needed[f"{share:.0%}"] = first
    return {
        "trials": trials,
        "new_topic": dq.SHIFTED_TOPICS[0],
        "detection_rate": grid,
        "samples_for_80pct": needed,
    }


def cost(cache: Cache, embedder: Embedder, repeats: int) -> dict[str, object]:
    """Wall and CPU seconds of one evaluation at the default windows, and of embedding one
    window of new questions (what the background task does per run at full turnover)."""
    rng = np.random.default_rng(0)
    ref = sample(cache, dq.generate(dq.REFERENCE_TOPICS, DEFAULT.reference_size, 50), rng)
    cur = sample(cache, dq.generate(dq.SHIFTED_TOPICS, DEFAULT.window_size, 51), rng)
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        evaluate(ref, cur, DEFAULT)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    fresh = [f"{q} (#{i})" for i, q in enumerate(dq.generate(dq.SHIFTED_TOPICS, 500, 52))]
    w, c = time.perf_counter(), time.process_time()
    embedder.embed(fresh)
    embed_wall, embed_cpu = time.perf_counter() - w, time.process_time() - c
    return {
        "reference_size": DEFAULT.reference_size,
        "window_size": DEFAULT.window_size,
        "permutations": DEFAULT.permutations,
        "evaluate_wall_s_median": float(np.median(walls)),
        "evaluate_cpu_s_median": float(np.median(cpus)),
        "embed_500_wall_s": embed_wall,
        "embed_500_cpu_s": embed_cpu,
    }


def markdown(result: dict) -> str:
    """The figures as the Markdown tables docs/observability.md shows."""
    cost, shift, null, power = (
        result["cost"],
        result["topic_shift"],
        result["random_splits"],
        result["samples_needed"],
    )
    lines = [
        f"Machine: {result['machine']}; load average before {result['load_average_before']}, "
        f"after {result['load_average_after']}; embedder {result['embedder']}; "
        f"bench {result['bench_wall_s']:.0f} s.",
        "",
        "| measure | result |",
        "|---|---|",
        f"| topic shift (3 topics → 3 others), 500 vs 500, {shift['trials']} draws | "
        f"flagged {shift['flagged']}/{shift['trials']}, largest p {shift['max_p_value']:.4f}, "
        f"mean MMD² {shift['mean_mmd2']:.4f} |",
        f"| random splits of one set, 500 vs 500, {null['splits']} splits | embedding test "
        f"flagged {null['embedding_false_alarms']} ({null['embedding_false_alarm_rate']:.1%}); "
        f"any signal {null['overall_false_alarms']} ({null['overall_false_alarm_rate']:.1%}); "
        f"p < 0.05 in {null['share_p_below_0.05']:.1%}; mean MMD² {null['mean_mmd2']:.5f} |",
        f"| one evaluation at the defaults (500 + 500, {cost['permutations']} permutations) | "
        f"{cost['evaluate_wall_s_median'] * 1000:.0f} ms wall, "
        f"{cost['evaluate_cpu_s_median'] * 1000:.0f} ms CPU (median of 5) |",
        f"| embedding 500 new questions (the background run at full turnover) | "
        f"{cost['embed_500_wall_s']:.1f} s wall, {cost['embed_500_cpu_s']:.1f} s CPU |",
        "",
        f"Detection rate of the embedding test ({power['trials']} draws per cell) when a share "
        f"of the current window asks about a new topic ({power['new_topic']}):",
        "",
        "| share on the new topic | " + " | ".join(f"n={n}" for n in SIZES) + " | n for ≥ 80 % |",
        "|---" * (len(SIZES) + 2) + "|",
    ]
    for share, rates in power["detection_rate"].items():
        needed = power["samples_for_80pct"][share]
        cells = " | ".join(f"{rates[str(n)]:.0%}" for n in SIZES)
        lines.append(f"| {share} | {cells} | {needed if needed is not None else '> 500'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--embedder", type=Path, default=ROOT / "models" / "all-MiniLM-L6-v2")
    parser.add_argument("--splits", type=int, default=100)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "drift.json")
    parser.add_argument("--markdown", type=Path, help="Only print the tables of a result file.")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text())))
        return

    embedder = Embedder(args.embedder)
    cache = Cache(embedder)
    started = time.perf_counter()
    result: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": os.getloadavg(),
        "embedder": args.embedder.name,
        "defaults": {
            "reference_size": DEFAULT.reference_size,
            "window_size": DEFAULT.window_size,
            "min_samples": DEFAULT.min_samples,
            "permutations": DEFAULT.permutations,
            "alpha": DEFAULT.alpha,
        },
    }
    result["cost"] = cost(cache, embedder, repeats=5)
    print("cost", json.dumps(result["cost"]), flush=True)
    result["topic_shift"] = topic_shift(cache, trials=10)
    print("topic_shift", json.dumps(result["topic_shift"]), flush=True)
    result["random_splits"] = random_splits(cache, args.splits)
    print("random_splits", json.dumps(result["random_splits"]), flush=True)
    result["samples_needed"] = samples_needed(cache, args.trials)
    print("samples_needed", json.dumps(result["samples_needed"]), flush=True)
    result["load_average_after"] = os.getloadavg()
    result["bench_wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    print(markdown(result))


if __name__ == "__main__":
    main()
