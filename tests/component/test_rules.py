"""The contract's rules, checked on the operator's parts in one event loop.

Cache, informers, reconciler, executor, event poster and work queue run as
``runtime.Operator`` wires them (``support.inloop.InLoopOperator``, without kopf and
without leader election), with a real ``kube.Kube`` client, against an API emulator
running in the same loop (one per test). A test can hold a watch back, or feed the cache
a watch event itself, to make the operator's view stale on purpose. A ``RuleWatcher``
(``support.watcher``) checks "never two Active in one target, and Active only while
holding the claim" on every session and claim event it sees. Durations are seconds.

Each rule of the Session API contract (its rules and its lifecycle; the README's "How it
behaves" sums them up) and the test that holds it:

=====================================================  ===============================================================
rule                                                   test
=====================================================  ===============================================================
1 Exclusivity: a racing burst of creates               test_racing_burst_leaves_one_active_holding_the_claim
1 Exclusivity: two operators acting at once            test_two_operators_in_one_loop_never_make_two_active
1 Exclusivity: a decision on a stale view (lost race)  test_a_stale_cache_loses_its_race_rereads_and_converges
1 Exclusivity: a lagging watch's stale event           test_a_stale_watch_event_fed_late_changes_nothing
1 Exclusivity: a claim deleted by hand                 test_a_claim_deleted_by_hand_is_restored_for_the_holder
2 One evaluation per generation: activity              test_activity_moves_deadlines_but_decides_nothing_anew
2 One evaluation per generation: a spec change         test_terminal_phases_stick_until_a_spec_change
3 Release: Inactive, Completed, Archived, deleted      test_every_way_out_releases_and_promotes_the_head
  (also while a finalizer holds it), Abandoned;
  each promotes the head of the queue
3 Release: deleted while the operator is down          test_a_holder_deleted_while_down_is_released_on_return
4 Promotion in queue order (priority, age, name)       test_promotion_follows_priority_then_age_then_name
4 Burst order, a chain of Replace sessions             test_a_burst_is_applied_in_queue_order_and_a_replace_chain
5 Atomic replacement (Replaced before Active)          test_replacement_is_atomic_as_a_watcher_sees_it
5 ReplaceIfProfileChanged, same and changed profile    test_replace_if_profile_changed_both_ways
5 Activation on request (spec.activateRequest)         test_an_activation_request_replaces_the_holder_atomically
queue truth: holder and positions converge, paced      test_waiting_sessions_learn_the_truth_at_the_refresh_rate
6 Namespaces isolate                                   test_namespaces_isolate
spec: Invalid names the field, others go on            test_an_invalid_spec_names_the_field_and_the_target_goes_on
lifecycle: idleTimeout                                 test_idle_timeout_abandons_and_promotes_the_queue
lifecycle: maxDuration (whatever the activity)         test_max_duration_abandons_whatever_the_activity
lifecycle: archiveAfter 0s                             test_archive_after_zero_archives_at_once
lifecycle: deleteAfter                                 test_delete_after_deletes_an_archived_session
cache: a 410 on the watch, then a relist               test_a_410_relists_and_forgets_a_session_deleted_meanwhile
=====================================================  ===============================================================
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kube_emulator import Emulator
from session_operator.model import HOLDER_UID_ANNOTATION, claim_name, parse_time
from support import sessions as s
from support.inloop import InLoopOperator, RuleWatcher, until
from support.kubeclient import KubeClient

pytestmark = pytest.mark.timeout(60)

ACTIVITY = "session-operator.io/last-activity"


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def wait_phase(client: KubeClient, ns: str, name: str, phase: str, within: float = 10.0) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        obj = await s.get(client, ns, name)
        return obj if s.phase(obj) == phase else None

    result: dict[str, Any] = await until(reached, f"{name} to be {phase}", within=within, interval=0.02)
    return result


def reason(obj: dict[str, Any], type_: str = "Ready") -> str:
    return str(s.condition(obj, type_)["reason"])


def counts(counter: Any) -> dict[str, float]:
    """A labelled prometheus counter's ``_total`` samples by their (only) label value."""
    out: dict[str, float] = {}
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                out[next(iter(sample.labels.values()), "")] = sample.value
    return out


def holder_of(claim: dict[str, Any] | None) -> tuple[str | None, str | None]:
    if claim is None:
        return (None, None)
    return (claim["spec"].get("holderIdentity"), claim["metadata"]["annotations"].get(HOLDER_UID_ANNOTATION))


