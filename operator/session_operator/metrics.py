"""Prometheus metrics: one registry, a few metrics that answer operators' questions.

Counts of sessions by phase are not kept as a gauge updated on every write (which drifts
after restarts); they are computed from the in-memory index at scrape time.
"""

from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "session_operator"
REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    f"{PREFIX}_decisions_total",
    "Session transitions decided, by outcome (the Ready reason: Acquired, Promoted, Queued, TargetBusy, ...).",
    ["outcome"],
    registry=REGISTRY,
)
CLAIM_CONFLICTS = Counter(
    f"{PREFIX}_claim_write_conflicts_total",
    "Conditional writes that lost a race (409) and were re-decided, by object (claim or session).",
    ["object"],
    registry=REGISTRY,
)
REPLACEMENTS = Counter(
    f"{PREFIX}_replacements_total",
    "Active sessions displaced by a Replace or ReplaceIfProfileChanged session, by reason.",
    ["reason"],
    registry=REGISTRY,
)
DECISION_LATENCY = Histogram(
    f"{PREFIX}_decision_latency_seconds",
    "Time from a session's creation to its first decision.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Time to reconcile one target group (read, decide, write).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    f"{PREFIX}_reconcile_errors_total",
    "Target reconciles that failed and were retried with backoff, by kind of error.",
    ["error"],
    registry=REGISTRY,
)
ARCHIVALS = Counter(
    f"{PREFIX}_archivals_total",
    "Sessions archived, by reason (Requested or Retention).",
    ["reason"],
    registry=REGISTRY,
)
DELETIONS = Counter(
    f"{PREFIX}_retention_deletions_total",
    "Archived sessions deleted after deleteAfter.",
    registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    f"{PREFIX}_sweep_duration_seconds",
    "Time of one lifecycle sweep over due deadlines.",
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
    registry=REGISTRY,
)
DEADLINES_PENDING = Gauge(
    f"{PREFIX}_deadlines_pending",
    "Time-based deadlines (idle, max duration, archive, delete) waiting in the sweep's heap.",
    registry=REGISTRY,
)
EVENTS_POSTED = Counter(
    f"{PREFIX}_events_posted_total",
    "Kubernetes Events posted about sessions, by reason.",
    ["reason"],
    registry=REGISTRY,
)
LEADER = Gauge(
    f"{PREFIX}_leader",
    "1 while this replica is the leader (or runs without leader election), else 0.",
    registry=REGISTRY,
)


class _PhaseCollector(Collector):
    """``session_operator_sessions{namespace,phase}`` from whatever source is registered."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[tuple[str, str]]] | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{PREFIX}_sessions",
            "Sessions known to the operator, by namespace and phase (Undecided: no phase yet).",
            labels=["namespace", "phase"],
        )
        if self.source is not None:
            for (namespace, phase), count in sorted(_Tally(self.source()).items()):
                family.add_metric([namespace, phase], count)
        yield family

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


_PHASES = _PhaseCollector()
REGISTRY.register(_PHASES)


def set_session_source(source: Callable[[], Iterable[tuple[str, str]]] | None) -> None:
    """Register the function that yields (namespace, phase) for every known session."""
    _PHASES.source = source
