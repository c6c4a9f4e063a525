"""The admission decision on plain data: what a CREATE meets on its target, and what it is told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from session_operator.admission import (
    ALLOW,
    CONFLICT,
    FORBIDDEN,
    UNPROCESSABLE,
    activation_requested,
    review_create,
    review_update,
    unchecked,
)
from session_operator.model import Claim, Owner, SessionView
from session_operator.policy import Counts, Governance, Policy, Terms

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
TARGET = "repo/payments"


def stamp(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def body(name: str, created: int | None = 60, **spec: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": 1}
    if created is not None:
        metadata["creationTimestamp"] = stamp(created)
    return {"metadata": metadata, "spec": {"target": TARGET, **spec}}


def view(name: str, phase: str | None, created: int = 0, deleting: bool = False, **spec: Any) -> SessionView:
    raw = body(name, created, **spec)
    raw["metadata"]["resourceVersion"] = "1"
    if deleting:
        raw["metadata"]["deletionTimestamp"] = stamp(30)
    if phase is not None:
        raw["status"] = {"phase": phase, "observedGeneration": 1}
        if phase == "Active":
            raw["status"]["activeSince"] = stamp(created + 1)
    return SessionView.from_body(raw)


def claim_of(holder: SessionView) -> Claim:
    return Claim(name="session-target-x", holder=holder.name, holder_uid=holder.uid, resource_version="5")


ALICE = view("alice-1", "Active", profile="gpt-4o")
HELD = [ALICE]


def review(new: dict[str, Any], sessions: list[SessionView] = HELD, claim: Claim | None = None) -> Any:
    if claim is None and any(s.phase == "Active" for s in sessions):
        claim = claim_of(next(s for s in sessions if s.phase == "Active"))
    return review_create(new, sessions, claim, now=T0 + timedelta(minutes=5))


# --- a free target ------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"])
def test_a_free_target_is_allowed_without_a_word(policy: str) -> None:
    assert review(body("bob-1", onConflict=policy), []) == ALLOW
    # Sessions that hold nothing are no holder: queued, rejected, replaced, being deleted.
    others = [
        view("q", "Queued"), view("r", "Rejected"), view("x", "Replaced"), view("gone", "Active", deleting=True),
        view("leaving", "Active", state="Completed"), view("new", None),
    ]
    assert review(body("bob-1", onConflict=policy), others, claim=None) == ALLOW


def test_a_session_created_inactive_competes_for_nothing() -> None:
    assert review(body("bob-1", state="Inactive")) == ALLOW
    assert review(body("bob-1", state="Completed", onConflict="Reject")) == ALLOW


def test_the_holders_own_name_is_left_to_the_api_server() -> None:
    """A second CREATE of the holder's name fails with AlreadyExists after admission."""
    assert review(body("alice-1")) == ALLOW


# --- Reject -------------------------------------------------------------------------------


def test_reject_is_denied_409_naming_holder_profile_since_and_what_to_do() -> None:
    answer = review(body("bob-1"))
    assert not answer.allowed
    assert answer.code == CONFLICT == 409
    assert answer.message == (
        'target "repo/payments" is held by session "alice-1" (profile "gpt-4o", active since '
        "2026-11-21T10:00:01Z), with no session waiting; archive it, or set spec.onConflict to Queue or Replace"
    )
    assert answer.warnings == ()


def test_reject_counts_the_waiting_sessions() -> None:
    queue = [view("q1", "Queued", 10), view("q2", "Queued", 20), view("q3", "Queued", 30, deleting=True)]
    answer = review(body("bob-1", onConflict="Reject"), [ALICE, *queue])
    assert "with 2 sessions waiting;" in answer.message
    assert "with 1 session waiting;" in review(body("bob-1"), [ALICE, queue[0]]).message


def test_the_claim_names_the_holder() -> None:
    """Two sessions showing Active (a moment of a replacement seen half-way): the claim's."""
    other = view("carol-1", "Active", created=-60, profile="gpt-5")
    answer = review(body("bob-1"), [other, ALICE], claim=claim_of(ALICE))
    assert 'held by session "alice-1"' in answer.message
    # Without a claim seen yet, the Active session first in queue order.
    answer = review_create(body("bob-1"), [ALICE, other], None, now=T0)
    assert 'held by session "carol-1"' in answer.message


# --- ReplaceIfProfileChanged ----------------------------------------------------------------


