"""``ggserve_drift_*`` gauges, read from the monitor's last report at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.drift.monitor import DriftMonitor

# Every family this collector may export; the dashboard/alert test checks PromQL against it.
METRIC_NAMES = (
    "ggserve_drift_window_size",
    "ggserve_drift_min_samples",
    "ggserve_drift_observations",
    "ggserve_drift_evaluations",
    "ggserve_drift_drifted",
    "ggserve_drift_signal_drifted",
    "ggserve_drift_statistic",
    "ggserve_drift_p_value",
    "ggserve_drift_psi",
    "ggserve_drift_reference_value",
    "ggserve_drift_current_value",
    "ggserve_drift_samples",
    "ggserve_drift_evaluation_seconds",
    "ggserve_drift_last_evaluation_timestamp_seconds",
)


class DriftCollector(Collector):
    """The drift gauges. A signal without a verdict (too few samples) exports its sample
    counts but no ``signal_drifted``, so an alert never fires on a handful of requests."""

    def __init__(self, monitor: DriftMonitor) -> None:
        self._monitor = monitor

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        monitor = self._monitor
        config = monitor.config
        size = GaugeMetricFamily(
            "ggserve_drift_window_size", "Configured drift window size.", labels=["window"]
        )
        size.add_metric(["reference"], config.reference_size)
        size.add_metric(["current"], config.window_size)
        yield size
        yield GaugeMetricFamily(
            "ggserve_drift_min_samples",
            "Samples each window needs before a signal gets a verdict.",
            value=config.min_samples,
        )
        yield CounterMetricFamily(
            "ggserve_drift_observations", "Requests recorded for drift.", value=monitor.observed
        )
        yield CounterMetricFamily(
            "ggserve_drift_evaluations", "Drift evaluations run.", value=monitor.evaluations
        )
        report = monitor.latest
        if report is None:
            return
        if report.drifted is not None:
            yield GaugeMetricFamily(
                "ggserve_drift_drifted",
                "1 when any drift signal flagged at the last evaluation.",
                value=1.0 if report.drifted else 0.0,
            )
        families = {
            "signal_drifted": "1 when this signal flagged drift (absent without a verdict).",
            "statistic": "Test statistic (MMD², KS D, or rate difference current − reference).",
            "p_value": "p-value of the signal's two-sample test.",
            "psi": "Population stability index (bins fixed from the reference).",
            "reference_value": "Mean or rate in the reference window.",
            "current_value": "Mean or rate in the current window.",
        }
        built = {
            key: GaugeMetricFamily(f"ggserve_drift_{key}", text, labels=["signal"])
            for key, text in families.items()
        }
        samples = GaugeMetricFamily(
            "ggserve_drift_samples", "Samples per window and signal.", labels=["signal", "window"]
        )
        for s in report.signals:
            samples.add_metric([s.name, "reference"], s.reference_n)
            samples.add_metric([s.name, "current"], s.current_n)
            values = {
                "signal_drifted": None if s.drifted is None else float(s.drifted),
                "statistic": s.statistic,
                "p_value": s.p_value,
                "psi": s.psi,
                "reference_value": s.reference_value,
                "current_value": s.current_value,
            }
            for key, value in values.items():
                if value is not None:
                    built[key].add_metric([s.name], value)
        yield from built.values()
        yield samples
        yield GaugeMetricFamily(
            "ggserve_drift_evaluation_seconds",
            "Wall time of the last drift evaluation.",
            value=report.elapsed_s,
        )
        yield GaugeMetricFamily(
            "ggserve_drift_last_evaluation_timestamp_seconds",
            "Unix time of the last drift evaluation.",
            value=report.evaluated_at,
        )
