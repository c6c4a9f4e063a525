"""Drains and rollouts never wait forever, although only the leader is ever Ready.

A standby is live but not Ready, and the Kubernetes controllers count only Ready pods:

- The eviction API lets a Ready pod go only while its PodDisruptionBudget's
  ``disruptionsAllowed`` (Ready pods minus the pods the budget keeps) is above 0.
  A budget that keeps one pod, with one Ready pod, allows none: the leader could never
  be evicted and ``kubectl drain`` of its node would retry forever.
- A rolling update stops old Ready pods only while more than ``replicas -
  maxUnavailable`` pods are available, and new pods cannot become available while
  the old leader holds the Lease: with the usual 25%/25% the update never ends.

The two small models below follow the Kubernetes code for these decisions (pkg/
controller/disruption: getExpectedScale/countHealthyPods, pkg/registry/core/pod/
storage/eviction.go; pkg/controller/deployment/rolling.go: reconcileNewReplicaSet,
reconcileOldReplicaSets, cleanupUnhealthyReplicas, scaleDownOldReplicaSetsForRollingUpdate),
with readiness as the operator defines it, and check the rendered settings against
them. Each model also shows the naive setting failing, so that it is known to bite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from support.chart import only, render

# Budgets ---------------------------------------------------------------------------------


def resolve(value: int | str, total: int, *, round_up: bool) -> int:
    """An IntOrString against a total, as intstr.GetScaledValueFromIntOrPercent does."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    scaled = percent * total / 100
    return math.ceil(scaled) if round_up else math.floor(scaled)


def can_evict(pdb: dict[str, Any], replicas: int, ready: int, pod_ready: bool) -> bool:
    """Would the eviction API let one pod of the Deployment go (no eviction in flight)?"""
    spec = pdb["spec"]
    if "maxUnavailable" in spec:
        desired = replicas - resolve(spec["maxUnavailable"], replicas, round_up=True)
    else:
        desired = resolve(spec["minAvailable"], replicas, round_up=True)
    allowed = max(0, ready - desired)
    if not pod_ready:
        policy = spec.get("unhealthyPodEvictionPolicy", "IfHealthyBudget")
        return policy == "AlwaysAllow" or ready >= desired
    return allowed > 0


def drain_order_ok(pdb: dict[str, Any], replicas: int) -> bool:
    """Every pod can be evicted, whichever goes first: the leader or a standby."""
    leader_first = can_evict(pdb, replicas, ready=1, pod_ready=True)
    standby_first = replicas < 2 or can_evict(pdb, replicas, ready=1, pod_ready=False)
    # While no pod is Ready (the leader just went, a standby not yet leading), standbys go too.
    leaderless = replicas < 2 or can_evict(pdb, replicas, ready=0, pod_ready=False)
    return leader_first and standby_first and leaderless


def pdb_for(values: dict[str, Any]) -> dict[str, Any]:
    return only(render(values), "PodDisruptionBudget")


@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_the_budget_never_blocks_a_drain(replicas: int) -> None:
    pdb = pdb_for({"replicaCount": replicas})
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    assert drain_order_ok(pdb, replicas)


def test_the_budget_selects_the_operator_pods() -> None:
    docs = render()
    pod_labels = only(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert [d for d in render({"podDisruptionBudget": {"enabled": False}}) if d["kind"] == "PodDisruptionBudget"] == []


@pytest.mark.parametrize(
    "spec",
    [
        {"minAvailable": 1},
        {"maxUnavailable": 1},
        {"maxUnavailable": "50%"},
        {"minAvailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"},
        {"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"},
    ],
)
def test_budgets_that_keep_a_pod_would_hold_the_leader_forever(spec: dict[str, Any]) -> None:
    assert not can_evict({"spec": spec}, replicas=2, ready=1, pod_ready=True)


# Rollouts --------------------------------------------------------------------------------


@dataclass(eq=False)  # pods are told apart by identity
class Pod:
    leader: bool = False

    @property
    def ready(self) -> bool:
        return self.leader  # a standby is live but not ready


@dataclass
class ReplicaSet:
    pods: list[Pod] = field(default_factory=list)

    @property
    def available(self) -> int:
        return sum(p.ready for p in self.pods)


def rollout(strategy: dict[str, Any], replicas: int, steps: int = 50) -> bool:
    """Run a RollingUpdate from an old ReplicaSet whose first pod leads; True if it completes."""
    rolling = strategy.get("rollingUpdate", {})
    surge = resolve(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    old = ReplicaSet([Pod(leader=(i == 0)) for i in range(replicas)])
    new = ReplicaSet()
    for _ in range(steps):
        if not old.pods and len(new.pods) == replicas:
            return True
        # reconcileNewReplicaSet
        total = len(old.pods) + len(new.pods)
        if len(new.pods) < replicas and total < replicas + surge:
            new.pods += [Pod() for _ in range(min(replicas + surge - total, replicas - len(new.pods)))]
        else:
            # reconcileOldReplicaSets
            min_available = replicas - unavailable
            new_unavailable = len(new.pods) - new.available
            max_scaled_down = total - min_available - new_unavailable
            if max_scaled_down > 0:
                # cleanupUnhealthyReplicas, then scale down available old pods
                unhealthy = [p for p in old.pods if not p.ready][:max_scaled_down]
                old.pods = [p for p in old.pods if p not in unhealthy]
                available = old.available + new.available
                if available > min_available:
                    for _ in range(available - min_available):
                        ready = [p for p in old.pods if p.ready]
                        if ready:
                            old.pods.remove(ready[0])  # SIGTERM: the leader releases the Lease
        # Leader election: once nobody leads, some running pod takes the Lease.
        if not any(p.leader for p in old.pods + new.pods) and (old.pods or new.pods):
            (new.pods or old.pods)[0].leader = True
    return False


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_the_rendered_strategy_completes_a_rollout(replicas: int) -> None:
    strategy = only(render({"replicaCount": replicas}), "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxUnavailable"] == "100%"
    assert rollout(strategy, replicas)


@pytest.mark.parametrize(
    "strategy",
    [
        {},  # Kubernetes' default, 25% / 25%
        {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
        {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
    ],
)
def test_strategies_that_wait_for_available_pods_never_finish(strategy: dict[str, Any]) -> None:
    assert not rollout(strategy, replicas=2)