def test_same_profile_is_denied_409_pointing_at_the_running_session() -> None:
    answer = review(body("bob-1", onConflict="ReplaceIfProfileChanged", profile="gpt-4o"))
    assert (answer.allowed, answer.code) == (False, 409)
    assert answer.message == (
        'target "repo/payments" is held by session "alice-1" (profile "gpt-4o", active since '
        "2026-11-21T10:00:01Z), the same profile as this session, with no session waiting; "
        'use session "alice-1" — it runs this profile (or change spec.profile, or set spec.onConflict to Replace)'
    )


def test_a_new_profile_is_allowed_with_a_warning_naming_the_replaced_session() -> None:
    answer = review(body("bob-1", onConflict="ReplaceIfProfileChanged", profile="gpt-5"))
    assert answer.allowed
    assert answer.warnings == ('will replace "alice-1" (profile changes from "gpt-4o" to "gpt-5")',)


# --- Replace, and an activation request ---------------------------------------------------


def test_replace_is_allowed_with_a_warning_naming_the_replaced_session() -> None:
    answer = review(body("bob-1", onConflict="Replace", profile="gpt-4o"))
    assert answer.allowed
    assert answer.warnings == ('will replace "alice-1" (profile "gpt-4o", active since 2026-11-21T10:00:01Z)',)


@pytest.mark.parametrize("policy", ["Reject", "Queue", "ReplaceIfProfileChanged"])
def test_an_activation_request_replaces_whatever_the_policy(policy: str) -> None:
    answer = review(body("bob-1", onConflict=policy, profile="gpt-4o", activateRequest="2026-11-21T10:05:00Z"))
    assert answer.allowed
    assert answer.warnings == ('will replace "alice-1" (spec.activateRequest is set)',)


@pytest.mark.parametrize("value", [None, "", {}, []])
def test_an_empty_activation_request_is_no_request(value: Any) -> None:
    assert not activation_requested({"target": TARGET, "activateRequest": value})
    assert not review(body("bob-1", activateRequest=value)).allowed
    assert activation_requested({"activateRequest": {"requestedAt": "now"}})


# --- Queue --------------------------------------------------------------------------------


def test_queue_is_allowed_with_the_expected_position() -> None:
    answer = review(body("bob-1", onConflict="Queue"))
    assert answer.allowed
    assert answer.warnings == (
        'will queue behind "alice-1" (profile "gpt-4o", active since 2026-11-21T10:00:01Z) at expected position 1 of 1',
    )


@pytest.mark.parametrize(
    ("spec", "created", "position"),
    [
        ({}, 60, 4),  # last: everyone waiting is older
        ({"priority": 5}, 60, 1),  # ahead of all, higher priority
        ({"priority": 1}, 60, 2),  # behind the other priority 1, which is older
        ({}, 15, 2),  # older than q2 and q3
        ({}, 20, 2),  # the same second as q2: then by name, and "bob-1" < "q2"
    ],
)
def test_the_position_is_by_priority_then_age_then_name(spec: dict[str, Any], created: int, position: int) -> None:
    queue = [
        view("q1", "Queued", 10, onConflict="Queue", priority=1),
        view("q2", "Queued", 20, onConflict="Queue"),
        view("q3", "Queued", 30, onConflict="Queue"),
        view("rejected", "Rejected", 5),
    ]
    answer = review(body("bob-1", created=created, onConflict="Queue", **spec), [ALICE, *queue])
    assert f"at expected position {position} of 4" in answer.warnings[0]


def test_a_body_without_creation_time_counts_as_created_now() -> None:
    queue = [view("q1", "Queued", 10), view("q2", "Queued", 600)]  # q2 is created after "now" (5 min)
    answer = review(body("bob-1", created=None, onConflict="Queue"), [ALICE, *queue])
    assert "at expected position 2 of 3" in answer.warnings[0]


# --- invalid input --------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["idleTimeout", "maxDuration", "archiveAfter", "deleteAfter"])
def test_a_duration_too_large_is_denied_422_naming_the_field(field: str) -> None:
    answer = review(body("bob-1", **{field: "3000000h"}), [])
    assert (answer.allowed, answer.code) == (False, UNPROCESSABLE)
    assert answer.message.startswith(f'spec.{field}: duration "3000000h" is out of range (at most ')
    assert answer.message.endswith("; the session would be Invalid")


def test_invalid_input_is_told_before_any_conflict() -> None:
    answer = review(body("bob-1", maxDuration="9999999h"))
    assert answer.code == 422


# --- could not check ----------------------------------------------------------------------


def test_unchecked_allows_and_says_why() -> None:
    answer = unchecked("this replica's view of sessions is not filled yet")
    assert answer.allowed
    (warning,) = answer.warnings
    assert "could not check" in warning and "not filled yet" in warning
    assert len(warning) < 256  # the API server may cut longer warnings


