"""The arbiter's decisions, one rule at a time, and the exclusivity invariant as a property."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_operator.arbiter import Defaults, decide
from session_operator.model import LEGACY_FINALIZER, Phase
from session_operator.plan import status_patch
from support.simulator import T0, InvariantViolation, World


def conditions(world: World, name: str) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in world.status(name)["conditions"]}


# --- single sessions -------------------------------------------------------------------


def test_first_session_acquires_free_target() -> None:
    world = World()
    world.create("alice-1", profile="gpt-4o")
    plan = world.reconcile()
    assert world.phase("alice-1") == "Active"
    assert world.claim is not None and world.claim["spec"]["holderIdentity"] == "alice-1"
    assert world.claim["metadata"]["annotations"]["session-operator.io/holder-uid"] == world.uid("alice-1")
    assert conditions(world, "alice-1") == {
        "Ready": ("True", "Acquired"),
        "Conflicted": ("False", "Active"),
        "Replaced": ("False", "Active"),
        "Archived": ("False", "Active"),
        "Reconciling": ("False", "Active"),
        "Stalled": ("False", "Active"),
    }
    status = world.status("alice-1")
    assert status["observedGeneration"] == 1
    assert status["activeSince"] == "2026-11-21T10:00:00Z"
    assert status["lastActivityTime"] == "2026-11-21T10:00:00Z"
    assert "idleDeadline" not in status
    # The first plan posted an Activated event; no finalizer: the claim is enough.
    first = world.plans[0]
    assert [w.transition.event_reason for w in first.writes if w.transition] == ["Activated"]
    assert [type(step).__name__ for step in first.steps] == ["ClaimChange", "StatusWrite"]
    assert not world.bodies[world.uid("alice-1")]["metadata"].get("finalizers")
    assert plan is not None


def test_no_write_when_nothing_changed() -> None:
    world = World()
    world.create("alice-1")
    world.reconcile()
    plan = decide(world.views(), world.claim_view(), world.now + timedelta(seconds=5))
    assert plan.empty


def test_every_condition_present_and_transition_time_kept() -> None:
    world = World()
    world.create("alice-1")
    world.create("bob-1", onConflict="Queue")
    world.reconcile()
    before = {c["type"]: c["lastTransitionTime"] for c in world.status("bob-1")["conditions"]}
    world.advance(60)
    world.set_spec("alice-1", state="Completed")
    world.reconcile()
    after = {c["type"]: c for c in world.status("bob-1")["conditions"]}
    # Ready flipped False -> True: new time; Archived stayed False: old time.
    assert after["Ready"]["lastTransitionTime"] == "2026-11-21T10:01:00Z"
    assert after["Archived"]["lastTransitionTime"] == before["Archived"]
    assert set(after) == {"Ready", "Conflicted", "Replaced", "Archived", "Reconciling", "Stalled"}


# --- policies --------------------------------------------------------------------------


def test_reject_names_the_holder() -> None:
    world = World()
    world.create("alice-1", profile="gpt-4o")
    world.reconcile()
    world.advance(5)
    world.create("bob-1", profile="gpt-5")
    world.reconcile()
    assert world.phase("bob-1") == "Rejected"
    ready = world.condition("bob-1", "Ready")
    assert ready["reason"] == "TargetBusy"
    assert ready["message"] == (
        'target "repo/payments" is held by session "alice-1" (profile "gpt-4o", active since '
        "2026-11-21T10:00:00Z); archive it, or set spec.onConflict to Queue or Replace"
    )
    assert conditions(world, "bob-1")["Conflicted"] == ("True", "TargetBusy")
    assert conditions(world, "bob-1")["Stalled"] == ("True", "TargetBusy")
    assert world.status("bob-1")["holder"] == {
        "name": "alice-1",
        "uid": world.uid("alice-1"),
        "profile": "gpt-4o",
        "activeSince": "2026-11-21T10:00:00Z",
    }
    assert world.status("bob-1")["endedAt"] == "2026-11-21T10:00:05Z"
    assert world.view("bob-1").has_finalizer is False


def test_queue_then_promotion_in_priority_age_name_order() -> None:
    world = World()
    world.create("holder")
    world.reconcile()
    world.advance(1)
    world.create("low-old", onConflict="Queue", priority=0)
    world.advance(1)
    world.create("high-new", onConflict="Queue", priority=5)
    world.create("b-same", onConflict="Queue", priority=1)
    world.create("a-same", onConflict="Queue", priority=1)
    world.reconcile()
    assert {n: world.phase(n) for n in ("low-old", "high-new", "b-same", "a-same")} == dict.fromkeys(
        ("low-old", "high-new", "b-same", "a-same"), "Queued"
    )
    assert world.status("high-new")["queuePosition"] == 1
    assert conditions(world, "high-new")["Reconciling"] == ("True", "Queued")
    order = []
    current = "holder"
    for _ in range(4):
        world.set_spec(current, state="Completed")
        world.reconcile()
        active = [n for n in ("low-old", "high-new", "b-same", "a-same") if world.phase(n) == "Active"]
        assert len(active) == 1
        order.append(active[0])
        assert world.condition(active[0], "Ready")["reason"] == "Promoted"
        current = active[0]
    assert order == ["high-new", "a-same", "b-same", "low-old"]


def stage_names(plan) -> list[list[tuple[str, str | None]]]:
    return [
        [(type(step).__name__, getattr(step, "session", None) and step.session.name) for step in stage]
        for stage in plan.stages
    ]


def queue_truth(world: World) -> list[str]:
    """What waiting sessions show that is not so: a holder other than the Active session,
    or a position other than their place in queue order."""
    active = [v for v in world.views() if v.phase == Phase.ACTIVE]
    holder_uid = active[0].uid if active else None
    waiting = sorted((v for v in world.views() if v.phase == Phase.QUEUED), key=lambda v: v.order_key)
    wrong = []
    for position, view in enumerate(waiting, start=1):
        shown = ((view.status.get("holder") or {}).get("uid"), view.status.get("queuePosition"))
        if shown != (holder_uid, position):
            wrong.append(f"{view.name} shows {shown}, not {(holder_uid, position)}")
    return wrong


def test_promotion_critical_path_is_constant_and_the_queue_converges_at_the_budget() -> None:
    world = World(defaults=Defaults(refresh_budget=5))
    world.create("holder")
    world.reconcile()
    for i in range(30):
        world.advance(1)
        world.create(f"q{i:02d}", onConflict="Queue")
    world.reconcile()
    assert [world.status(f"q{i:02d}")["queuePosition"] for i in range(30)] == list(range(1, 31))
    world.set_spec("holder", state="Completed")
    plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
    # The promotion: holder leaves, then the claim moves, then q00 shows Active, whatever
    # the queue's length. Then the new head (part of the promotion) and, head first, as
    # many stale waiting sessions as the budget allows; the rest a second later.
    stages = stage_names(plan)
    assert stages[:3] == [[("StatusWrite", "holder")], [("ClaimChange", None)], [("StatusWrite", "q00")]]
    assert sorted(stages[3]) == [("StatusWrite", f"q{i:02d}") for i in range(1, 7)]
    assert plan.refreshes == 5
    assert plan.next_due == world.now + timedelta(seconds=1)
    world.apply(plan)
    assert world.phase("q00") == "Active"
    assert [world.status(f"q{i:02d}")["queuePosition"] for i in range(1, 8)] == [1, 2, 3, 4, 5, 6, 8]
    assert world.status("q06")["holder"]["name"] == "q00"
    assert world.status("q07")["holder"]["name"] == "holder"  # not yet: over the budget
    rounds = 0
    while True:
        world.advance(1)
        plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
        if plan.empty:
            break
        rounds += 1
        assert plan.refreshes <= 5 and len(plan.writes) == plan.refreshes
        assert [w.kind for w in plan.writes] == ["other"] * plan.refreshes
        world.apply(plan)
    assert rounds == 5  # ceil(23 stale / 5 per decision)
    assert queue_truth(world) == []
    assert plan.next_due is not None and plan.next_due > world.now + timedelta(hours=1)  # only retention left


def test_a_higher_priority_arrival_moves_everyone_back_within_the_budget() -> None:
    world = World(defaults=Defaults(refresh_budget=2))
    world.create("holder")
    world.reconcile()
    for i in range(5):
        world.advance(1)
        world.create(f"q{i}", onConflict="Queue")
    world.reconcile()
    world.create("vip", onConflict="Queue", priority=9)
    plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
    # vip is new (exact), q0 was the head (written: no longer 1), two more refreshed.
    assert sorted(name for _, name in stage_names(plan)[0]) == ["q0", "q1", "q2", "vip"]
    world.apply(plan)
    assert [world.status(n)["queuePosition"] for n in ("vip", "q0", "q1", "q2", "q3")] == [1, 2, 3, 4, 4]
    world.reconcile()
    assert queue_truth(world) == []


def test_a_waiting_session_refreshed_at_once_when_the_budget_allows() -> None:
    world = World()  # the default budget, 20 a decision
    world.create("holder")
    world.reconcile()
    for i in range(5):
        world.create(f"q{i}", onConflict="Queue")
    world.reconcile()
    world.set_spec("holder", state="Completed")
    plan = world.reconcile()
    assert plan.next_due is not None and plan.next_due > world.now + timedelta(hours=1)  # only retention left
    assert queue_truth(world) == []
    assert world.status("q4")["queuePosition"] == 4 and world.status("q4")["holder"]["name"] == "q0"
    assert "waiting at position 4" in world.condition("q4", "Ready")["message"]


def test_replace_moves_claim_and_marks_both() -> None:
    world = World()
    world.create("alice-1", profile="gpt-4o")
    world.reconcile()
    world.advance(10)
    world.create("bob-1", profile="gpt-5", onConflict="Replace")
    plan = decide(world.views(), world.claim_view(), world.now)
    kinds = [(w.session.name, w.kind) for w in plan.writes]
    assert kinds == [("alice-1", "demote"), ("bob-1", "activate")]
    assert plan.claim_change is not None and plan.claim_change.op == "transfer"
    world.apply(plan)
    assert world.phase("alice-1") == "Replaced"
    assert world.status("alice-1")["replacedBy"] == "bob-1"
    assert conditions(world, "alice-1")["Replaced"] == ("True", "Replaced")
    assert world.phase("bob-1") == "Active"
    assert world.status("bob-1")["replaces"] == "alice-1"
    assert conditions(world, "bob-1")["Ready"] == ("True", "ReplacedPrevious")
    assert world.claim is not None and world.claim["spec"]["leaseTransitions"] == 1
    events = sorted(w.transition.event_reason for w in plan.writes if w.transition)
    assert events == ["Replaced", "Replaced"]


@pytest.mark.parametrize(
    ("holder_profile", "new_profile", "expected_new", "expected_reason"),
    [
        ("gpt-4o", "gpt-4o", "Rejected", "DuplicateProfile"),
        ("gpt-4o", "gpt-5", "Active", "ReplacedPrevious"),
    ],
)
def test_replace_if_profile_changed(holder_profile, new_profile, expected_new, expected_reason) -> None:
    world = World()
    world.create("alice-1", profile=holder_profile)
    world.reconcile()
    world.create("bob-1", profile=new_profile, onConflict="ReplaceIfProfileChanged")
    world.reconcile()
    assert world.phase("bob-1") == expected_new
    assert world.condition("bob-1", "Ready")["reason"] == expected_reason
    if expected_new == "Active":
        assert world.phase("alice-1") == "Replaced"
        assert conditions(world, "alice-1")["Replaced"] == ("True", "ProfileChanged")
        assert "profile changed" in world.condition("alice-1", "Ready")["message"]
    else:
        assert world.phase("alice-1") == "Active"
        assert conditions(world, "bob-1")["Conflicted"] == ("True", "DuplicateProfile")


def test_burst_applied_in_order_chain_of_replace_leaves_last_active() -> None:
    world = World()
    for name in ("r1", "r2", "r3"):
        world.create(name, onConflict="Replace")
    world.reconcile()
    assert [world.phase(n) for n in ("r1", "r2", "r3")] == ["Replaced", "Replaced", "Active"]
    assert world.status("r1")["replacedBy"] == "r2"
    assert world.status("r2")["replacedBy"] == "r3"


def test_burst_first_in_order_takes_free_target() -> None:
    world = World()
    world.create("zeta", onConflict="Reject")
    world.create("alpha", onConflict="Reject")
    world.create("mid", onConflict="Queue")
    world.create("vip", onConflict="Reject", priority=10)
    world.reconcile()
    assert world.phase("vip") == "Active"
    assert [world.phase(n) for n in ("alpha", "mid", "zeta")] == ["Rejected", "Queued", "Rejected"]


# --- activation on request (spec.activateRequest) --------------------------------------


def test_activating_a_queued_session_replaces_the_holder_whatever_its_policy() -> None:
    world = World()
    world.create("a", profile="p1")
    world.reconcile()
    for name in ("b", "c"):
        world.advance(1)
        world.create(name, onConflict="Queue")
    world.reconcile()
    world.advance(5)
    world.set_spec("c", state="Active", activateRequest="2026-11-21T10:00:07.000001Z")
    plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
    # As Replace: the holder written Replaced first, the claim moved in one conditional
    # write, then c Active; b, now first in line behind c, afterwards.
    assert stage_names(plan) == [
        [("StatusWrite", "a")], [("ClaimChange", None)], [("StatusWrite", "c")], [("StatusWrite", "b")]
    ]
    assert plan.claim_change is not None and plan.claim_change.op == "transfer"
    world.apply(plan)
    assert world.phase("a") == "Replaced" and world.status("a")["replacedBy"] == "c"
    assert conditions(world, "a")["Replaced"] == ("True", "Replaced")
    assert world.phase("c") == "Active" and world.status("c")["replaces"] == "a"
    assert conditions(world, "c")["Ready"] == ("True", "ReplacedPrevious")
    assert "activated on request (spec.activateRequest)" in world.condition("c", "Ready")["message"]
    assert "activated on request" in world.condition("a", "Ready")["message"]
    assert world.status("c")["activateRequest"] == "2026-11-21T10:00:07.000001Z"
    assert world.claim is not None and world.claim["spec"]["leaseTransitions"] == 1
    assert world.status("b")["queuePosition"] == 1 and world.status("b")["holder"]["name"] == "c"
    assert world.transitions[-2:] == [("a", "Replaced"), ("c", "Replaced")]
    assert world.reconcile().empty


def test_an_activation_is_consumed_and_later_evaluations_follow_the_policy() -> None:
    world = World()
    world.create("a")
    world.create("b", onConflict="Queue")
    world.reconcile()
    world.set_spec("b", activateRequest="t1")  # spec.state is Active already
    world.reconcile()
    assert world.phase("b") == "Active"
    world.create("c", onConflict="Replace")
    world.reconcile()
    assert world.phase("b") == "Replaced"
    # Another spec change re-evaluates b from scratch; its request was consumed: it queues.
    world.set_spec("b", state="Active", profile="again")
    world.reconcile()
    assert world.phase("b") == "Queued" and world.status("b")["activateRequest"] == "t1"
    # A new token is a new request.
    world.set_spec("b", activateRequest="t2")
    world.reconcile()
    assert world.phase("b") == "Active" and world.phase("c") == "Replaced"
    assert world.status("b")["activateRequest"] == "t2"


def test_activating_a_rejected_session_on_a_free_target_simply_acquires() -> None:
    world = World()
    world.create("a")
    world.create("r")
    world.reconcile()
    assert world.phase("r") == "Rejected"
    world.set_spec("a", state="Completed")
    world.reconcile()
    assert world.phase("r") == "Rejected"  # terminal: sticks on a free target
    world.set_spec("r", state="Active", activateRequest="t1")
    world.reconcile()
    assert world.phase("r") == "Active"
    assert conditions(world, "r")["Ready"] == ("True", "Acquired")
    assert world.status("r")["activateRequest"] == "t1"
    assert world.claim is not None and world.claim["spec"]["holderIdentity"] == "r"


def test_activating_the_holder_only_records_the_request() -> None:
    world = World()
    world.create("a", idleTimeout="60s")
    world.reconcile()
    since = world.status("a")["activeSince"]
    world.advance(10)
    world.set_spec("a", activateRequest="t1")
    plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
    assert plan.claim_change is None
    assert [(w.session.name, w.kind, w.transition) for w in plan.writes] == [("a", "other", None)]
    world.apply(plan)
    assert world.phase("a") == "Active" and world.status("a")["activeSince"] == since
    assert world.status("a")["activateRequest"] == "t1"
    assert world.status("a")["observedGeneration"] == 2


def test_an_activation_as_the_holder_leaves_takes_the_free_target_and_the_queue_keeps_its_order() -> None:
    world = World()
    world.create("a")
    for name in ("b", "c", "d"):
        world.advance(1)
        world.create(name, onConflict="Queue")
    world.reconcile()
    world.set_spec("a", state="Completed")
    world.set_spec("d", activateRequest="t1")
    world.reconcile()
    assert [world.phase(n) for n in ("a", "b", "c", "d")] == ["Completed", "Queued", "Queued", "Active"]
    assert conditions(world, "d")["Ready"] == ("True", "Acquired")
    assert [world.status(n)["queuePosition"] for n in ("b", "c")] == [1, 2]
    assert world.status("b")["holder"]["name"] == "d"


def test_a_request_while_not_asking_for_the_target_is_not_acted_on() -> None:
    world = World()
    world.create("a")
    world.create("b", state="Inactive", activateRequest="t1")
    world.reconcile()
    assert world.phase("b") == "Inactive" and "activateRequest" not in world.status("b")
    # spec.state Active with that token still unconsumed: the request applies now.
    world.set_spec("b", state="Active")
    world.reconcile()
    assert world.phase("b") == "Active" and world.phase("a") == "Replaced"


# --- release, re-evaluation, deletion --------------------------------------------------


@pytest.mark.parametrize(
    ("state", "phase"), [("Inactive", "Inactive"), ("Completed", "Completed"), ("Archived", "Archived")]
)
def test_holder_leaving_releases_and_promotes(state: str, phase: str) -> None:
    world = World()
    world.create("holder")
    world.reconcile()
    world.create("next", onConflict="Queue")
    world.reconcile()
    world.set_spec("holder", state=state)
    world.reconcile()
    assert world.phase("holder") == phase
    assert world.phase("next") == "Active"
    assert world.condition("next", "Ready")["message"] == (
        'promoted from the queue of target "repo/payments" after "holder" released it'
    )
    assert world.claim is not None and world.claim["spec"]["holderIdentity"] == "next"
    if phase == "Archived":
        assert conditions(world, "holder")["Archived"] == ("True", "Requested")
        assert conditions(world, "holder")["Ready"] == ("False", "Archived")
        assert world.status("holder")["archivedAt"]


def test_release_without_queue_deletes_claim() -> None:
    world = World()
    world.create("holder")
    world.reconcile()
    world.set_spec("holder", state="Inactive")
    world.reconcile()
    assert world.claim is None
    assert world.view("holder").has_finalizer is False


def test_inactive_back_to_active_reevaluated_under_policy() -> None:
    world = World()
    world.create("a")
    world.reconcile()
    world.set_spec("a", state="Inactive")
    world.create("b")
    world.reconcile()
    assert world.phase("b") == "Active"
    world.set_spec("a", state="Active", onConflict="Queue")
    world.reconcile()
    assert world.phase("a") == "Queued"


def test_terminal_sticks_until_spec_changes() -> None:
    world = World()
    world.create("a")
    world.create("b")
    world.reconcile()
    assert world.phase("b") == "Rejected"
    world.set_spec("a", state="Completed")
    world.reconcile()
    assert world.phase("b") == "Rejected"  # sticks, though the target is free now
    world.set_spec("b", profile="again")
    world.reconcile()
    assert world.phase("b") == "Active"


def test_deleted_holder_releases_and_promotes() -> None:
    world = World()
    world.create("holder")
    world.reconcile()
    world.create("next", onConflict="Queue")
    world.reconcile()
    world.delete("holder")  # no finalizer: gone at once; the claim still names it
    assert world.claim is not None and world.claim["spec"]["holderIdentity"] == "holder"
    world.reconcile()
    assert world.phase("next") == "Active"
    assert world.claim is not None and world.claim["spec"]["holderIdentity"] == "next"


def test_legacy_finalizer_is_dropped_after_the_claim_moves_and_deletion_completes() -> None:
    world = World()
    world.create("holder")
    world.reconcile()
    world.create("next", onConflict="Queue")
    world.reconcile()
    for name in ("holder", "next"):
        world.set_finalizers(name, [LEGACY_FINALIZER])
    world.delete("holder")
    assert world.view("holder").deleting
    plan = decide(world.views(), world.claim_view(), world.now)
    stages = [[(type(step).__name__, getattr(step, "session", None) and step.session.name) for step in stage]
              for stage in plan.stages]
    # Demote the holder (Inactive) first, then move the claim, then activate, then tidy up.
    assert stages[0] == [("StatusWrite", "holder")]
    assert stages[1] == [("ClaimChange", None)]
    assert stages[2] == [("StatusWrite", "next")]
    assert sorted(stages[3]) == [("DropFinalizer", "holder"), ("DropFinalizer", "next")]
    world.apply(plan)
    assert "holder" not in [b["metadata"]["name"] for b in world.bodies.values()]
    assert world.phase("next") == "Active" and not world.view("next").finalizers


def test_claim_of_a_vanished_holder_is_released() -> None:
    world = World()
    world.create("holder")
    world.reconcile()
    del world.bodies[world.uid("holder")]
    world.reconcile()
    assert world.claim is None


def test_claim_written_but_status_not_yet_is_confirmed_not_duplicated() -> None:
    world = World()
    world.create("a")
    world.create("b", onConflict="Queue")
    plan = decide(world.views(), world.claim_view(), world.now)
    world.apply(plan, crash_after=1)  # crash right after the claim write
    assert world.claim is not None and world.phase("a") is None
    world.reconcile()
    assert world.phase("a") == "Active" and world.phase("b") == "Queued"
    assert world.claim is not None and world.claim["spec"]["leaseTransitions"] == 0


def test_holder_spec_change_keeps_target_without_event() -> None:
    world = World()
    world.create("a", profile="x")
    world.reconcile()
    world.set_spec("a", profile="y")
    plan = decide(world.views(), world.claim_view(), world.now)
    assert plan.claim_change is None
    assert [(w.session.name, w.transition) for w in plan.writes] == [("a", None)]
    world.apply(plan)
    assert world.status("a")["observedGeneration"] == 2


def test_invalid_spec_names_the_field_and_others_still_decided() -> None:
    world = World()
    world.create("bad", idleTimeout="9999999999h")
    world.create("good")
    world.reconcile()
    assert world.phase("bad") == "Invalid"
    message = world.condition("bad", "Ready")["message"]
    assert message.startswith('spec.idleTimeout: duration "9999999999h" is out of range')
    assert conditions(world, "bad")["Stalled"] == ("True", "InvalidSpec")
    assert world.phase("good") == "Active"


def test_namespaces_are_separate_worlds() -> None:
    # The arbiter sees one group; isolation comes from grouping by (namespace, target).
    a, b = World(), World()
    a.create("x")
    b.create("x")
    a.reconcile()
    b.reconcile()
    assert a.phase("x") == b.phase("x") == "Active"


# --- lifecycle -------------------------------------------------------------------------


def test_idle_timeout_abandons_and_activity_extends() -> None:
    world = World()
    world.create("a", idleTimeout="60s")
    world.create("q", onConflict="Queue")
    world.reconcile()
    assert world.status("a")["idleDeadline"] == "2026-11-21T10:01:00Z"
    plan = decide(world.views(), world.claim_view(), world.now)
    assert plan.next_due == T0 + timedelta(seconds=60)
    world.advance(40)
    world.annotate_activity("a", world.now)
    world.reconcile()
    assert world.status("a")["idleDeadline"] == "2026-11-21T10:01:40Z"
    # Activity never moves backwards, and the future counts as now.
    world.annotate_activity("a", T0)
    world.reconcile()
    assert world.status("a")["idleDeadline"] == "2026-11-21T10:01:40Z"
    world.annotate_activity("a", world.now + timedelta(hours=5))
    world.reconcile()
    assert world.status("a")["lastActivityTime"] == "2026-11-21T10:00:40Z"
    world.advance(59)
    world.reconcile()
    assert world.phase("a") == "Active"
    world.advance(1)
    world.reconcile()
    assert world.phase("a") == "Abandoned"
    assert world.condition("a", "Ready")["reason"] == "IdleTimeout"
    assert world.phase("q") == "Active"


def test_max_duration_abandons_whatever_the_activity() -> None:
    world = World()
    world.create("a", maxDuration="2m", idleTimeout="1m")
    world.reconcile()
    for _ in range(4):
        world.advance(30)
        world.annotate_activity("a", world.now)
        world.reconcile()
    assert world.phase("a") == "Abandoned"
    assert world.condition("a", "Ready")["reason"] == "MaxDurationExceeded"
    assert world.status("a")["endedAt"] == "2026-11-21T10:02:00Z"


def test_archive_after_and_delete_after() -> None:
    world = World(defaults=Defaults(archive_after=timedelta(hours=1), delete_after=None))
    world.create("a", archiveAfter="30s", deleteAfter="10s")
    world.create("b")
    world.reconcile()
    assert world.phase("b") == "Rejected"
    world.set_spec("a", state="Completed")
    world.reconcile()
    assert world.phase("a") == "Completed"
    world.advance(30)
    world.reconcile()
    assert world.phase("a") == "Archived"
    assert world.condition("a", "Archived")["reason"] == "Retention"
    assert world.status("a")["endedAt"] == "2026-11-21T10:00:00Z"
    world.advance(10)
    world.reconcile()
    assert "a" not in [b["metadata"]["name"] for b in world.bodies.values()]
    # b uses the operator default (1h), and never gets deleted (no deleteAfter).
    plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
    assert plan.next_due == T0 + timedelta(hours=1)
    world.advance(3600)
    world.reconcile()
    assert world.phase("b") == "Archived"


def test_archive_after_zero_archives_at_once_and_keeps_replaced_history() -> None:
    world = World()
    world.create("a", archiveAfter="0s")
    world.reconcile()
    world.create("b", onConflict="Replace")
    world.reconcile()
    assert world.phase("a") == "Archived"
    assert conditions(world, "a")["Replaced"] == ("True", "Replaced")
    assert conditions(world, "a")["Archived"] == ("True", "Retention")
    assert world.status("a")["replacedBy"] == "b"


def test_claim_holder_is_written_before_the_claim_moves_even_on_a_stale_view() -> None:
    # Another operator made "a" Active; this plan still sees it undecided (its index
    # lags). Replacing it must write "a" first, conditionally, so the stale plan fails.
    world = World()
    world.create("a")
    world.reconcile()
    stale_a = replace(world.view("a"), status={})
    world.create("b", onConflict="Replace")
    plan = decide([stale_a, world.view("b")], world.claim_view(), world.now)
    assert plan.claim_change is not None and plan.claim_change.op == "transfer"
    assert next((w.session.name, w.kind) for w in plan.writes) == ("a", "demote")


def test_claim_holder_is_fenced_when_nothing_is_written_to_it() -> None:
    world = World()
    world.create("a")
    world.reconcile()
    world.set_spec("a", state="Completed")
    plan = decide(world.views(), world.claim_view(), world.now)
    assert plan.fence is None  # a real demotion is written, no fence needed
    # A leftover claim on an already-terminal holder (crash between two writes): released
    # behind a fence on the holder.
    world.apply(plan)
    world.claim = {
        "metadata": {"name": "claim", "resourceVersion": "99",
                     "annotations": {"session-operator.io/holder-uid": world.uid("a")}},
        "spec": {"holderIdentity": "a", "leaseTransitions": 0},
    }
    plan = decide(world.views(), world.claim_view(), world.now)
    assert plan.claim_change is not None and plan.claim_change.op == "release"
    assert plan.fence is not None and plan.fence.name == "a"


def test_status_patch_nulls_removed_fields() -> None:
    assert status_patch({"a": 1, "b": 2}, {"a": 1, "c": 3}) == {"b": None, "c": 3}


# --- the invariant, as a property over random histories ------------------------------

NAMES = [f"s{i}" for i in range(6)]
POLICIES = ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]
action = st.one_of(
    st.tuples(
        st.just("create"),
        st.sampled_from(NAMES),
        st.sampled_from(POLICIES),
        st.integers(-2, 2),
        st.sampled_from(["p1", "p2"]),
    ),
    st.tuples(
        st.just("state"), st.sampled_from(NAMES), st.sampled_from(["Active", "Inactive", "Completed", "Archived"])
    ),
    st.tuples(st.just("policy"), st.sampled_from(NAMES), st.sampled_from(POLICIES)),
    st.tuples(st.just("activate"), st.sampled_from(NAMES)),  # kubectl session activate
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("advance"), st.integers(0, 120)),
    st.tuples(st.just("activity"), st.sampled_from(NAMES)),
    st.tuples(st.just("legacy-finalizer"), st.sampled_from(NAMES)),
    st.tuples(st.just("reconcile"), st.booleans(), st.integers(0, 6)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(action, min_size=1, max_size=40))
def test_never_two_active_and_active_iff_holding(actions) -> None:
    # A small refresh budget, so that stale waiting sessions are left over for later decisions.
    world = World(
        defaults=Defaults(archive_after=timedelta(seconds=90), delete_after=timedelta(seconds=60), refresh_budget=1)
    )
    present: set[str] = set()
    for number, step in enumerate(actions):
        kind = step[0]
        name = step[1] if len(step) > 1 and isinstance(step[1], str) else None
        live = name in present and any(b["metadata"]["name"] == name for b in world.bodies.values())
        if kind == "create" and not live:
            _, n, policy, priority, profile = step
            world.create(
                n, onConflict=policy, priority=priority, profile=profile, idleTimeout="60s", maxDuration="200s"
            )
            present.add(n)
        elif kind == "state" and live:
            world.set_spec(name, state=step[2])
        elif kind == "policy" and live:
            world.set_spec(name, onConflict=step[2])
        elif kind == "activate" and live:
            world.set_spec(name, state="Active", activateRequest=f"request-{number}")
        elif kind == "delete" and live:
            world.delete(name)
        elif kind == "activity" and live:
            world.annotate_activity(name, world.now)
        elif kind == "legacy-finalizer" and live:
            world.set_finalizers(name, [LEGACY_FINALIZER])  # left by an earlier version
        elif kind == "advance":
            world.advance(step[1])
        elif kind == "reconcile":
            # One plan cut short after a few writes models a crash between two writes.
            if step[1]:
                world.reconcile(rounds=10)
            else:
                plan = decide(world.views(), world.claim_view(), world.now, world.defaults)
                world.apply(plan, crash_after=step[2])
        present = {b["metadata"]["name"] for b in world.bodies.values()}
    try:
        world.reconcile(rounds=10)
    except InvariantViolation:
        raise
    # Converged: Active exactly when holding the claim.
    active = [v for v in world.views() if v.phase == Phase.ACTIVE]
    claim = world.claim_view()
    if claim is not None and claim.holder:
        assert [v.name for v in active] == [claim.holder]
    else:
        assert active == []
    # Nobody waits in a queue while the target is free.
    queued = [v for v in world.views() if v.phase == Phase.QUEUED and not v.deleting]
    if queued:
        assert active, "a queue with nobody holding the target"
    # Waiting sessions name the true holder and position (queue truth), and every
    # activation request of a session that asks for the target was acted on.
    assert queue_truth(world) == []
    for view in world.views():
        if not view.deleting and view.spec is not None and view.decided:
            assert view.activation is None, f"{view.name}: request {view.activation} not acted on"


def test_unreadable_activity_is_ignored_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    from session_operator.cache import ActivityClock

    clock = ActivityClock()
    with caplog.at_level("WARNING"):
        assert clock.observe("u1", "yesterday", T0) is None
        assert clock.observe("u1", "yesterday", T0) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "session-operator.io/last-activity='yesterday'" in warnings[0]
    assert clock.observe("u1", "2026-11-21T10:00:00Z", T0) == T0


# --- a status edit never moves a target ---------------------------------------------------


def edit_status(world: World, name: str, **status: object) -> None:
    body = world.bodies[world.uid(name)]
    body["status"].update(status)
    body["metadata"]["resourceVersion"] = str(next(world.rv))


def test_a_replaced_session_edited_to_active_stays_replaced() -> None:
    world = World()
    world.create("a", onConflict="Replace")
    world.reconcile()
    world.create("b", onConflict="Replace")
    world.reconcile()
    assert (world.phase("a"), world.phase("b")) == ("Replaced", "Active")
    transitions = len(world.transitions)
    claim = dict(world.claim or {})
    edit_status(world, "a", phase="Active")  # someone with status rights
    world.reconcile()
    assert (world.phase("a"), world.phase("b")) == ("Replaced", "Active")
    assert world.status("a")["replacedBy"] == "b"
    assert world.claim is not None and world.claim["spec"] == claim["spec"]
    assert len(world.transitions) == transitions  # put back quietly: no new Event


def test_edited_conditions_too_take_nothing() -> None:
    world = World()
    world.create("a", onConflict="Replace")
    world.reconcile()
    world.create("b", onConflict="Replace")
    world.reconcile()
    ready = {**world.condition("b", "Ready")}
    edit_status(world, "a", phase="Active", conditions=[ready])
    world.reconcile()
    assert world.phase("b") == "Active" and world.claim_view().holder == "b"  # type: ignore[union-attr]
    assert world.phase("a") == "Rejected"


def test_a_rejected_session_edited_to_active_does_not_take_a_free_target() -> None:
    world = World()
    world.create("holder")
    world.create("late")
    world.reconcile()
    assert world.phase("late") == "Rejected"
    world.set_spec("holder", state="Completed")
    world.reconcile()
    edit_status(world, "late", phase="Active")
    world.reconcile()
    assert world.phase("late") == "Rejected" and world.claim is None


def test_the_holder_edited_out_of_active_keeps_its_target() -> None:
    world = World()
    world.create("holder")
    world.create("waiting", onConflict="Queue")
    world.reconcile()
    since = world.status("holder")["activeSince"]
    world.advance(30)
    edit_status(world, "holder", phase="Completed")
    world.reconcile()
    assert world.phase("holder") == "Active" and world.status("holder")["activeSince"] == since
    assert world.phase("waiting") == "Queued"
    assert world.claim_view().holder == "holder"  # type: ignore[union-attr]
