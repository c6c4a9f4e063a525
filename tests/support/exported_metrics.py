"""The metrics the operator exports on /metrics: the one list the chart's alerts and
dashboard may name (tests/chart/test_monitoring.py fails on any other name).

Keep it equal to what the operator serves: ``families_in(text)`` reads a scrape of
/metrics into the same shape, so a run against the real process can assert
``families_in(scrape) == EXPORTED``.
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

# family name -> type, as on /metrics (counters with their _total suffix).
EXPORTED: dict[str, str] = {
    "session_operator_sessions": "gauge",
    "session_operator_decisions_total": "counter",
    "session_operator_claim_write_conflicts_total": "counter",
    "session_operator_replacements_total": "counter",
    "session_operator_decision_latency_seconds": "histogram",
    "session_operator_reconcile_duration_seconds": "histogram",
    "session_operator_reconcile_errors_total": "counter",
    "session_operator_archivals_total": "counter",
    "session_operator_retention_deletions_total": "counter",
    "session_operator_deadlines_pending": "gauge",
    "session_operator_events_posted_total": "counter",
    "session_operator_events_dropped_total": "counter",
    "session_operator_watch_lists_total": "counter",
    "session_operator_leader": "gauge",
    "session_operator_oldest_undecided_seconds": "gauge",
    "session_operator_session_policies": "gauge",
    "session_operator_permission_checks_total": "counter",
}

_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def series_names(families: dict[str, str] | None = None) -> frozenset[str]:
    """Every series name a PromQL query can select (histograms: _bucket, _sum, _count)."""
    names: set[str] = set()
    for name, kind in (EXPORTED if families is None else families).items():
        names.update(name + suffix for suffix in _SUFFIXES.get(kind, ("",)))
    return frozenset(names)


def families_in(exposition: str, prefix: str = "session_operator_") -> dict[str, str]:
    """The families in a /metrics scrape (Prometheus text format), shaped like EXPORTED."""
    families = [f for f in text_string_to_metric_families(exposition) if f.name.startswith(prefix)]
    # prometheus_client also serves <name>_created for counters and histograms, as
    # gauges of their own; they are timestamps of those families, not families.
    timed = {f.name + "_created" for f in families if f.type in ("counter", "histogram", "summary")}
    return {
        family.name + "_total" if family.type == "counter" else family.name: family.type
        for family in families
        if family.name not in timed
    }