# --- governance ----------------------------------------------------------------------------

BOB = Owner("bob", ("devs", "system:authenticated"))
ALICE_OWNED = view("alice-1", "Active", profile="gpt-4o", owner={"username": "alice"})


def owned(name: str, **spec: Any) -> dict[str, Any]:
    return body(name, owner={"username": "bob", "groups": ["devs", "system:authenticated"]}, **spec)


def rules(elsewhere: dict[tuple[str, str], Counts] | None = None, permits: dict[str, bool] | None = None,
          **spec: Any) -> Governance:
    policy = Policy.from_body({"metadata": {"name": "team"}, "spec": spec})
    return Governance(Terms((policy,)), elsewhere or {}, permits or {})


def governed(new: dict[str, Any], governance: Governance, sessions: list[SessionView] | None = None) -> Any:
    group = [ALICE_OWNED] if sessions is None else sessions
    claim = claim_of(group[0]) if group else None
    return review_create(new, group, claim, T0 + timedelta(minutes=5), governance, BOB)


def test_an_owner_that_is_not_the_requesting_user_is_refused() -> None:
    forged = body("bob-1", owner={"username": "alice"})
    answer = review_create(forged, [], None, T0, user=BOB)
    assert (answer.allowed, answer.code) == (False, FORBIDDEN)
    assert 'spec.owner names user "alice", but the request comes from user "bob"' in answer.message
    groups = body("bob-1", owner={"username": "bob", "groups": ["system:masters"]})
    assert "system:masters" in review_create(groups, [], None, T0, user=BOB).message
    assert review_create(owned("bob-1"), [], None, T0, user=BOB) == ALLOW


def test_a_policy_rule_is_refused_naming_the_policy() -> None:
    answer = governed(owned("bob-1", priority=99), rules(priority={"max": 10}), [])
    assert (answer.allowed, answer.code) == (False, FORBIDDEN)
    assert answer.message.startswith('SessionPolicy "team" allows spec.priority')


def test_taking_another_owners_target_asks_then_answers() -> None:
    new = owned("bob-1", onConflict="Replace")
    asked = governed(new, rules())
    assert asked.allowed and asked.asks == BOB
    denied = governed(new, rules(permits={"bob": False}))
    assert (denied.allowed, denied.code) == (False, FORBIDDEN)
    assert 'held by session "alice-1"' in denied.message and 'the verb "preempt"' in denied.message
    allowed = governed(new, rules(permits={"bob": True}))
    assert allowed.allowed and allowed.warnings[0].startswith('will replace "alice-1"')


def test_protection_and_caps_at_admission() -> None:
    protected = governed(owned("bob-1", onConflict="Replace"), rules(protectionWindow="1h", permits={"bob": True}))
    assert protected.code == FORBIDDEN and "until 2026-11-21T11:00:01Z" in protected.message
    capped = rules(elsewhere={("team", "bob"): Counts(active=2)}, perOwner={"maxActive": 2})
    refused = governed(owned("bob-2"), capped, [])
    assert refused.code == FORBIDDEN and "perOwner.maxActive: 2" in refused.message
    waits = governed(owned("bob-2", onConflict="Queue"), capped, [])
    assert waits.allowed and "it waits until then" in waits.warnings[0]


def test_an_update_is_held_to_the_rules_of_what_it_changes() -> None:
    strict = rules(priority={"max": 10}, allowedOnConflict=["Queue", "Reject"])
    old = {"target": TARGET, "priority": 50, "owner": {"username": "bob"}}
    now = T0 + timedelta(minutes=5)
    held = [ALICE_OWNED]
    # Completing (or relabelling) an old session that a newer policy would refuse passes.
    assert review_update({"spec": old}, {"spec": {**old, "state": "Completed"}}, held, None, now, strict) == ALLOW
    assert review_update({"spec": old}, {"spec": {**old, "profile": "x"}}, held, None, now, strict) == ALLOW
    raised = review_update({"spec": old}, {"spec": {**old, "priority": 60}}, held, None, now, strict)
    assert raised.code == FORBIDDEN
    # An activation request is a Replace of the holder: the same questions as at create.
    request = {**old, "priority": 5, "activateRequest": "now"}
    answer = review_update(
        {"spec": {**old, "priority": 5}}, {"metadata": {"name": "bob-1", "namespace": "team-a"}, "spec": request},
        held, claim_of(ALICE_OWNED), now, rules(permits={"bob": False}),
    )
    assert answer.code == FORBIDDEN and 'the verb "preempt"' in answer.message
