"""Turn HTTP benchmark results into ratios against targets, a text table, Markdown and a plot."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

GGSERVE = "ggserve"
BINDING = "llama_cpp.server"
LLAMA_SERVER = "llama-server -np 8"


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU presence, OS and library versions of this run's machine."""
    import os

    import psutil

    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        import llama_cpp

        llama_version = llama_cpp.__version__
    except ImportError:
        llama_version = None
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": "none" if shutil.which("nvidia-smi") is None else "nvidia-smi present",
        "os": platform.platform(),
        "python": platform.python_version(),
        "llama_cpp_python": llama_version,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def targets(servers: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets at 8 concurrent clients, each with its measured ratio and verdict."""
    ours = servers.get(GGSERVE, {}).get("concurrent8")
    rows: list[dict[str, Any]] = []
    if not ours:
        return rows
    checks = (
        (BINDING, "throughput_tok_s", ">=", 3.0, "aggregate tok/s >= 3x llama_cpp.server"),
        (BINDING, "ttft_p50_s", "<=", 0.2, "p50 TTFT <= 1/5 of llama_cpp.server"),
        (LLAMA_SERVER, "throughput_tok_s", ">=", 0.9, "aggregate tok/s >= 0.9x llama-server -np 8"),
        (LLAMA_SERVER, "ttft_p50_s", "<=", 1.5, "p50 TTFT within 1.5x llama-server -np 8"),
    )
    for peer, metric, op, bound, label in checks:
        theirs = servers.get(peer, {}).get("concurrent8")
        if not theirs:
            continue
        ratio = _ratio(ours.get(metric), theirs.get(metric))
        met = None if ratio is None else (ratio >= bound if op == ">=" else ratio <= bound)
        rows.append(
            {
                "target": label,
                "peer": peer,
                "metric": metric,
                "ggserve": ours.get(metric),
                "peer_value": theirs.get(metric),
                "ratio_ggserve_over_peer": ratio,
                "bound": f"{op} {bound}",
                "met": met,
            }
        )
    warm = servers.get(GGSERVE, {}).get("preamble")
    if warm and warm.get("warm_over_cold") is not None:
        rows.append(
            {
                "target": "shared 1,000-token preamble: warm TTFT <= 10% of cold (ggserve)",
                "peer": None,
                "metric": "warm_over_cold",
                "ggserve": warm["warm_over_cold"],
                "peer_value": None,
                "ratio_ggserve_over_peer": None,
                "bound": "<= 0.1",
                "met": warm["warm_over_cold"] <= 0.1,
            }
        )
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def concurrent_table(servers: dict[str, Any]) -> list[list[str]]:
    """Rows of the 8-client table (header first)."""
    rows = [
        [
            "server",
            "tok/s",
            "TTFT p50 s",
            "TTFT p95 s",
            "latency p50 s",
            "latency p95 s",
            "complete",
            "full length",
        ]
    ]
    for name, result in servers.items():
        s = result.get("concurrent8")
        if not s:
            continue
        rows.append(
            [
                name,
                _fmt(s["throughput_tok_s"], 1),
                _fmt(s["ttft_p50_s"]),
                _fmt(s["ttft_p95_s"]),
                _fmt(s["latency_p50_s"]),
                _fmt(s["latency_p95_s"]),
                f"{s['completed']}/{s['requests']}",
                f"{s['full_length']}/{s['completed']}",
            ]
        )
    return rows


def sweep_table(servers: dict[str, Any]) -> list[list[str]]:
    """Rows of the concurrency sweep: tok/s and p95 latency per server and concurrency."""
    levels = sorted({s["concurrency"] for r in servers.values() for s in r.get("sweep", [])})
    rows = [["server", *[f"c={c}: tok/s, p95 s" for c in levels]]]
    for name, result in servers.items():
        by_level = {s["concurrency"]: s for s in result.get("sweep", [])}
        if not by_level:
            continue
        cells = []
        for c in levels:
            s = by_level.get(c)
            cells.append(
                "-"
                if s is None
                else f"{_fmt(s['throughput_tok_s'], 1)}, {_fmt(s['latency_p95_s'], 1)}"
            )
        rows.append([name, *cells])
    return rows


def preamble_table(servers: dict[str, Any]) -> list[list[str]]:
    """Rows of the shared-preamble table: cold vs warm TTFT."""
    rows = [["server", "prompt tokens", "cold TTFT s", "warm TTFT s", "warm/cold", "cached (warm)"]]
    for name, result in servers.items():
        p = result.get("preamble")
        if not p:
            continue
        rows.append(
            [
                name,
                _fmt(p.get("prompt_tokens")),
                _fmt(p.get("cold_ttft_p50_s"), 3),
                _fmt(p.get("warm_ttft_p50_s"), 3),
                _fmt(p.get("warm_over_cold"), 3),
                _fmt(p.get("warm_cached_tokens_p50")),
            ]
        )
    return rows


def targets_table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of the targets table: measured ratio vs bound and verdict."""
    out = [["target", "ggserve", "peer", "ratio", "bound", "met"]]
    for r in rows:
        value = r["ratio_ggserve_over_peer"]
        if value is None:
            value = r["ggserve"]
        verdict = {True: "yes", False: "NO", None: "-"}[r["met"]]
        out.append(
            [
                r["target"],
                _fmt(r["ggserve"], 3),
                _fmt(r["peer_value"], 3),
                _fmt(value, 3),
                r["bound"],
                verdict,
            ]
        )
    return out


def text_table(rows: list[list[str]]) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    """The same table in GitHub Markdown."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def plot_sweep(servers: dict[str, Any], path: Path, title: str) -> None:
    """Throughput and p95 latency vs concurrency, one line per server (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tps, ax_p95) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, result in servers.items():
        points = sorted(result.get("sweep", []), key=lambda s: s["concurrency"])
        if not points:
            continue
        xs = [p["concurrency"] for p in points]
        ax_tps.plot(xs, [p["throughput_tok_s"] or 0 for p in points], marker="o", label=name)
        ax_p95.plot(xs, [p["latency_p95_s"] or 0 for p in points], marker="o", label=name)
    for ax, label in ((ax_tps, "aggregate tokens/s"), (ax_p95, "p95 request latency (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 2, 4, 8, 16], ["1", "2", "4", "8", "16"])
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
    ax_tps.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_report(report: dict[str, Any]) -> str:
    """All tables of one run as Markdown (docs/benchmarks.md embeds this)."""
    servers = report["servers"]
    m = report["machine"]
    parts = [
        f"Run: {report['date']} ({report['mode']}), {m['cpu_model']}, "
        f"{m['physical_cores']} cores, {m['ram_gib']} GiB RAM, GPU: {m['gpu']}; "
        f"load average before: {report['load_before']}.",
        "",
        f"**8 concurrent clients** ({report['config']['concurrent_requests']} requests, "
        f"{report['config']['max_tokens']} new tokens each, streaming, greedy):",
        "",
        markdown_table(concurrent_table(servers)),
        "",
        "**Targets** (ratio = ggserve / peer):",
        "",
        markdown_table(targets_table(report["targets"])),
        "",
        "**Concurrency sweep** (aggregate tok/s, p95 latency s):",
        "",
        markdown_table(sweep_table(servers)),
        "",
        "**Shared 1,000-token preamble** (medians; warm = same preamble, new question):",
        "",
        markdown_table(preamble_table(servers)),
    ]
    demo = report.get("interrupt_demo")
    if demo:
        parts += [
            "",
            f"**llama_cpp.server with its defaults** (`interrupt_requests` on), "
            f"{demo['requests']} concurrent clients: {demo['full_length']} of "
            f"{demo['requests']} streams delivered all {demo['max_tokens']} tokens; "
            f"tokens per stream: {demo['tokens_per_stream']}.",
        ]
    return "\n".join(parts) + "\n"


RESULTS_START = "<!-- http_bench results: start -->"
RESULTS_END = "<!-- http_bench results: end -->"


def replace_section(text: str, start: str, end: str, block: str) -> str:
    """``text`` with what lies between the ``start`` and ``end`` marker lines replaced by ``block``.

    Raises ValueError when a marker is missing or they are out of order.
    """
    first, last = text.find(start), text.find(end)
    if first < 0 or last < first:
        raise ValueError(f"the markers {start!r} and {end!r} are not both there, in that order")
    return text[:first] + f"{start}\n{block.rstrip()}\n" + text[last:]


def update_doc(doc: Path, markdown: str, image: str) -> bool:
    """Replace the text between the result markers of ``doc``; False if it has no markers."""
    if not doc.exists():
        return False
    block = f"{markdown}\n![throughput and p95 latency vs concurrency]({image})\n"
    try:
        doc.write_text(replace_section(doc.read_text(), RESULTS_START, RESULTS_END, block))
    except ValueError:
        return False
    return True
