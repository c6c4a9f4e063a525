"""Governed targets: owners, the preempt permission, and SessionPolicy terms, as the
arbiter decides them; and the exclusivity invariant with owners, policies and
permissions drawn at random."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_operator.arbiter import decide
from session_operator.model import Phase, parse_spec
from session_operator.policy import Counts, Governance, InvalidPolicyError, Policy, Terms, violation
from support.simulator import InvariantViolation, World


def policy(name: str = "team", **spec: object) -> Policy:
    return Policy.from_body({"metadata": {"name": name}, "spec": spec})


def governed(*policies: Policy, elsewhere: dict[tuple[str, str], Counts] | None = None) -> Governance:
    return Governance(Terms(tuple(sorted(policies, key=lambda p: p.name))), elsewhere or {})


def reason(world: World, name: str) -> str:
    return world.condition(name, "Ready")["reason"]


def message(world: World, name: str) -> str:
    return str(world.condition(name, "Ready")["message"])


# --- reading a SessionPolicy -------------------------------------------------------------


def test_policy_reads_every_rule() -> None:
    p = policy(
        namespaces=["team-a"], targetPrefixes=["repo/"], allowedOnConflict=["Queue"],
        priority={"min": 0, "max": 10}, idleTimeout={"default": "30m", "max": "2h"},
        maxDuration={"max": "8h"}, perOwner={"maxActive": 3, "maxQueued": 5}, protectionWindow="10m",
    )
    assert p.selects("team-a", "repo/x") and not p.selects("team-b", "repo/x") and not p.selects("team-a", "doc/x")
    assert p.idle_timeout.default == timedelta(minutes=30) and p.max_duration.max == timedelta(hours=8)
    assert (p.max_active, p.max_queued, p.protection_window) == (3, 5, timedelta(minutes=10))
    assert policy().selects("anywhere", "anything")


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"priority": {"min": 5, "max": 1}}, "spec.priority"),
        ({"idleTimeout": {"default": "3h", "max": "1h"}}, "spec.idleTimeout"),
        ({"maxDuration": {"max": "soon"}}, "spec.maxDuration.max"),
        ({"perOwner": {"maxActive": -1}}, "spec.perOwner.maxActive"),
        ({"allowedOnConflict": ["Sometimes"]}, "spec.allowedOnConflict"),
        ({"namespaces": "team-a"}, "spec.namespaces"),
    ],
)
def test_an_unusable_policy_names_its_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidPolicyError) as error:
        policy("strict", **spec)
    assert error.value.field == field
    assert str(error.value).startswith(f'SessionPolicy "strict": {field}: ')


# --- static rules ------------------------------------------------------------------------


def test_violations_name_the_policy_and_the_rule() -> None:
    strict = policy(
        "strict", allowedOnConflict=["Queue", "Reject"], priority={"min": 0, "max": 10},
        idleTimeout={"max": "1h"}, maxDuration={"default": "2h", "max": "4h"},
    )

    def check(**spec: object) -> str | None:
        return violation([strict], parse_spec({"target": "t", "idleTimeout": "30m", **spec}))

    assert check() is None
    assert check(onConflict="Replace") == (
        'SessionPolicy "strict" does not allow spec.onConflict "Replace"; allowed: Queue, Reject'
    )
    assert check(priority=11) == 'SessionPolicy "strict" allows spec.priority from 0 to 10; this session asks 11'
    assert check(idleTimeout="2h") == (
        'SessionPolicy "strict" allows spec.idleTimeout up to 1h; this session asks 2h'
    )
    assert violation([strict], parse_spec({"target": "t"})) == (
        'SessionPolicy "strict" requires spec.idleTimeout (at most 1h); this session leaves it unset'
    )
    # maxDuration unset is fine: the policy's default applies.
    assert check(maxDuration="5h") is not None and check() is None
    # An activation request counts as Replace.
    assert "spec.activateRequest (a Replace)" in (
        violation([strict], parse_spec({"target": "t", "idleTimeout": "1m"}), activation=True) or ""
    )


def test_a_violating_session_is_invalid_and_the_holder_is_untouched_by_a_new_policy() -> None:
    world = World()
    world.create("old", owner="alice", priority=50)
    world.reconcile()
    world.governance = governed(policy("strict", priority={"max": 10}))
    world.create("new", owner="alice", priority=20, onConflict="Queue")
    world.reconcile()
    assert world.phase("old") == "Active"  # a policy change never evicts by itself
    assert world.phase("new") == "Invalid" and reason(world, "new") == "PolicyViolation"
    assert message(world, "new").startswith('SessionPolicy "strict" allows spec.priority from -2147483648 to 10')
    assert world.transitions[-1] == ("new", "Invalid")


# --- the preempt permission -----------------------------------------------------------------


def test_taking_another_owners_target_needs_the_permission() -> None:
    world = World()
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.create("bob-1", owner="bob", onConflict="Replace")
    world.reconcile()
    assert world.asked == ["bob"]
    assert world.phase("alice-1") == "Active"
    assert world.phase("bob-1") == "Rejected" and reason(world, "bob-1") == "NotPermitted"
    text = message(world, "bob-1")
    assert 'session "alice-1"' in text and 'user "alice"' in text and 'user "bob" may not take it' in text
    assert 'the verb "preempt" on sessions in namespace "ns"' in text
    assert world.status("bob-1")["holder"]["name"] == "alice-1"


def test_with_the_permission_the_target_is_taken() -> None:
    world = World(authorizer={"bob": True})
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.create("bob-1", owner="bob", onConflict="ReplaceIfProfileChanged", profile="new")
    world.reconcile()
    assert world.asked == ["bob"]
    assert (world.phase("alice-1"), world.phase("bob-1")) == ("Replaced", "Active")


def test_taking_over_your_own_session_asks_nothing() -> None:
    world = World()
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.create("alice-2", owner="alice", onConflict="Replace")
    world.reconcile()
    assert world.asked == []
    assert (world.phase("alice-1"), world.phase("alice-2")) == ("Replaced", "Active")


def test_what_needs_no_preemption_asks_nothing() -> None:
    world = World()
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.create("bob-q", owner="bob", onConflict="Queue")
    world.create("bob-r", owner="bob", onConflict="Reject")
    world.create("bob-same", owner="bob", onConflict="ReplaceIfProfileChanged")  # same profile: rejected
    world.reconcile()
    assert world.asked == []
    assert [world.phase(n) for n in ("bob-q", "bob-r", "bob-same")] == ["Queued", "Rejected", "Rejected"]


def test_an_activation_request_on_another_owners_target_needs_the_permission() -> None:
    world = World()
    world.create("alice-1", owner="alice")
    world.create("bob-1", owner="bob", onConflict="Queue")
    world.reconcile()
    world.set_spec("bob-1", activateRequest="2026-11-21T10:00:05Z")
    world.reconcile()
    assert world.phase("alice-1") == "Active"
    assert world.phase("bob-1") == "Rejected" and reason(world, "bob-1") == "NotPermitted"
    assert world.status("bob-1")["activateRequest"] == "2026-11-21T10:00:05Z"  # consumed


def test_sessions_without_an_owner() -> None:
    # Two without owners are not told apart (as before owners were recorded) ...
    world = World()
    world.create("legacy-1")
    world.reconcile()
    world.create("legacy-2", onConflict="Replace")
    world.reconcile()
    assert (world.phase("legacy-1"), world.phase("legacy-2")) == ("Replaced", "Active")
    # ... but one without an owner may not take an owned session's target, and there is
    # nobody to ask about.
    world.create("alice-1", owner="alice", onConflict="Replace")
    world.reconcile()
    assert world.asked == ["alice"]  # taking an ownerless holder's target is preemption
    world = World(authorizer={"alice": True})
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.create("anonymous", onConflict="Replace")
    world.reconcile()
    assert world.asked == []
    assert world.phase("anonymous") == "Rejected" and reason(world, "anonymous") == "NotPermitted"
    assert "no recorded owner" in message(world, "anonymous")


# --- protection window --------------------------------------------------------------------


def test_a_holder_is_protected_for_its_window() -> None:
    world = World(authorizer={"bob": True}, governance=governed(policy(protectionWindow="10m")))
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.advance(60)
    world.create("bob-1", owner="bob", onConflict="Replace")
    world.reconcile()
    assert world.asked == []  # the window is checked first: it needs no request
    assert world.phase("bob-1") == "Rejected" and reason(world, "bob-1") == "Protected"
    assert "until 2026-11-21T10:10:00Z" in message(world, "bob-1")
    # Its own owner may still replace it; another owner may, after the window.
    world.create("alice-2", owner="alice", onConflict="Replace")
    world.reconcile()
    assert world.phase("alice-2") == "Active"
    world.advance(601)
    world.create("bob-2", owner="bob", onConflict="Replace")
    world.reconcile()
    assert (world.phase("alice-2"), world.phase("bob-2")) == ("Replaced", "Active")


# --- defaults ----------------------------------------------------------------------------


def test_policy_defaults_are_fixed_when_the_session_becomes_active() -> None:
    world = World(governance=governed(policy("limits", idleTimeout={"default": "5m"}, maxDuration={"default": "1h"})))
    world.create("a", owner="alice")
    world.reconcile()
    assert world.status("a")["limits"] == {"idleTimeout": "5m", "maxDuration": "1h", "policy": "limits"}
    assert world.status("a")["idleDeadline"] == "2026-11-21T10:05:00Z"
    # A later policy change does not move the deadline of the running session.
    world.governance = governed(policy("limits", idleTimeout={"default": "1m"}))
    world.advance(120)
    world.reconcile()
    assert world.phase("a") == "Active"
    world.advance(200)
    world.reconcile()
    assert world.phase("a") == "Abandoned" and reason(world, "a") == "IdleTimeout"
    assert 'the default idleTimeout of SessionPolicy "limits" 5m' in message(world, "a")


def test_the_spec_wins_over_a_default() -> None:
    world = World(governance=governed(policy(idleTimeout={"default": "5m"})))
    world.create("a", owner="alice", idleTimeout="1h")
    world.reconcile()
    assert "limits" not in world.status("a")
    assert world.status("a")["idleDeadline"] == "2026-11-21T11:00:00Z"


# --- per-owner caps ---------------------------------------------------------------------------


def test_over_the_active_cap_a_session_is_rejected_or_waits() -> None:
    capped = policy("cap", perOwner={"maxActive": 2})
    world = World(governance=governed(capped, elsewhere={("cap", "alice"): Counts(active=2)}))
    world.create("reject", owner="alice")
    world.create("wait", owner="alice", onConflict="Queue")
    world.reconcile()
    assert world.phase("reject") == "Rejected" and reason(world, "reject") == "OwnerLimit"
    assert message(world, "reject").startswith(
        'user "alice" is at the cap of SessionPolicy "cap" (perOwner.maxActive: 2): 2 Active sessions that it '
        'selects in namespace "ns"; end one of them first'
    )
    assert world.phase("wait") == "Queued" and world.claim is None
    assert "passed over while" in message(world, "wait")
    # Another owner is not held back by alice's cap, and goes ahead of her waiting session.
    world.create("bob-1", owner="bob", onConflict="Queue")
    world.reconcile()
    assert world.phase("bob-1") == "Active" and world.phase("wait") == "Queued"
    # Once alice is under her cap, her waiting session is promoted when the target is free.
    world.governance = governed(capped, elsewhere={("cap", "alice"): Counts(active=1)})
    world.set_spec("bob-1", state="Completed")
    world.reconcile()
    assert world.phase("wait") == "Active"


def test_the_queued_cap() -> None:
    world = World(governance=governed(policy("cap", perOwner={"maxQueued": 1})))
    world.create("holder", owner="bob")
    world.create("q1", owner="alice", onConflict="Queue")
    world.create("q2", owner="alice", onConflict="Queue")
    world.reconcile()
    assert [world.phase(n) for n in ("holder", "q1", "q2")] == ["Active", "Queued", "Rejected"]
    assert reason(world, "q2") == "OwnerLimit" and "perOwner.maxQueued: 1" in message(world, "q2")


def test_a_replace_counts_against_the_takers_cap() -> None:
    world = World(
        authorizer={"bob": True},
        governance=governed(policy("cap", perOwner={"maxActive": 1}), elsewhere={("cap", "bob"): Counts(active=1)}),
    )
    world.create("alice-1", owner="alice")
    world.reconcile()
    world.create("bob-1", owner="bob", onConflict="Replace")
    world.reconcile()
    assert world.phase("alice-1") == "Active"
    assert world.phase("bob-1") == "Rejected" and reason(world, "bob-1") == "OwnerLimit"


def test_no_policy_and_no_preemption_costs_nothing() -> None:
    world = World()
    for i in range(5):
        world.create(f"s{i}", owner=f"user-{i}", onConflict="Queue")
    world.reconcile()
    assert world.asked == []
    plan = decide(world.views(), world.claim_view(), world.now)
    assert plan.asks == frozenset()


# --- the invariant with owners, policies and permissions drawn at random ------------------------

OWNERS = ["alice", "bob", None]
NAMES = [f"s{i}" for i in range(6)]
CONFLICT = ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]

governance_strategy = st.builds(
    lambda window, max_active, max_queued, allowed, elsewhere: governed(
        policy(
            "drawn",
            **({"protectionWindow": f"{window}s"} if window else {}),
            perOwner={k: v for k, v in (("maxActive", max_active), ("maxQueued", max_queued)) if v is not None},
            **({"allowedOnConflict": sorted(allowed)} if allowed is not None else {}),
        ),
        elsewhere={("drawn", owner or ""): Counts(active=n, queued=n) for owner, n in elsewhere.items()},
    ),
    st.sampled_from([0, 30, 300]),
    st.one_of(st.none(), st.integers(0, 2)),
    st.one_of(st.none(), st.integers(0, 2)),
    st.one_of(st.none(), st.sets(st.sampled_from(CONFLICT), min_size=1)),
    st.dictionaries(st.sampled_from(OWNERS), st.integers(0, 2)),
)
action = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.sampled_from(OWNERS), st.sampled_from(CONFLICT),
              st.integers(-1, 1), st.sampled_from(["p1", "p2"])),
    st.tuples(st.just("state"), st.sampled_from(NAMES), st.sampled_from(["Active", "Inactive", "Completed"])),
    st.tuples(st.just("activate"), st.sampled_from(NAMES)),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
    st.tuples(st.just("advance"), st.integers(0, 120)),
    st.tuples(st.just("govern"), governance_strategy),
    st.tuples(st.just("reconcile"), st.booleans(), st.integers(0, 6)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(action, min_size=1, max_size=40),
    st.dictionaries(st.sampled_from(["alice", "bob"]), st.booleans()),
)
def test_governed_exclusivity(actions: list[tuple], authorizer: dict[str, bool]) -> None:
    """After every write at most one Active (World.check); converged, Active iff holding
    the claim; nobody took another owner's target without the permission; and every
    decided session keeps the static rules of the policy in force when it was decided."""
    world = World(authorizer=authorizer)
    owners: dict[str, str | None] = {}
    for number, step in enumerate(actions):
        kind = step[0]
        live = {b["metadata"]["name"] for b in world.bodies.values()}
        if kind == "create" and step[1] not in live:
            _, name, owner, on_conflict, priority, profile = step
            world.create(name, owner=owner, onConflict=on_conflict, priority=priority, profile=profile)
            owners[name] = owner
        elif kind == "state" and step[1] in live:
            world.set_spec(step[1], state=step[2])
        elif kind == "activate" and step[1] in live:
            world.set_spec(step[1], state="Active", activateRequest=f"request-{number}")
        elif kind == "delete" and step[1] in live:
            world.delete(step[1])
        elif kind == "advance":
            world.advance(step[1])
        elif kind == "govern":
            world.governance = step[1]
        elif kind == "reconcile":
            if step[1]:
                world.reconcile(rounds=10)
            else:
                world.apply(world.decide(), crash_after=step[2])
    try:
        world.reconcile(rounds=10)
    except InvariantViolation:
        raise
    active = [v for v in world.views() if v.phase == Phase.ACTIVE]
    claim = world.claim_view()
    assert [v.name for v in active] == ([claim.holder] if claim is not None and claim.holder else [])
    for view in world.views():
        replaced_by = view.status.get("replacedBy")
        if view.phase == Phase.REPLACED and replaced_by is not None:
            taker, holder = owners.get(replaced_by), owners.get(view.name)
            if taker != holder:
                assert taker is not None and authorizer.get(taker), (
                    f"{replaced_by} ({taker}) replaced {view.name} ({holder}) without the permission"
                )
    # Nobody was asked about twice in one decision (World.decide asserts it), and nobody
    # without an owner was ever asked about.
    assert None not in world.asked
