"""deploy/grafana/ggserve.json and deploy/k8s/extras/prometheus-rules.yaml: every PromQL
expression parses, and every metric it reads is one the server really exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import promql_parser
import pytest
from prometheus_client.core import Metric

from server.drift.config import DriftConfig
from server.drift.metrics import METRIC_NAMES, DriftCollector
from server.drift.monitor import DriftMonitor
from server.drift.observation import Observation
from server.engine.types import EngineStats
from server.observability.metrics import Metrics
from tests.deploy.conftest import REPO, load_yaml_documents

DASHBOARD = REPO / "deploy" / "grafana" / "ggserve.json"
RULES = REPO / "deploy" / "k8s" / "extras" / "prometheus-rules.yaml"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "unknown": ("",),
}


def _populated_drift_monitor() -> DriftMonitor:
    """A monitor with one evaluation behind it, so every drift family has samples."""
    config = DriftConfig(reference_size=20, window_size=20, min_samples=10, permutations=200)
    monitor = DriftMonitor(config)
    rng = np.random.default_rng(0)
    for i in range(40):
        monitor.observe(
            Observation(
                float(i),
                "ask",
                f"q{i}",
                "stop",
                int(rng.integers(10, 90)),
                float(rng.random()),
                False,
            )
        )
    monitor.evaluate()
    return monitor


def _series_names(families: list[Metric]) -> set[str]:
    names: set[str] = set()
    for family in families:
        names |= {family.name + suffix for suffix in SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Series names on /metrics: the app's metrics, its live engine gauges and drift."""
    stats = EngineStats(
        queue_depth=0,
        slots_active=0,
        slots_total=4,
        tokens_generated_total=0,
        prompt_tokens_evaluated_total=0,
        prompt_tokens_cached_total=0,
        decode_steps_total=0,
        requests_rejected_total=0,
    )
    metrics = Metrics(stats=lambda: stats, load_state=lambda: "ready", key_label=str)
    metrics.registry.register(DriftCollector(_populated_drift_monitor()))
    names = _series_names(list(metrics.registry.collect()))
    assert {f"{name}" for name in METRIC_NAMES} <= {n.removesuffix("_total") for n in names}
    return names


def _metric_names(expr: str) -> set[str]:
    found: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                found.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    found.add(matcher.value)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def _dashboard_exprs() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in _dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def _rules() -> list[dict[str, Any]]:
    (doc,) = load_yaml_documents(RULES)
    return [rule for group in doc["spec"]["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(("title", "expr"), _dashboard_exprs())
def test_dashboard_expressions_parse_and_read_exported_metrics(
    title: str, expr: str, exported: set[str]
) -> None:
    names = _metric_names(expr)
    assert names, f"panel '{title}' reads no metric"
    assert names <= exported, f"panel '{title}' reads unknown metrics {names - exported}"


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: r["alert"])
def test_alert_expressions_parse_and_read_exported_metrics(
    rule: dict[str, Any], exported: set[str]
) -> None:
    names = _metric_names(rule["expr"])
    assert names and names <= exported, f"{rule['alert']} reads unknown {names - exported}"
    promql_parser.parse_duration(rule["for"])
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    assert rule["annotations"]["summary"]


def test_alerts_cover_the_operational_failures() -> None:
    names = [r["alert"] for r in _rules()]
    assert len(names) == len(set(names))
    for needed in ("NotReady", "ErrorRate", "LatencyP95", "QueueSaturated", "DriftDetected"):
        assert any(needed in n for n in names), needed
    (doc,) = load_yaml_documents(RULES)
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")


def test_dashboard_layout_is_importable() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert [v["name"] for v in dash["templating"]["list"]] == ["datasource"]
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel '{panel['title']}' overlaps another"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert [t["refId"] for t in panel["targets"]]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("latency", "token", "queue", "cache", "rate limit", "drift", "feedback"):
        assert topic in titles, topic


def test_metric_name_extraction_sees_every_selector() -> None:
    expr = 'sum(rate(a_total{x="1"}[5m])) / on (pod) b and {__name__="c"} > time()'
    assert _metric_names(expr) == {"a_total", "b", "c"}


def test_an_unknown_metric_is_caught(exported: set[str]) -> None:
    assert not _metric_names("rate(ggserve_no_such_metric_total[5m])") <= exported
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(ggserve_requests_total[5m])")


def test_files_are_where_the_docs_say() -> None:
    assert Path(DASHBOARD).is_file() and Path(RULES).is_file()
