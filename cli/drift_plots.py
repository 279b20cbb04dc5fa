"""Pictures for ``ggserve drift report``: reference vs current, one panel per signal family.

matplotlib is imported here only, when a PNG or HTML file is asked for.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from server.drift.report import DriftReport
from server.drift.windows import WindowSample

REF_COLOR, CUR_COLOR = "#4C72B0", "#DD8452"


def _pca_2d(ref: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pooled = np.vstack([ref, cur]).astype(np.float64)
    centred = pooled - pooled.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    points = centred @ vt[:2].T
    return points[: len(ref)], points[len(ref) :]


def render_png(report: DriftReport, reference: WindowSample, current: WindowSample) -> bytes:
    """A 2×2 figure: query embeddings (PCA), top-1 scores, answer lengths, rates."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise RuntimeError(
            "PNG/HTML reports need matplotlib: pip install 'ggserve[report]'"
        ) from exc

    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    ax = axes[0][0]
    ref_e, cur_e = reference.embeddings, current.embeddings
    if ref_e is not None and cur_e is not None and len(ref_e) > 1 and len(cur_e) > 1:
        a, b = _pca_2d(ref_e, cur_e)
        ax.scatter(a[:, 0], a[:, 1], s=8, alpha=0.5, color=REF_COLOR, label="reference")
        ax.scatter(b[:, 0], b[:, 1], s=8, alpha=0.5, color=CUR_COLOR, label="current")
        ax.legend()
    ax.set_title(_title(report, "query_embedding", "Query embeddings (PCA)"))

    ax = axes[0][1]
    ref_s = [o.top_score for o in reference.observations if o.top_score is not None]
    cur_s = [o.top_score for o in current.observations if o.top_score is not None]
    _histograms(ax, ref_s, cur_s)
    ax.set_title(_title(report, "top1_score", "Top-1 retrieval score"))

    ax = axes[1][0]
    ref_t = [o.answer_tokens for o in reference.observations if o.generated]
    cur_t = [o.answer_tokens for o in current.observations if o.generated]
    _histograms(ax, ref_t, cur_t)
    ax.set_title(_title(report, "answer_tokens", "Answer length (tokens)"))

    ax = axes[1][1]
    rates = [s for s in report.signals if s.test == "two_proportion"]
    x = np.arange(len(rates))
    ref_rates = [s.reference_value or 0.0 for s in rates]
    ax.bar(x - 0.2, ref_rates, 0.4, color=REF_COLOR, label="reference")
    ax.bar(x + 0.2, [s.current_value or 0.0 for s in rates], 0.4, color=CUR_COLOR, label="current")
    ax.legend()
    ax.set_xticks(x, [s.name + (" ⚠" if s.drifted else "") for s in rates], rotation=15)
    ax.set_ylabel("share of requests")
    ax.set_title("Rates (reference vs current)")

    verdict = {True: "DRIFT", False: "no drift", None: "no verdict (too few samples)"}
    fig.suptitle(f"ggserve drift report — {verdict[report.drifted]}")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _histograms(ax: object, ref: list[float] | list[int], cur: list[float] | list[int]) -> None:
    if not ref or not cur:
        ax.text(0.5, 0.5, "no data", ha="center", transform=ax.transAxes)  # type: ignore[attr-defined]
        return
    edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=30)
    for values, color, label in ((ref, REF_COLOR, "reference"), (cur, CUR_COLOR, "current")):
        ax.hist(values, bins=edges, density=True, alpha=0.55, color=color, label=label)  # type: ignore[attr-defined]
    ax.legend()  # type: ignore[attr-defined]


def _title(report: DriftReport, name: str, text: str) -> str:
    try:
        s = report.signal(name)
    except KeyError:
        return f"{text}: not computed"
    if s.p_value is None:
        return f"{text}: no verdict"
    return f"{text}: p={s.p_value:.3g}{'  DRIFT' if s.drifted else ''}"


def render_html(report: DriftReport, png: bytes | None) -> str:
    """A self-contained page (no external assets): the table and the figure inline."""
    rows = []
    for s in report.signals:
        cells = [
            s.name,
            s.test,
            f"{s.reference_n} / {s.current_n}",
            _fmt(s.reference_value),
            _fmt(s.current_value),
            _fmt(s.statistic),
            _fmt(s.p_value),
            _fmt(s.psi),
            {True: "DRIFT", False: "ok", None: s.note or "no verdict"}[s.drifted],
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("signal", "test", "n ref / cur", "ref", "cur", "statistic", "p", "PSI", "")
    )
    image = (
        f'<img alt="distributions" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        if png
        else ""
    )
    return (
        "<!doctype html><meta charset='utf-8'><title>ggserve drift report</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ddd;text-align:left}img{max-width:100%}</style>"
        f"<h1>ggserve drift report</h1><p>alpha {report.alpha}, per-signal threshold "
        f"{_fmt(report.p_threshold)}, minimum sample {report.min_samples}</p>"
        f"<table><tr>{head}</tr>{''.join(rows)}</table>{image}"
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path``, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
