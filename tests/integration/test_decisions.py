"""One active session per target, through the real operator process and an API server."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from support import sessions as s
from support.watcher import InvariantWatcher

pytestmark = pytest.mark.usefixtures("operator")


async def test_single_session_becomes_active_with_claim_and_event(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "alice-1", "repo/payments", profile="gpt-4o")
    items = await s.phases_when_settled(kube, namespace, ["alice-1"])
    alice = items["alice-1"]
    assert s.phase(alice) == "Active"
    assert s.condition(alice, "Ready")["status"] == "True"
    assert s.condition(alice, "Ready")["reason"] == "Acquired"
    assert {c["type"] for c in alice["status"]["conditions"]} == {
        "Ready", "Conflicted", "Replaced", "Archived", "Reconciling", "Stalled"
    }
    assert not alice["metadata"].get("finalizers")  # the claim is enough; namespaces delete freely
    claim = await s.claim(kube, namespace, "repo/payments")
    assert claim is not None
    assert claim["spec"]["holderIdentity"] == "alice-1"
    assert claim["metadata"]["annotations"]["session-operator.io/holder-uid"] == alice["metadata"]["uid"]
    assert claim["metadata"]["annotations"]["session-operator.io/target"] == "repo/payments"
    assert claim["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "session-operator"
    await s.wait_events(kube, namespace, "alice-1", [("Normal", "Activated")])


async def test_fifty_concurrent_sessions_one_active_rest_per_policy(kube: Any, namespace: str) -> None:
    target = "task-42/plan"
    policies = ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]
    rng = random.Random(42)
    specs = {f"s{i:02d}": {"onConflict": rng.choice(policies), "profile": f"p{i % 3}",
                           "priority": rng.randint(-1, 1)} for i in range(50)}
    async with InvariantWatcher(kube, namespace) as watcher:
        await asyncio.gather(*(s.create(kube, namespace, name, target, **spec) for name, spec in specs.items()))
        items = await s.phases_when_settled(kube, namespace, list(specs), within=60)
        await asyncio.sleep(1)  # anything still moving would show up in the watcher
        items = await s.all_sessions(kube, namespace)
    watcher.check()
    active = [n for n, o in items.items() if s.phase(o) == "Active"]
    assert len(active) == 1, active
    claim = await s.claim(kube, namespace, target)
    assert claim is not None and claim["spec"]["holderIdentity"] == active[0]
    allowed = {
        "Reject": {"Active", "Rejected", "Replaced"},
        "Queue": {"Active", "Queued", "Replaced"},
        "Replace": {"Active", "Replaced"},
        "ReplaceIfProfileChanged": {"Active", "Replaced", "Rejected"},
    }
    for name, spec in specs.items():
        assert s.phase(items[name]) in allowed[spec["onConflict"]], (name, spec, items[name]["status"])
        if s.phase(items[name]) == "Rejected" and spec["onConflict"] == "ReplaceIfProfileChanged":
            assert s.condition(items[name], "Ready")["reason"] == "DuplicateProfile"

    async def head_is_true() -> bool:
        # The head's refresh is written after the activation, and the rest of the queue
        # converges within the documented bound; wait for the head, not for a fixed time.
        current = await s.all_sessions(kube, namespace)
        queued = sorted((o for o in current.values() if s.phase(o) == "Queued"),
                        key=lambda o: o["status"]["queuePosition"])
        return not queued or (
            queued[0]["status"]["queuePosition"] == 1 and queued[0]["status"]["holder"]["name"] == active[0]
        )

    await s.eventually(head_is_true, within=15, what="the queue head shown behind the holder")


async def test_two_hundred_targets_all_active(kube: Any, namespace: str) -> None:
    names = [f"t{i:03d}" for i in range(200)]
    await asyncio.gather(*(s.create(kube, namespace, n, f"repo/{n}") for n in names))
    items = await s.phases_when_settled(kube, namespace, names, within=120)
    assert {s.phase(items[n]) for n in names} == {"Active"}


@pytest.mark.parametrize("release", ["Archived", "Completed", "Inactive", "delete"])
async def test_releasing_the_holder_promotes_queue_in_order(kube: Any, namespace: str, release: str) -> None:
    target = "device/7"
    await s.create(kube, namespace, "holder", target, priority=100)
    await s.phases_when_settled(kube, namespace, ["holder"])
    # priority first, then age, then name (same second: name decides)
    await s.create(kube, namespace, "low", target, onConflict="Queue", priority=0)
    await s.create(kube, namespace, "high-b", target, onConflict="Queue", priority=5)
    await s.create(kube, namespace, "high-a", target, onConflict="Queue", priority=5)
    items = await s.phases_when_settled(kube, namespace, ["low", "high-b", "high-a"])
    assert items["high-a"]["status"]["queuePosition"] == 1
    assert not items["high-a"]["metadata"].get("finalizers")
    async with InvariantWatcher(kube, namespace) as watcher:
        if release == "delete":
            await s.delete(kube, namespace, "holder")
        else:
            await s.patch_spec(kube, namespace, "holder", state=release)

        async def promoted() -> bool:
            return s.phase(await s.get(kube, namespace, "high-a")) == "Active"

        await s.eventually(promoted, within=10, what="high-a promoted")
        items = await s.phases_when_settled(kube, namespace, ["high-a", "high-b", "low"])
    watcher.check()
    assert s.condition(items["high-a"], "Ready")["reason"] == "Promoted"
    await s.wait_events(kube, namespace, "high-a", [("Normal", "Queued"), ("Normal", "Promoted")])
    await s.wait_events(kube, namespace, "high-b", [("Normal", "Queued")])  # a head refresh posts nothing

    async def new_head() -> dict[str, Any] | None:
        # Written after the promotion (the stage after the activation), so it may land a
        # moment after high-a shows Active.
        item = await s.get(kube, namespace, "high-b")
        status = (item or {}).get("status") or {}
        fresh = status.get("queuePosition") == 1 and (status.get("holder") or {}).get("name") == "high-a"
        return item if fresh else None

    head = await s.eventually(new_head, within=10, what="high-b shown as the new head behind high-a")
    assert s.phase(head) == "Queued"
    if release == "delete":
        assert "holder" not in items
    else:
        assert s.phase(items["holder"]) == release
        assert "finalizers" not in items["holder"]["metadata"] or not items["holder"]["metadata"]["finalizers"]
    claim = await s.claim(kube, namespace, target)
    assert claim is not None and claim["spec"]["holderIdentity"] == "high-a"


async def test_replace_is_atomic(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "chat-1", "user/alice", profile="gpt-4o")
    await s.phases_when_settled(kube, namespace, ["chat-1"])
    async with InvariantWatcher(kube, namespace) as watcher:
        await s.create(kube, namespace, "chat-2", "user/alice", profile="gpt-5", onConflict="Replace")
        items = await s.phases_when_settled(kube, namespace, ["chat-2"])
        items = await s.phases_when_settled(kube, namespace, ["chat-1", "chat-2"])
    watcher.check()
    old, new = items["chat-1"], items["chat-2"]
    assert s.phase(old) == "Replaced" and old["status"]["replacedBy"] == "chat-2"
    assert s.condition(old, "Replaced")["status"] == "True"
    assert s.condition(old, "Replaced")["reason"] == "Replaced"
    assert s.phase(new) == "Active" and new["status"]["replaces"] == "chat-1"
    assert s.condition(new, "Ready")["reason"] == "ReplacedPrevious"
    # The old one was written Replaced before the new one showed Active.
    replaced_at, active_at = watcher.first_seen("chat-1", "Replaced"), watcher.first_seen("chat-2", "Active")
    assert replaced_at is not None and active_at is not None and replaced_at < active_at
    claim = await s.claim(kube, namespace, "user/alice")
    assert claim is not None and claim["spec"]["leaseTransitions"] == 1
    await s.wait_events(kube, namespace, "chat-1", [("Normal", "Activated"), ("Normal", "Replaced")])
    await s.wait_events(kube, namespace, "chat-2", [("Normal", "Replaced")])


async def test_replace_if_profile_changed(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "a", "t/1", profile="gpt-4o")
    await s.create(kube, namespace, "c", "t/2", profile="gpt-4o")
    await s.phases_when_settled(kube, namespace, ["a", "c"])
    await s.create(kube, namespace, "b", "t/1", profile="gpt-4o", onConflict="ReplaceIfProfileChanged")
    await s.create(kube, namespace, "d", "t/2", profile="gpt-5", onConflict="ReplaceIfProfileChanged")
    items = await s.phases_when_settled(kube, namespace, ["a", "b", "c", "d"])
    assert s.phase(items["b"]) == "Rejected"
    assert s.condition(items["b"], "Ready")["reason"] == "DuplicateProfile"
    assert s.condition(items["b"], "Stalled")["status"] == "True"
    assert s.phase(items["a"]) == "Active"
    assert s.phase(items["c"]) == "Replaced"
    assert s.condition(items["c"], "Replaced")["reason"] == "ProfileChanged"
    assert s.phase(items["d"]) == "Active"


async def test_rejection_message_names_the_holder(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "alice-1", "repo/payments", profile="gpt-4o")
    items = await s.phases_when_settled(kube, namespace, ["alice-1"])
    since = items["alice-1"]["status"]["activeSince"]
    await s.create(kube, namespace, "bob-1", "repo/payments")
    items = await s.phases_when_settled(kube, namespace, ["bob-1"])
    bob = items["bob-1"]
    assert s.phase(bob) == "Rejected"
    assert s.condition(bob, "Ready")["message"] == (
        f'target "repo/payments" is held by session "alice-1" (profile "gpt-4o", active since {since}); '
        "archive it, or set spec.onConflict to Queue or Replace"
    )
    assert s.condition(bob, "Conflicted")["status"] == "True"
    assert bob["status"]["holder"] == {
        "name": "alice-1", "uid": items["alice-1"]["metadata"]["uid"], "profile": "gpt-4o", "activeSince": since,
    }
    assert "finalizers" not in bob["metadata"] or not bob["metadata"]["finalizers"]
    await s.wait_events(kube, namespace, "bob-1", [("Warning", "Rejected")])


async def test_same_target_in_two_namespaces_is_two_targets(kube: Any, namespace: str) -> None:
    other = await kube.create_namespace("iso")
    await s.create(kube, namespace, "x", "repo/shared")
    await s.create(kube, other, "x", "repo/shared", onConflict="Replace")
    first = await s.phases_when_settled(kube, namespace, ["x"])
    second = await s.phases_when_settled(kube, other, ["x"])
    assert s.phase(first["x"]) == "Active"
    assert s.phase(second["x"]) == "Active"
    assert s.condition(second["x"], "Ready")["reason"] == "Acquired"


async def test_spec_change_reevaluates_a_terminal_session(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "a", "repo/x")
    await s.phases_when_settled(kube, namespace, ["a"])
    await s.create(kube, namespace, "b", "repo/x")
    items = await s.phases_when_settled(kube, namespace, ["b"])
    assert s.phase(items["b"]) == "Rejected"
    await s.patch_spec(kube, namespace, "a", state="Completed")
    items = await s.phases_when_settled(kube, namespace, ["a"])
    await asyncio.sleep(0.5)
    assert s.phase(await s.get(kube, namespace, "b")) == "Rejected"  # terminal sticks
    await s.patch_spec(kube, namespace, "b", onConflict="Queue")
    items = await s.phases_when_settled(kube, namespace, ["b"])
    assert s.phase(items["b"]) == "Active"
    assert items["b"]["status"]["observedGeneration"] == 2


async def test_invalid_spec_names_the_field_and_others_go_on(kube: Any, namespace: str) -> None:
    # The schema accepts the form of this duration; only the operator can see that it
    # overflows (Go's durations are int64 nanoseconds, at most about 2562047h).
    await s.create(kube, namespace, "overflow", "repo/x", idleTimeout="9999999999h")
    await s.create(kube, namespace, "good", "repo/x")
    await s.create(kube, namespace, "other", "repo/y")
    items = await s.phases_when_settled(kube, namespace, ["overflow", "good", "other"])
    bad = items["overflow"]
    assert s.phase(bad) == "Invalid"
    ready = s.condition(bad, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith('spec.idleTimeout: duration "9999999999h" is out of range')
    assert s.condition(bad, "Stalled")["status"] == "True"
    assert s.phase(items["good"]) == "Active"
    assert s.phase(items["other"]) == "Active"
    await s.wait_events(kube, namespace, "overflow", [("Warning", "Invalid")])
    # Fixing the spec re-evaluates it.
    await s.patch_spec(kube, namespace, "overflow", idleTimeout="1h", onConflict="Queue")
    items = await s.phases_when_settled(kube, namespace, ["overflow"])
    assert s.phase(items["overflow"]) == "Queued"


async def test_a_claim_deleted_by_hand_is_restored_for_the_holder(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "holder", "repo/hand")
    await s.phases_when_settled(kube, namespace, ["holder"])
    claim = await s.claim(kube, namespace, "repo/hand")
    assert claim is not None
    status, _ = await kube.request(
        "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{claim['metadata']['name']}"
    )
    assert status == 200

    async def restored() -> dict[str, Any] | None:
        again = await s.claim(kube, namespace, "repo/hand")
        return again if again is not None and again["spec"]["holderIdentity"] == "holder" else None

    again = await s.eventually(restored, within=10, what="the claim restored")
    assert again["metadata"]["uid"] != claim["metadata"]["uid"]
    assert s.phase(await s.get(kube, namespace, "holder")) == "Active"
