"""Prometheus metrics: one ``Metrics`` object per operator run, with its own registry.

Nothing here is module-level state: the entry point makes a ``Metrics``, hands it to the
parts that count things, and serves its registry on ``/metrics``.

Counts that describe the cluster (sessions by phase, the oldest undecided session,
pending deadlines) are not gauges updated on every write, which drift after restarts:
they are read from the cache and the work queue at scrape time, where they are kept up
to date incrementally, so a scrape costs nothing even at 100,000 sessions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

PREFIX = "session_operator"


class ClusterCounts(Protocol):
    def phase_counts(self) -> dict[tuple[str, str], int]: ...

    def oldest_undecided(self, now: datetime) -> float: ...

    def policy_names(self) -> tuple[list[str], list[str]]: ...


class QueueCounts(Protocol):
    @property
    def deadlines(self) -> int: ...


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            f"{PREFIX}_decisions_total",
            "Session transitions decided, by outcome (the Ready reason: Acquired, Promoted, Queued, TargetBusy, ...).",
            ["outcome"], registry=r,
        )
        self.claim_conflicts = Counter(
            f"{PREFIX}_claim_write_conflicts_total",
            "Conditional writes that lost a race (409) and were re-decided, by object (claim or session).",
            ["object"], registry=r,
        )
        self.replacements = Counter(
            f"{PREFIX}_replacements_total",
            "Active sessions displaced by a Replace or ReplaceIfProfileChanged session, by reason.",
            ["reason"], registry=r,
        )
        self.decision_latency = Histogram(
            f"{PREFIX}_decision_latency_seconds",
            "Time from a session's creation to its first decision.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300), registry=r,
        )
        self.reconcile_duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time to reconcile one target group (decide and write).",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10), registry=r,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors_total",
            "Target reconciles that failed and were retried with backoff, by kind of error.",
            ["error"], registry=r,
        )
        self.archivals = Counter(
            f"{PREFIX}_archivals_total", "Sessions archived, by reason (Requested or Retention).",
            ["reason"], registry=r,
        )
        self.deletions = Counter(
            f"{PREFIX}_retention_deletions_total", "Archived sessions deleted after deleteAfter.", registry=r,
        )
        self.events_posted = Counter(
            f"{PREFIX}_events_posted_total", "Kubernetes Events posted about sessions, by reason.",
            ["reason"], registry=r,
        )
        self.events_dropped = Counter(
            f"{PREFIX}_events_dropped_total",
            "Kubernetes Events not posted (the API server refused them, or too many were waiting).",
            registry=r,
        )
        self.leader = Gauge(
            f"{PREFIX}_leader", "1 while this replica is the leader (or runs without leader election), else 0.",
            registry=r,
        )
        self.permission_checks = Counter(
            f"{PREFIX}_permission_checks_total",
            "LocalSubjectAccessReviews asked for the preempt permission (answers from the cache "
            "not counted), by result: allowed, denied, error.",
            ["result"], registry=r,
        )
        self.watch_lists = Counter(
            f"{PREFIX}_watch_lists_total",
            "Full listings made to fill or refill the cache (one per resource and scope at start, "
            "and one per expired watch), by resource.",
            ["resource"], registry=r,
        )

    def observe(self, cluster: ClusterCounts, queue: QueueCounts) -> None:
        """Serve the gauges that are read from the cache and the queue at scrape time."""
        self.registry.register(_ClusterCollector(cluster, queue))


class _ClusterCollector(Collector):
    def __init__(
        self, cluster: ClusterCounts, queue: QueueCounts, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._cluster = cluster
        self._queue = queue
        self._clock = clock

    def collect(self) -> Iterable[Metric]:
        sessions = GaugeMetricFamily(
            f"{PREFIX}_sessions",
            "Sessions known to the operator, by namespace and phase (Undecided: no decision for its generation yet).",
            labels=["namespace", "phase"],
        )
        for (namespace, phase), count in sorted(self._cluster.phase_counts().items()):
            sessions.add_metric([namespace, phase], count)
        yield sessions
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_undecided_seconds",
            "Age of the oldest session with no decision for its current generation (0: none).",
            value=self._cluster.oldest_undecided(self._clock()),
        )
        policies = GaugeMetricFamily(
            f"{PREFIX}_session_policies",
            "SessionPolicies the operator sees, by name and state: in-force, or unusable (left out; "
            "the log says why).",
            labels=["name", "state"],
        )
        in_force, unusable = self._cluster.policy_names()
        for name in in_force:
            policies.add_metric([name, "in-force"], 1)
        for name in unusable:
            policies.add_metric([name, "unusable"], 1)
        yield policies
        yield GaugeMetricFamily(
            f"{PREFIX}_deadlines_pending",
            "Targets with a time-based deadline or a retry waiting in the work queue.",
            value=self._queue.deadlines,
        )

    def describe(self) -> Iterable[Metric]:
        return []
