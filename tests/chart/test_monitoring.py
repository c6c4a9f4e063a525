"""Monitoring: the metrics Service, the ServiceMonitor, the alerts and the Grafana dashboard.

Every PromQL expression (alerts and dashboard panels) must parse with a real PromQL
parser and name only metrics in support/exported_metrics.py, the one list of what the
operator exports.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import promql_parser
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from session_operator import metrics
from support.chart import CHART_DIR, MODES, NAMESPACE, of_component, only, render
from support.exported_metrics import EXPORTED, families_in, series_names

ON = MODES["monitoring"]
ALERTS = {
    "SessionOperatorNoLeader",
    "SessionOperatorReconcileErrors",
    "SessionOperatorClaimConflictSurge",
    "SessionOperatorSessionsUndecided",
}
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "${job}": ".+", "$job": ".+"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects; a selector without a plain name is an error."""
    names: set[str] = set()
    problems: list[str] = []

    def visit(node: Any, *_: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    if str(matcher.op) != "MatchOp.Equal":
                        problems.append(f"regex on __name__ in {expr!r}")
                    name = matcher.value
            if not name:
                problems.append(f"selector without a metric name in {expr!r}")
            else:
                names.add(name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    assert problems == []
    return names


def assert_exported(exprs: list[str]) -> None:
    assert exprs
    allowed = series_names()
    for expr in exprs:
        unknown = metric_names(expr) - allowed
        assert unknown == set(), f"{expr!r} names metrics the operator does not export: {sorted(unknown)}"


# The list itself --------------------------------------------------------------------------


def test_the_list_of_exported_metrics() -> None:
    assert all(name.startswith("session_operator_") for name in EXPORTED)
    assert "session_operator_sweep_duration_seconds" not in EXPORTED  # removed from the operator
    assert EXPORTED["session_operator_oldest_undecided_seconds"] == "gauge"
    assert {"session_operator_reconcile_duration_seconds_count", "session_operator_leader"} <= series_names()


def test_families_in_reads_a_scrape_back_into_the_list() -> None:
    """The reader later used on the live /metrics, on a scrape of every listed family."""
    registry = CollectorRegistry()
    for name, kind in EXPORTED.items():
        if kind == "counter":
            Counter(name.removesuffix("_total"), "c", ["x"], registry=registry).labels("a").inc()
        elif kind == "gauge":
            Gauge(name, "g", registry=registry).set(1)
        else:
            Histogram(name, "h", registry=registry).observe(1)
    assert families_in(generate_latest(registry).decode()) == EXPORTED


def test_the_operators_registry_exports_exactly_the_list() -> None:
    """Every family the operator registers is listed, and every listed family is registered."""
    if not hasattr(metrics, "Metrics"):
        pytest.skip("this operator has a module-level registry of another shape")

    class Cluster:
        def phase_counts(self) -> dict[tuple[str, str], int]:
            return {("team-a", "Active"): 1}

        def oldest_undecided(self, now: Any) -> float:
            return 0.0

        def policy_names(self) -> tuple[list[str], list[str]]:
            return ["team-a"], []

    class Queue:
        deadlines = 0

    registry = CollectorRegistry(auto_describe=True)
    operator_metrics = metrics.Metrics(registry)
    operator_metrics.observe(Cluster(), Queue())
    assert families_in(generate_latest(registry).decode()) == EXPORTED


def test_names_outside_the_list_are_caught() -> None:
    with pytest.raises(AssertionError, match="sweep_duration"):
        assert_exported(["histogram_quantile(0.9, rate(session_operator_sweep_duration_seconds_bucket[5m]))"])
    with pytest.raises(AssertionError):
        assert_exported(['sum(rate({__name__=~"session_operator_.+"}[5m]))'])


# Service and ServiceMonitor ------------------------------------------------------------------


def test_metrics_service_lists_every_replica() -> None:
    docs = render()
    (service,) = of_component(docs, "Service", "metrics")
    deployment = only(docs, "Deployment")
    pod = deployment["spec"]["template"]
    assert service["spec"]["publishNotReadyAddresses"] is True  # standbys are not Ready
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert of_component(render({"monitoring": {"service": {"enabled": False}}}), "Service", "metrics") == []


# The Prometheus Operator CRDs are not in kubernetes-validate; these are the parts of
# their schemas (monitoring.coreos.com/v1) the chart uses, closed to unknown keys.
_STR = {"type": "string"}
_STRMAP = {"type": "object", "additionalProperties": _STR}
_META = {"type": "object", "required": ["name", "namespace"]}
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "additionalProperties": False, "properties": {"matchLabels": _STRMAP}},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchNames": {"type": "array", "items": _STR}, "any": {"type": "boolean"}},
                },
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": _STR,
                            "path": _STR,
                            "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},  # noqa: E501
                            "scrapeTimeout": {"type": "string"},
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": _META,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "rules"],
                        "properties": {
                            "name": _STR,
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["alert", "expr"],
                                    "properties": {
                                        "alert": _STR,
                                        "expr": _STR,
                                        "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d|w|y)$"},
                                        "labels": _STRMAP,
                                        "annotations": _STRMAP,
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


def test_service_monitor_scrapes_the_metrics_service() -> None:
    docs = render(ON)
    monitor = only(docs, "ServiceMonitor")
    jsonschema.validate(monitor, SERVICE_MONITOR)
    (service,) = of_component(docs, "Service", "metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is True  # keeps session_operator_sessions' own namespace label
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_monitoring_objects_are_off_by_default() -> None:
    kinds = {doc["kind"] for doc in render()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


# Alerts ----------------------------------------------------------------------------------


def rules(values: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    rule = only(render(values if values is not None else ON), "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE)
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_alerts_parse_and_name_only_exported_metrics() -> None:
    alerts = rules()
    assert set(alerts) == ALERTS
    assert_exported([a["expr"] for a in alerts.values()])


def test_alerts_mean_something_to_the_on_call() -> None:
    for name, alert in rules().items():
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        assert re.fullmatch(r"\d+m", alert["for"]), name
        assert len(alert["annotations"]["summary"]) < 120, name
        assert len(alert["annotations"]["description"]) > 150, name


def test_alert_expressions() -> None:
    alerts = rules()
    selector = 'job="session-operator-metrics", namespace="session-operator"'
    no_leader = alerts["SessionOperatorNoLeader"]["expr"]
    assert f"max(session_operator_leader{{{selector}}}) < 1" in no_leader
    assert f"absent(session_operator_leader{{{selector}}})" in no_leader
    assert alerts["SessionOperatorNoLeader"]["for"] == "5m"
    assert "session_operator_reconcile_errors_total" in alerts["SessionOperatorReconcileErrors"]["expr"]
    assert "session_operator_claim_write_conflicts_total" in alerts["SessionOperatorClaimConflictSurge"]["expr"]
    undecided = alerts["SessionOperatorSessionsUndecided"]["expr"]
    assert undecided.strip() == f"max(session_operator_oldest_undecided_seconds{{{selector}}}) > 300"


def test_alert_settings() -> None:
    values = {
        "monitoring": {
            "prometheusRule": {
                "enabled": True,
                "selector": 'cluster="eu-1", job="so"',
                "additionalAlertLabels": {"team": "platform"},
                "alerts": {
                    "claimConflicts": {"enabled": False},
                    "undecided": {"seconds": 60, "for": "1m", "severity": "critical"},
                },
            }
        }
    }
    alerts = rules(values)
    assert set(alerts) == ALERTS - {"SessionOperatorClaimConflictSurge"}
    assert all(a["labels"]["team"] == "platform" for a in alerts.values())
    undecided = alerts["SessionOperatorSessionsUndecided"]
    assert undecided["expr"].strip() == 'max(session_operator_oldest_undecided_seconds{cluster="eu-1", job="so"}) > 60'
    assert (undecided["for"], undecided["labels"]["severity"]) == ("1m", "critical")
    assert_exported([a["expr"] for a in alerts.values()])


# The dashboard ---------------------------------------------------------------------------


def dashboard() -> tuple[dict[str, Any], dict[str, Any]]:
    configmap = only(render(ON), "ConfigMap")
    (text,) = configmap["data"].values()
    return configmap, json.loads(text)


def panel_queries(board: dict[str, Any]) -> list[str]:
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"unsubstituted variable in {target['expr']!r}"
            queries.append(expr)
    return queries


def test_dashboard_queries_parse_and_name_only_exported_metrics() -> None:
    _, board = dashboard()
    queries = panel_queries(board)
    assert len(queries) >= 15
    assert_exported(queries)
    # The job variable's query (label_values(metric, label)) names an exported metric too.
    (job,) = [v for v in board["templating"]["list"] if v["name"] == "job"]
    metric = re.fullmatch(r"label_values\((\w+), job\)", job["query"]["query"])
    assert metric and metric.group(1) in EXPORTED


def test_dashboard_shows_every_exported_metric() -> None:
    _, board = dashboard()
    used = set().union(*(metric_names(q) for q in panel_queries(board)))
    shown = {name for name in EXPORTED if any(s.startswith(name) for s in used)}
    assert shown == set(EXPORTED)


def test_dashboard_configmap_is_found_by_the_grafana_sidecar() -> None:
    configmap, board = dashboard()
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {
        "session-operator.json": (CHART_DIR / "dashboards" / "session-operator.json").read_text().rstrip("\n")
    }
    assert board["uid"] == "session-operator"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in board["panels"])
    datasources = {p["datasource"]["uid"] for p in board["panels"] if "datasource" in p}
    assert datasources == {"${datasource}"}

    moved = render({"monitoring": {"dashboard": {
        "enabled": True, "namespace": "grafana", "label": "dashboards", "labelValue": "session-operator",
        "annotations": {"grafana_folder": "Operators"},
    }}})
    configmap = only(moved, "ConfigMap")
    assert configmap["metadata"]["namespace"] == "grafana"
    assert configmap["metadata"]["labels"]["dashboards"] == "session-operator"
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Operators"}