def active(items: dict[str, dict[str, Any]], target: str) -> list[str]:
    return sorted(n for n, o in items.items() if o["spec"]["target"] == target and s.phase(o) == "Active")


# --- rule 1: exclusivity -----------------------------------------------------------------


async def test_racing_burst_leaves_one_active_holding_the_claim(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    policies = ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]
    targets = ["repo/a", "repo/b"]
    async with RuleWatcher(client, namespace) as watcher:
        await asyncio.gather(*(
            s.create(
                client, namespace, f"s{i:02d}", targets[i % 2],
                onConflict=policies[(i // 2) % 4], profile=f"p{i % 3}", priority=i % 5,
            )
            for i in range(40)
        ))
        await op.settled()
        # A second wave: every holder completes while more sessions arrive.
        items = await s.all_sessions(client, namespace)
        holders = [name for target in targets for name in active(items, target)]
        await asyncio.gather(
            *(s.patch_spec(client, namespace, name, state="Completed") for name in holders),
            *(s.create(client, namespace, f"w{i:02d}", targets[i % 2], onConflict="Queue") for i in range(10)),
        )
        await op.settled()
    watcher.check()
    items = await s.all_sessions(client, namespace)
    assert all(s.decided(obj) for obj in items.values())
    for target in targets:
        winners = active(items, target)
        assert len(winners) == 1, (target, winners)
        assert holder_of(await s.claim(client, namespace, target)) == (
            winners[0], items[winners[0]]["metadata"]["uid"]
        )
    # The watcher saw the whole race: every session created, then decided.
    versions = Counter(uid for _, _, _, uid, _, _ in watcher.seen.session_versions)
    assert len(versions) == 50 and min(versions.values()) >= 2
    # The counts the cache keeps for /metrics went through every change and are exact.
    assert op.cache.phase_counts() == dict(Counter((namespace, s.phase(o)) for o in items.values()))
    assert op.cache.oldest_undecided(datetime.now(UTC)) == 0.0


async def test_two_operators_in_one_loop_never_make_two_active(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    first: InLoopOperator = await operator(identity="first")
    second: InLoopOperator = await operator(identity="second")
    async with RuleWatcher(client, namespace) as watcher:
        await asyncio.gather(*(
            s.create(client, namespace, f"s{i:02d}", "device/7", onConflict=["Queue", "Replace"][i % 2])
            for i in range(30)
        ))
        await first.settled()
        await second.settled()
        items = await s.all_sessions(client, namespace)
        (holder,) = active(items, "device/7")
        await s.patch_spec(client, namespace, holder, state="Completed")  # both promote at once
        await first.settled()
        await second.settled()
    watcher.check()
    items = await s.all_sessions(client, namespace)
    assert len(active(items, "device/7")) == 1
    assert all(s.decided(obj) for obj in items.values())


@pytest.mark.parametrize("stale", ["session", "claim"])
async def test_a_stale_cache_loses_its_race_rereads_and_converges(
    operator: Any, client: KubeClient, namespace: str, stale: str
) -> None:
    op: InLoopOperator = await operator()
    key = (namespace, "repo/race")
    await s.create(client, namespace, "a", "repo/race")
    await op.settled()
    async with RuleWatcher(client, namespace) as watcher:
        if stale == "session":
            # The session watch lags: the holder is made Inactive behind the cache's back,
            # and a Replace session arrives that the cache is told about directly.
            op.hold_sessions()
            await s.patch_spec(client, namespace, "a", state="Inactive")
            created = await s.create(client, namespace, "c", "repo/race", onConflict="Replace")
            assert op.cache.session_event("ADDED", created) == {key}
            op.queue.add(key)
        else:
            # The claim watch lags: someone else writes the claim (same holder, new version).
            op.hold_claims()
            status, _ = await client.request(
                "PATCH",
                f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{claim_name('repo/race')}",
                json={"metadata": {"labels": {"touched": "by-hand"}}},
                content_type="application/merge-patch+json",
            )
            assert status == 200
            await s.create(client, namespace, "c", "repo/race", onConflict="Replace")
        await wait_phase(client, namespace, "c", "Active")
        await until(op.quiet, "the reconcile to end")
        held = op.sessions_valves[0].held if stale == "session" else op.claims_valves[0].held
        assert held, "the watch was held back while the operator decided"
        op.release_sessions()
        op.release_claims()
        await op.settled()
    watcher.check()
    conflicts = counts(op.metrics.claim_conflicts)
    assert conflicts.get(stale, 0) >= 1, conflicts
    items = await s.all_sessions(client, namespace)
    assert s.phase(items["c"]) == "Active"
    assert holder_of(await s.claim(client, namespace, "repo/race")) == ("c", items["c"]["metadata"]["uid"])
    if stale == "session":
        # Re-read, the holder had left on its own: it is Inactive, not Replaced, and the
        # newcomer simply acquired the free target.
        assert s.phase(items["a"]) == "Inactive"
        assert "Replaced" not in watcher.phases("a")
        assert reason(items["c"]) == "Acquired"
    else:
        assert s.phase(items["a"]) == "Replaced"


async def test_a_stale_watch_event_fed_late_changes_nothing(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    old = await s.create(client, namespace, "a", "repo/late")
    await op.settled()
    await s.patch_spec(client, namespace, "a", state="Completed")
    await s.create(client, namespace, "b", "repo/late")
    await op.settled()
    before = await s.all_sessions(client, namespace)
    # The watch delivers, late, the version of "a" from before it completed.
    assert op.cache.session_event("MODIFIED", old) == set()
    op.queue.add((namespace, "repo/late"))
    await op.settled()
    after = await s.all_sessions(client, namespace)
    assert {n: o["metadata"]["resourceVersion"] for n, o in after.items()} == {
        n: o["metadata"]["resourceVersion"] for n, o in before.items()
    }
    assert (s.phase(after["a"]), s.phase(after["b"])) == ("Completed", "Active")


async def test_a_claim_deleted_by_hand_is_restored_for_the_holder(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    holder = await s.create(client, namespace, "holder", "repo/hand")
    await op.settled()
    claim = await s.claim(client, namespace, "repo/hand")
    assert claim is not None
    async with RuleWatcher(client, namespace) as watcher:
        status, _ = await client.request(
            "DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{claim['metadata']['name']}"
        )
        assert status == 200
        await s.create(client, namespace, "late", "repo/hand")  # must not take the target meanwhile

        async def restored() -> dict[str, Any] | None:
            again = await s.claim(client, namespace, "repo/hand")
            return again if holder_of(again)[0] == "holder" else None

        again = await until(restored, "the claim restored")
        await op.settled()
    assert not watcher.violations  # never two Active (the claim was gone by hand for a moment)
    assert again["metadata"]["uid"] != claim["metadata"]["uid"]
    assert holder_of(again) == ("holder", holder["metadata"]["uid"])
    items = await s.all_sessions(client, namespace)
    assert (s.phase(items["holder"]), s.phase(items["late"])) == ("Active", "Rejected")


# --- rule 2: one evaluation per generation -----------------------------------------------


async def test_activity_moves_deadlines_but_decides_nothing_anew(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/busy", idleTimeout="1h")
    await s.create(client, namespace, "rejected", "repo/busy")
    await op.settled()
    before = await s.all_sessions(client, namespace)
    decisions = counts(op.metrics.decisions)
    now = datetime.now(UTC).replace(microsecond=0)
    annotated = {
        name: await s.annotate(client, namespace, name, {ACTIVITY: stamp(now)}) for name in ("holder", "rejected")
    }
    await op.settled()
    after = await s.all_sessions(client, namespace)
    assert counts(op.metrics.decisions) == decisions  # nothing decided anew
    holder = after["holder"]
    assert holder["metadata"]["generation"] == 1 and holder["status"]["observedGeneration"] == 1
    assert s.phase(holder) == "Active"
    assert holder["status"]["lastActivityTime"] == stamp(now)
    assert parse_time(holder["status"]["idleDeadline"]) == now + timedelta(hours=1)
    assert s.condition(holder, "Ready") == s.condition(before["holder"], "Ready")  # same reason, same time
    # The rejected session's status is not even written: its version is the annotation's.
    assert after["rejected"]["metadata"]["resourceVersion"] == annotated["rejected"]["metadata"]["resourceVersion"]
    assert after["rejected"]["status"] == before["rejected"]["status"]
    await s.wait_events(client, namespace, "holder", [("Normal", "Activated")])


async def test_terminal_phases_stick_until_a_spec_change(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/stick")
    await s.create(client, namespace, "rejected", "repo/stick", profile="p1")
    await op.settled()
    rejected = await s.get(client, namespace, "rejected")
    assert s.phase(rejected) == "Rejected"
    # The holder leaves: the rejected session stays rejected (no queue to be promoted from).
    await s.patch_spec(client, namespace, "holder", state="Completed")
    await op.settled()
    again = await s.get(client, namespace, "rejected")
    assert again is not None and again["status"] == rejected["status"]  # type: ignore[index]
    # A spec change is a new generation: evaluated from scratch, it takes the free target.
    await s.patch_spec(client, namespace, "rejected", profile="p2")
    changed = await wait_phase(client, namespace, "rejected", "Active")
    await op.settled()
    assert changed["metadata"]["generation"] == 2 and changed["status"]["observedGeneration"] == 2
    assert reason(changed) == "Acquired"


# --- rule 3: release, and rule 4: promotion ------------------------------------------------


@pytest.mark.parametrize(
    "way_out",
    [
        "Inactive",
        "Completed",
        "Archived",
        "deleted",
        "deleted, held by a finalizer",
        "Abandoned",
    ],
)
async def test_every_way_out_releases_and_promotes_the_head(
    operator: Any, client: KubeClient, namespace: str, way_out: str
) -> None:
    spec = {"idleTimeout": "2s"} if way_out == "Abandoned" else {}
    await s.create(client, namespace, "holder", "repo/out", priority=10, **spec)
    if way_out.endswith("finalizer"):  # someone else's: the object outlives its deletion
        status, _ = await client.request(
            "PATCH", s.sessions_path(namespace, "holder"), json={"metadata": {"finalizers": ["example.com/keep"]}},
            content_type="application/merge-patch+json",
        )
        assert status == 200
    await s.create(client, namespace, "q-low", "repo/out", onConflict="Queue", priority=0)
    await s.create(client, namespace, "q-high", "repo/out", onConflict="Queue", priority=5)
    async with RuleWatcher(client, namespace) as watcher:
        op: InLoopOperator = await operator()  # the three are decided together, in queue order
        await op.settled()
        first = await s.all_sessions(client, namespace)
        assert [s.phase(first[n]) for n in ("holder", "q-low", "q-high")] == ["Active", "Queued", "Queued"]
        assert first["q-high"]["status"]["queuePosition"] == 1
        before = await s.claim(client, namespace, "repo/out")
        assert before is not None
        if way_out.startswith("deleted"):
            await s.delete(client, namespace, "holder")
        elif way_out != "Abandoned":
            await s.patch_spec(client, namespace, "holder", state=way_out)
        promoted = await wait_phase(client, namespace, "q-high", "Active")
        await op.settled()
    watcher.check()
    items = await s.all_sessions(client, namespace)
    if way_out == "deleted":
        assert "holder" not in items
    elif way_out.startswith("deleted"):
        # Still there while the finalizer holds it: written Inactive before the claim moved.
        assert s.phase(items["holder"]) == "Inactive"
        inactive_at, promoted_at = watcher.first_seen("holder", "Inactive"), watcher.first_seen("q-high", "Active")
        assert inactive_at is not None and promoted_at is not None and inactive_at < promoted_at
    else:
        assert s.phase(items["holder"]) == way_out
        assert s.condition(items["holder"], "Ready")["status"] == "False"
    assert reason(promoted) == "Promoted"
    assert s.phase(items["q-low"]) == "Queued" and items["q-low"]["status"]["queuePosition"] == 1
    assert items["q-low"]["status"]["holder"]["name"] == "q-high"
    claim = await s.claim(client, namespace, "repo/out")
    assert holder_of(claim) == ("q-high", promoted["metadata"]["uid"])
    # The claim moved in one write: released and promoted in the same reconcile, no
    # moment without a claim, no periodic sweep (there is none here).
    assert claim is not None and claim["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
    versions = watcher.seen.claim_versions[(namespace, claim_name("repo/out"))]
    since = int(before["metadata"]["resourceVersion"])
    assert [holder for rv, holder, _ in versions if rv > since] == ["q-high"]


async def test_a_holder_deleted_while_down_is_released_on_return(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    first: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/down")
    await s.create(client, namespace, "waiter", "repo/down", onConflict="Queue")
    await first.settled()
    await first.stop()
    await s.delete(client, namespace, "holder")
    second: InLoopOperator = await operator()  # a new process: its cache never saw "holder"
    promoted = await wait_phase(client, namespace, "waiter", "Active")
    await second.settled()
    assert reason(promoted) == "Promoted"
    assert holder_of(await s.claim(client, namespace, "repo/down"))[0] == "waiter"


async def test_promotion_follows_priority_then_age_then_name(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/order")
    await op.settled()
    old = await s.create(client, namespace, "z-old", "repo/order", onConflict="Queue")
    # The next ones must be younger: creationTimestamp has whole seconds.
    created = parse_time(old["metadata"]["creationTimestamp"])
    assert created is not None
    await asyncio.sleep(max(0.0, (created + timedelta(seconds=1) - datetime.now(UTC)).total_seconds()) + 0.01)
    young_b = await s.create(client, namespace, "young-b", "repo/order", onConflict="Queue")
    young_a = await s.create(client, namespace, "young-a", "repo/order", onConflict="Queue")
    await s.create(client, namespace, "high", "repo/order", onConflict="Queue", priority=1)
    assert young_a["metadata"]["creationTimestamp"] == young_b["metadata"]["creationTimestamp"], (
        "created a second apart: the name order is not what decides between them"
    )
    assert young_a["metadata"]["creationTimestamp"] > old["metadata"]["creationTimestamp"]
    await op.settled()
    expected = ["high", "z-old", "young-a", "young-b"]
    order: list[str] = []
    current = "holder"
    async with RuleWatcher(client, namespace) as watcher:
        for position in range(len(expected)):
            await s.patch_spec(client, namespace, current, state="Completed")

            async def next_holder(previous: str = current) -> str | None:
                items = await s.all_sessions(client, namespace)
                winners = [n for n in active(items, "repo/order") if n != previous]
                return winners[0] if winners and s.phase(items[previous]) == "Completed" else None

            current = await until(next_holder, f"a promotion after {current}")
            order.append(current)
            await op.settled()
            # The head's position is exact.
            items = await s.all_sessions(client, namespace)
            heads = [n for n, o in items.items() if s.phase(o) == "Queued" and o["status"]["queuePosition"] == 1]
            assert heads == expected[position + 1 : position + 2], (order, heads)
    watcher.check()
    assert order == ["high", "z-old", "young-a", "young-b"]


async def test_a_burst_is_applied_in_queue_order_and_a_replace_chain(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    # Created while no operator runs, so that they are evaluated together (a restart).
    await s.create(client, namespace, "first", "repo/burst", priority=3)
    await s.create(client, namespace, "r-a", "repo/burst", onConflict="Replace", priority=2)
    await s.create(client, namespace, "waiter", "repo/burst", onConflict="Queue", priority=1)
    await s.create(client, namespace, "r-b", "repo/burst", onConflict="Replace")
    await s.create(client, namespace, "r-c", "repo/burst", onConflict="Replace")  # after r-b by age and name
    await s.create(client, namespace, "late", "repo/burst", priority=-1)
    async with RuleWatcher(client, namespace) as watcher:
        op: InLoopOperator = await operator()
        await op.settled()
    watcher.check()
    items = await s.all_sessions(client, namespace)
    assert {n: s.phase(o) for n, o in items.items()} == {
        "first": "Replaced", "r-a": "Replaced", "r-b": "Replaced", "r-c": "Active",
        "waiter": "Queued", "late": "Rejected",
    }
    # Each one met the holder left by those before it.
    assert [items[n]["status"].get("replacedBy") for n in ("first", "r-a", "r-b")] == ["r-a", "r-b", "r-c"]
    assert items["r-c"]["status"]["replaces"] == "r-b"
    assert reason(items["r-c"]) == "ReplacedPrevious"
    assert items["late"]["status"]["holder"]["name"] == "r-c"
    assert items["waiter"]["status"]["queuePosition"] == 1
    # Only the last of the chain was ever seen Active.
    for name in ("first", "r-a", "r-b"):
        assert "Active" not in watcher.phases(name), (name, watcher.phases(name))
    assert holder_of(await s.claim(client, namespace, "repo/burst")) == ("r-c", items["r-c"]["metadata"]["uid"])


# --- rule 5: replacement --------------------------------------------------------------------


async def test_replacement_is_atomic_as_a_watcher_sees_it(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "old", "repo/swap", profile="p1")
    await op.settled()
    before = await s.claim(client, namespace, "repo/swap")
    assert before is not None
    async with RuleWatcher(client, namespace) as watcher:
        await s.create(client, namespace, "new", "repo/swap", onConflict="Replace", profile="p2")
        await wait_phase(client, namespace, "new", "Active")
        await op.settled()
    watcher.check()
    replaced_at, active_at = watcher.first_seen("old", "Replaced"), watcher.first_seen("new", "Active")
    assert replaced_at is not None and active_at is not None and replaced_at < active_at
    # One conditional write moved the claim, between the two, and counted a transition.
    since = int(before["metadata"]["resourceVersion"])
    versions = [v for v in watcher.seen.claim_versions[(namespace, claim_name("repo/swap"))] if v[0] > since]
    assert len(versions) == 1
    (claim_rv, holder, _) = versions[0]
    assert holder == "new" and replaced_at < claim_rv < active_at
    after = await s.claim(client, namespace, "repo/swap")
    assert after is not None and after["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
    items = await s.all_sessions(client, namespace)
    assert items["old"]["status"]["replacedBy"] == "new" and items["new"]["status"]["replaces"] == "old"
    assert reason(items["old"], "Replaced") == "Replaced"
    await s.wait_event(client, namespace, "old", ("Normal", "Replaced"))
    await s.wait_event(client, namespace, "new", ("Normal", "Replaced"))


async def test_replace_if_profile_changed_both_ways(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/model", profile="gpt-4o")
    await op.settled()
    async with RuleWatcher(client, namespace) as watcher:
        await s.create(client, namespace, "same", "repo/model", onConflict="ReplaceIfProfileChanged", profile="gpt-4o")
        await op.settled()
        items = await s.all_sessions(client, namespace)
        assert (s.phase(items["holder"]), s.phase(items["same"])) == ("Active", "Rejected")
        assert reason(items["same"]) == "DuplicateProfile"
        assert s.condition(items["same"], "Stalled")["status"] == "True"
        await s.create(
            client, namespace, "changed", "repo/model", onConflict="ReplaceIfProfileChanged", profile="gpt-5"
        )
        await wait_phase(client, namespace, "changed", "Active")
        await op.settled()
    watcher.check()
    items = await s.all_sessions(client, namespace)
    assert s.phase(items["holder"]) == "Replaced"
    assert reason(items["holder"], "Replaced") == "ProfileChanged"
    assert "gpt-4o" in s.condition(items["holder"], "Ready")["message"]
    assert reason(items["changed"]) == "ReplacedPrevious"
    assert s.phase(items["same"]) == "Rejected"
    # The rejected session names the running one to use instead (reuse the running session).
    assert items["same"]["status"]["holder"]["name"] == "holder"
    assert 'use session "holder"' in s.condition(items["same"], "Ready")["message"]


async def test_an_activation_request_replaces_the_holder_atomically(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/now")
    await op.settled()
    for name in ("wait-1", "wait-2"):
        await s.create(client, namespace, name, "repo/now", onConflict="Queue")
    await op.settled()
    before = await s.claim(client, namespace, "repo/now")
    assert before is not None
    async with RuleWatcher(client, namespace) as watcher:
        # What `kubectl session activate wait-2` sends: one merge patch.
        await s.patch_spec(client, namespace, "wait-2", state="Active", activateRequest="2026-11-21T10:00:00.5Z")
        await wait_phase(client, namespace, "wait-2", "Active")
        await op.settled()
    watcher.check()
    replaced_at, active_at = watcher.first_seen("holder", "Replaced"), watcher.first_seen("wait-2", "Active")
    assert replaced_at is not None and active_at is not None and replaced_at < active_at
    since = int(before["metadata"]["resourceVersion"])
    versions = [v for v in watcher.seen.claim_versions[(namespace, claim_name("repo/now"))] if v[0] > since]
    assert [holder for _, holder, _ in versions] == ["wait-2"]
    after = await s.claim(client, namespace, "repo/now")
    assert after is not None and after["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
    items = await s.all_sessions(client, namespace)
    assert items["wait-2"]["status"]["activateRequest"] == "2026-11-21T10:00:00.5Z"
    assert items["wait-2"]["status"].get("queuePosition") is None
    assert (s.phase(items["wait-1"]), items["wait-1"]["status"]["queuePosition"]) == ("Queued", 1)
    assert items["wait-1"]["status"]["holder"]["name"] == "wait-2"


async def test_waiting_sessions_learn_the_truth_at_the_refresh_rate(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    rate = 4
    op: InLoopOperator = await operator(queue_refresh_rate=rate)
    await s.create(client, namespace, "w-00", "repo/truth")
    await op.settled()
    for i in range(1, 21):
        await s.create(client, namespace, f"w-{i:02d}", "repo/truth", onConflict="Queue")
    await op.settled()
    # Three holder changes in a row: complete the holder, the head is promoted, repeat.
    for i in range(3):
        await s.patch_spec(client, namespace, f"w-{i:02d}", state="Completed")
        await wait_phase(client, namespace, f"w-{i + 1:02d}", "Active")
    changed = asyncio.get_running_loop().time()

    async def true_everywhere() -> bool:
        items = await s.all_sessions(client, namespace)
        waiting = sorted(n for n, o in items.items() if s.phase(o) == "Queued")
        return all(
            items[n]["status"]["holder"]["name"] == "w-03" and items[n]["status"]["queuePosition"] == position
            for position, n in enumerate(waiting, start=1)
        )

    await until(true_everywhere, "every waiting session to show the truth", within=10, interval=0.05)
    took = asyncio.get_running_loop().time() - changed
    # The documented bound: ceil(waiting / rate) seconds after the last change (and a
    # little for the operator to act).
    assert took <= -(-17 // rate) + 1.0, took


# --- rule 6: namespaces ---------------------------------------------------------------------


async def test_namespaces_isolate(operator: Any, client: KubeClient) -> None:
    a, b, unwatched = [await client.create_namespace(p) for p in ("a", "b", "c")]
    op: InLoopOperator = await operator(namespaces=[a, b])
    holder_a = await s.create(client, a, "holder", "repo/shared")
    holder_b = await s.create(client, b, "holder", "repo/shared")
    await s.create(client, unwatched, "holder", "repo/shared")
    await op.settled()
    await s.create(client, b, "replacer", "repo/shared", onConflict="Replace")
    await s.create(client, a, "waiter", "repo/shared", onConflict="Queue")
    await op.settled()
    in_a, in_b = await s.all_sessions(client, a), await s.all_sessions(client, b)
    assert (s.phase(in_a["holder"]), s.phase(in_a["waiter"])) == ("Active", "Queued")
    assert in_a["waiter"]["status"]["holder"]["uid"] == holder_a["metadata"]["uid"]
    assert (s.phase(in_b["holder"]), s.phase(in_b["replacer"])) == ("Replaced", "Active")
    assert holder_of(await s.claim(client, a, "repo/shared")) == ("holder", holder_a["metadata"]["uid"])
    assert holder_of(await s.claim(client, b, "repo/shared"))[0] == "replacer"
    assert holder_b["metadata"]["uid"] != holder_a["metadata"]["uid"]
    # Releasing in one namespace promotes there only.
    await s.delete(client, a, "holder")
    await wait_phase(client, a, "waiter", "Active")
    await op.settled()
    assert s.phase(await s.get(client, b, "replacer")) == "Active"
    # A namespace that is not watched is not touched.
    assert "status" not in (await s.get(client, unwatched, "holder") or {})
    assert await s.claim(client, unwatched, "repo/shared") is None


# --- spec ------------------------------------------------------------------------------------


async def test_an_invalid_spec_names_the_field_and_the_target_goes_on(
    operator: Any, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    # The schema accepts the form; the value is beyond a Go duration (about 2562047h).
    await s.create(client, namespace, "overflow", "repo/x", idleTimeout="9999999h", priority=5)
    await s.create(client, namespace, "other", "repo/x")
    await op.settled()
    items = await s.all_sessions(client, namespace)
    bad = items["overflow"]
    assert s.phase(bad) == "Invalid"
    ready = s.condition(bad, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.idleTimeout: ")
    assert s.condition(bad, "Stalled")["status"] == "True"
    assert s.phase(items["other"]) == "Active"
    await s.wait_events(client, namespace, "overflow", [("Warning", "Invalid")])
    # Fixed, it is evaluated again.
    await s.patch_spec(client, namespace, "overflow", idleTimeout="1h", onConflict="Queue")
    await wait_phase(client, namespace, "overflow", "Queued")
    await op.settled()


# --- lifecycle -------------------------------------------------------------------------------


async def test_idle_timeout_abandons_and_promotes_the_queue(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "idle", "repo/idle", idleTimeout="1s")
    await s.create(client, namespace, "next", "repo/idle", onConflict="Queue")
    async with RuleWatcher(client, namespace) as watcher:
        abandoned = await wait_phase(client, namespace, "idle", "Abandoned")
        promoted = await wait_phase(client, namespace, "next", "Active")
        await op.settled()
    watcher.check()
    ready = s.condition(abandoned, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "IdleTimeout")
    assert "spec.idleTimeout" in ready["message"]
    ended, since = parse_time(abandoned["status"]["endedAt"]), parse_time(abandoned["status"]["activeSince"])
    assert ended is not None and since is not None and ended - since >= timedelta(seconds=1)
    assert reason(promoted) == "Promoted"
    await s.wait_event(client, namespace, "idle", ("Normal", "Abandoned"))


async def test_max_duration_abandons_whatever_the_activity(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "long", "repo/long", maxDuration="1s", idleTimeout="1h")
    await wait_phase(client, namespace, "long", "Active")
    await s.annotate(client, namespace, "long", {ACTIVITY: stamp(datetime.now(UTC))})
    abandoned = await wait_phase(client, namespace, "long", "Abandoned")
    await op.settled()
    ready = s.condition(abandoned, "Ready")
    assert ready["reason"] == "MaxDurationExceeded" and "spec.maxDuration" in ready["message"]
    assert await s.claim(client, namespace, "repo/long") is None  # released (and deleted)


async def test_archive_after_zero_archives_at_once(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    await s.create(client, namespace, "holder", "repo/zero")
    await s.create(client, namespace, "rejected", "repo/zero", archiveAfter="0s")
    await s.create(client, namespace, "done", "repo/zero-b", archiveAfter="0s")
    await op.settled()
    await s.patch_spec(client, namespace, "done", state="Completed")
    await op.settled()
    items = await s.all_sessions(client, namespace)
    for name in ("rejected", "done"):
        assert s.phase(items[name]) == "Archived", name
        assert reason(items[name], "Archived") == "Retention"
        assert items[name]["status"]["archivedAt"] and items[name]["status"]["endedAt"]
    assert s.phase(items["holder"]) == "Active"
    assert op.queue.deadlines == 0  # nothing else due: no retention set (deleteAfter unset)


async def test_delete_after_deletes_an_archived_session(operator: Any, client: KubeClient, namespace: str) -> None:
    op: InLoopOperator = await operator()
    created = await s.create(client, namespace, "brief", "repo/brief", archiveAfter="0s", deleteAfter="1s")
    await op.settled()
    await s.patch_spec(client, namespace, "brief", state="Completed")
    archived = await wait_phase(client, namespace, "brief", "Archived")

    async def deleted() -> bool:
        return await s.get(client, namespace, "brief") is None

    await until(deleted, "the archived session deleted", within=10)
    seen_gone = datetime.now(UTC)
    archived_at = parse_time(archived["status"]["archivedAt"])
    assert archived_at is not None and seen_gone - archived_at >= timedelta(seconds=1)
    await op.settled()
    assert op.cache.session(created["metadata"]["uid"]) is None
    deletions = [x.value for m in op.metrics.deletions.collect() for x in m.samples if x.name.endswith("_total")]
    assert deletions == [1.0]


# --- the cache: a 410 on the watch ---------------------------------------------------------


async def test_a_410_relists_and_forgets_a_session_deleted_meanwhile(
    operator: Any, server: Emulator, client: KubeClient, namespace: str
) -> None:
    op: InLoopOperator = await operator()
    holder = await s.create(client, namespace, "holder", "repo/relist")
    await s.create(client, namespace, "waiter", "repo/relist", onConflict="Queue")
    await op.settled()
    (informer,) = op.session_informers
    assert informer.lists == 1
    # The session watch breaks and cannot come back until the deletion is out of the
    # server's history: the operator can only learn of it from a new listing.
    blocked = server.faults.fail_next(
        10**6, status=503, method="^GET$", path=r"^/apis/session-operator\.io/v1alpha1/sessions$"
    )
    server.drop_watches(abort=False)
    await s.delete(client, namespace, "holder")
    server.compact()
    server.faults.remove(blocked)
    promoted = await wait_phase(client, namespace, "waiter", "Active")
    await op.settled()
    assert informer.lists == 2  # the watch's version was too old (410): listed again
    assert op.cache.session(holder["metadata"]["uid"]) is None
    assert op.cache.known_gone(holder["metadata"]["uid"])
    assert reason(promoted) == "Promoted"
    assert holder_of(await s.claim(client, namespace, "repo/relist")) == ("waiter", promoted["metadata"]["uid"])


def test_the_table_names_every_test() -> None:
    """The module docstring's table and the tests of this module agree."""
    named = {word for word in (__doc__ or "").split() if word.startswith("test_")}
    tests = {name for name in globals() if name.startswith("test_")} - {"test_the_table_names_every_test"}
    assert named == tests
