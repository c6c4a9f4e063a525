"""The chart's RBAC grants exactly the requests the operator makes, in both modes.

The grants are read back from the rendered objects with support/rbac_grants.py, the
helper that a run against a real API server uses to compare them with the requests it
records there.
"""

from __future__ import annotations

from support.chart import MODES, NAMESPACE, of_kind, render
from support.rbac_grants import CLUSTER, Grant, Request, allows, grants, name_limits, unused

LEADER_LEASE = "session-operator-leader"

# What the operator does in each watched namespace (or cluster-wide).
WATCHED = {
    ("session-operator.io", "sessions", verb) for verb in ("get", "list", "watch", "patch", "delete")
} | {
    ("session-operator.io", "sessions/status", "patch"),
    ("", "events", "create"),
} | {
    ("coordination.k8s.io", "leases", verb) for verb in ("get", "list", "watch", "create", "update", "delete")
}
# What leader election does in the release namespace.
LEADER = {("coordination.k8s.io", "leases", verb) for verb in ("get", "create", "update")}


def in_scope(triples: set[tuple[str, str, str]], scope: str) -> set[Grant]:
    return {Grant(group, resource, verb, scope) for group, resource, verb in triples}


def test_cluster_wide_mode() -> None:
    docs = render(MODES["default"])
    assert grants(docs) == in_scope(WATCHED, CLUSTER)
    assert len(of_kind(docs, "ClusterRole")) == 1
    assert of_kind(docs, "Role") == []
    assert name_limits(docs) == {}


def test_namespaced_mode() -> None:
    docs = render(MODES["namespaced"])
    assert grants(docs) == in_scope(WATCHED, "team-a") | in_scope(WATCHED, "team-b") | in_scope(LEADER, NAMESPACE)
    assert of_kind(docs, "ClusterRole") == [] and of_kind(docs, "ClusterRoleBinding") == []
    # The leader Lease is the only object the release namespace grants anything on,
    # except create, which an authorizer cannot limit by name.
    assert name_limits(docs) == {
        Grant("coordination.k8s.io", "leases", "get", NAMESPACE): {LEADER_LEASE},
        Grant("coordination.k8s.io", "leases", "update", NAMESPACE): {LEADER_LEASE},
    }


def test_namespaced_mode_without_leader_election_has_no_leader_role() -> None:
    values = {"watchNamespaces": ["team-a"], "replicaCount": 1, "operator": {"leaderElection": {"enabled": False}}}
    docs = render(values)
    assert grants(docs) == in_scope(WATCHED, "team-a")


def test_a_renamed_leader_lease_is_the_one_granted() -> None:
    docs = render({"watchNamespaces": ["team-a"], "operator": {"leaderElection": {"leaseName": "so-leader"}}})
    assert allows(docs, "coordination.k8s.io", "leases", "update", NAMESPACE, name="so-leader")
    assert not allows(docs, "coordination.k8s.io", "leases", "update", NAMESPACE, name=LEADER_LEASE)


def test_no_wildcards_and_no_other_subjects() -> None:
    for mode in MODES:
        docs = render(MODES[mode])
        for role in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
            for rule in role["rules"]:
                for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert "*" not in rule.get(key, []), (mode, role["metadata"]["name"], rule)
        for binding in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding"):
            assert [s["kind"] for s in binding["subjects"]] == ["ServiceAccount"]


def test_nothing_outside_the_operator_requests() -> None:
    """No Namespaces, CRDs, Secrets, Pods or cluster-scoped objects, in either mode."""
    for mode in MODES:
        docs = render(MODES[mode])
        for request in (
            Request("", "namespaces", "list", ""),
            Request("apiextensions.k8s.io", "customresourcedefinitions", "list", ""),
            Request("", "secrets", "get", NAMESPACE),
            Request("", "pods", "list", NAMESPACE),
            Request("session-operator.io", "sessions", "create", "team-a"),
            Request("session-operator.io", "sessions", "update", "team-a"),
            Request("session-operator.io", "sessions/status", "update", "team-a"),
            Request("coordination.k8s.io", "leases", "patch", "team-a"),
            Request("", "events", "patch", "team-a"),
        ):
            assert not allows(docs, *request[:4], name=request.name), (mode, request)


def test_allows_and_unused() -> None:
    """The helper's answers on a namespaced render, as the real-server run will use them."""
    docs = render(MODES["namespaced"])
    assert allows(docs, "session-operator.io", "sessions/status", "patch", "team-a", name="alice-1")
    assert not allows(docs, "session-operator.io", "sessions/status", "patch", "team-c", name="alice-1")
    assert allows(docs, "coordination.k8s.io", "leases", "create", NAMESPACE)
    assert not allows(docs, "coordination.k8s.io", "leases", "delete", NAMESPACE, name=LEADER_LEASE)
    assert not allows(docs, "coordination.k8s.io", "leases", "get", NAMESPACE, name="session-target-0123")

    recorded = [
        Request(group, resource, verb, namespace, LEADER_LEASE if namespace == NAMESPACE else "x")
        for namespace in ("team-a", "team-b")
        for group, resource, verb in WATCHED
    ] + [Request(g, r, v, NAMESPACE, LEADER_LEASE) for g, r, v in LEADER]
    assert unused(docs, recorded) == set()
    assert unused(docs, recorded[1:]) == {Grant(*recorded[0][:4])}

    cluster = render(MODES["default"])
    assert allows(cluster, "coordination.k8s.io", "leases", "update", NAMESPACE, name=LEADER_LEASE)
    assert allows(cluster, "session-operator.io", "sessions", "watch", "")  # all namespaces at once
