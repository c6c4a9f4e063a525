"""One answer to "who holds the target": the arbiter, the admission webhook and the kubectl
plugin agree with ``session_operator.target`` on any state of a target drawn here.

States keep rule 1 (at most one session shows Active, and a claim, when the cache has one,
names it), and include what makes the question hard: a claim the cache has not seen yet,
a holder being deleted, a holder whose spec now asks to leave, a claim left naming a
session that is gone, and queues of any priority and age.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from session_operator import target
from session_operator.admission import CONFLICT, review_create
from session_operator.arbiter import decide
from session_operator.model import Claim, OnConflict, Phase, SessionView, claim_name
from session_operator.plugin import target_views

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NS, TARGET = "team-a", "repo/payments"
WAITING_PHASES = [Phase.QUEUED, Phase.REJECTED, Phase.REPLACED, Phase.COMPLETED, Phase.INACTIVE]


def _body(name: str, index: int, phase: Phase, *, priority: int, age: int, on_conflict: str = "Queue",
          deleting: bool = False, leaving: bool = False, decided: bool = True) -> dict[str, Any]:
    created = NOW - timedelta(seconds=age)
    metadata: dict[str, Any] = {
        "name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": str(100 + index),
        # A spec change (here: asking to leave) bumps the generation past what status observed.
        "generation": 2 if leaving else 1,
        "creationTimestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if deleting:
        metadata["deletionTimestamp"] = NOW.strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "metadata": metadata,
        "spec": {"target": TARGET, "profile": f"p{index % 2}", "onConflict": on_conflict, "priority": priority,
                 "state": "Inactive" if leaving else "Active"},
    }
    if decided:
        status: dict[str, Any] = {"phase": phase.value, "observedGeneration": 1}
        if phase is Phase.ACTIVE:
            status["activeSince"] = (created + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        body["status"] = status
    return body


@st.composite
def target_states(draw: st.DrawFn) -> tuple[list[dict[str, Any]], Claim | None]:
    holder_kind = draw(st.sampled_from(["none", "holder", "deleting", "leaving"]))
    # Settled states only: sessions wait only behind a holder that stays. Where the holder
    # is gone or leaving, the arbiter promotes the queue's head in the same decision (rule
    # 4), so a newcomer meets that head; such a state lasts until that one decision.
    phases = WAITING_PHASES if holder_kind == "holder" else [p for p in WAITING_PHASES if p is not Phase.QUEUED]
    count = draw(st.integers(0, 6))
    bodies = [
        _body(f"s{i}", i, draw(st.sampled_from(phases)), priority=draw(st.integers(-1, 1)),
              age=draw(st.integers(10, 500)))
        for i in range(count)
    ]
    claim: Claim | None = None
    if holder_kind != "none":
        bodies.append(_body("h", 99, Phase.ACTIVE, priority=draw(st.integers(-1, 1)), age=draw(st.integers(10, 500)),
                            deleting=holder_kind == "deleting", leaving=holder_kind == "leaving"))
        # The cache may not have seen the claim yet (watch lag): no claim at all.
        if draw(st.booleans()):
            claim = Claim(claim_name(TARGET), "h", "uid-h", "50", 1)
    elif draw(st.booleans()):
        claim = Claim(claim_name(TARGET), "gone", "uid-gone", "50", 1)  # its holder was deleted
    return bodies, claim


def _newcomer(on_conflict: OnConflict) -> dict[str, Any]:
    return _body("new", 200, Phase.PENDING, priority=0, age=1, on_conflict=on_conflict.value, decided=False)


@settings(max_examples=300, deadline=None)
@given(target_states())
def test_arbiter_webhook_and_plugin_name_the_same_holder(state: tuple[list[dict[str, Any]], Claim | None]) -> None:
    bodies, claim = state
    views = [SessionView.from_body(b) for b in bodies]
    holder = target.holder(views, claim)

    # The plugin (kubectl session who / why).
    shown = target_views(bodies, TARGET, NOW, {NS: claim})
    shown_holder = shown[0].holder["name"] if shown and shown[0].holder else None
    assert shown_holder == (holder.name if holder else None)
    assert [e["name"] for e in (shown[0].queue if shown else [])] == [s.name for s in target.queue(views)]

    # The admission webhook, for a session that would be rejected.
    newcomer = _newcomer(OnConflict.REJECT)
    answer = review_create(newcomer, views, claim, NOW)
    if holder is None:
        assert answer.allowed
    else:
        assert not answer.allowed and answer.code == CONFLICT
        assert target.held_by(TARGET, holder, holder.status.get("activeSince")) in answer.message

    # The arbiter, deciding the same newcomer.
    plan = decide([*views, SessionView.from_body(newcomer)], claim, NOW)
    decided = {w.session.name: w.status for w in plan.writes}
    if holder is None:
        assert decided["new"]["phase"] == Phase.ACTIVE
    else:
        assert decided["new"]["phase"] == Phase.REJECTED
        assert decided["new"]["holder"]["name"] == holder.name
        assert target.held_by(TARGET, holder, holder.status.get("activeSince")) in decided["new"]["conditions"][0][
            "message"]


@settings(max_examples=200, deadline=None)
@given(target_states())
def test_arbiter_and_webhook_give_a_newcomer_the_same_queue_position(
    state: tuple[list[dict[str, Any]], Claim | None],
) -> None:
    bodies, claim = state
    views = [SessionView.from_body(b) for b in bodies]
    holder = target.holder(views, claim)
    if holder is None:
        return  # a free target: the newcomer (or the queue's head) takes it, nobody waits
    newcomer = _newcomer(OnConflict.QUEUE)
    position = target.position(target.queue(views), SessionView.from_body(newcomer))
    answer = review_create(newcomer, views, claim, NOW)
    assert answer.allowed and f"at expected position {position} of" in answer.warnings[0]
    plan = decide([*views, SessionView.from_body(newcomer)], claim, NOW)
    status = next(w.status for w in plan.writes if w.session.name == "new")
    assert status["phase"] == Phase.QUEUED and status["queuePosition"] == position


def test_every_policy_has_an_answer_from_the_arbiter_and_the_webhook() -> None:
    """The checklist for a new onConflict value, held by a test as well as by mypy's
    exhaustive match: on a busy target each policy gets a decision of its own, and the
    webhook answers each one (nothing falls through to Reject)."""
    holder = _body("h", 1, Phase.ACTIVE, priority=0, age=100)
    claim = Claim(claim_name(TARGET), "h", "uid-h", "50", 1)
    expected = {
        OnConflict.REJECT: (Phase.REJECTED, False),
        OnConflict.QUEUE: (Phase.QUEUED, True),
        OnConflict.REPLACE: (Phase.ACTIVE, True),
        # The newcomer's profile (p0) differs from the holder's (p1): a replacement.
        OnConflict.REPLACE_IF_PROFILE_CHANGED: (Phase.ACTIVE, True),
    }
    assert set(expected) == set(OnConflict), "a new onConflict value needs its expected outcome here"
    for policy, (phase, allowed) in expected.items():
        newcomer = _newcomer(policy)
        newcomer["spec"]["profile"] = "p0"
        views = [SessionView.from_body(holder), SessionView.from_body(newcomer)]
        plan = decide(views, claim, NOW)
        assert next(w.status for w in plan.writes if w.session.name == "new")["phase"] == phase, policy
        assert review_create(newcomer, views[:1], claim, NOW).allowed is allowed, policy
