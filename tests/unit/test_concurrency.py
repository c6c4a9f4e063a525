"""Rule 1 with two operators acting at once, each on a possibly stale view.

Each actor decides on a snapshot of the world taken some writes ago (its index lags),
then executes its plan step by step, in the reconciler's order, with the API server's
semantics: every session write is conditional on the resourceVersion the actor last saw
of it, every claim change on the claim's; a no-op write does not bump the version; a
lost race aborts the rest of the plan. Steps of the two actors interleave at random, and
exclusivity is checked after every single write.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_operator.arbiter import Plan, decide
from session_operator.model import FINALIZER, Claim, SessionView
from support.simulator import World


@dataclass
class Actor:
    plan: Plan
    seen: dict[str, str]  # uid -> resourceVersion this actor last saw
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    aborted: bool = False

    @classmethod
    def on_snapshot(cls, world: World, snapshot: tuple[dict[str, Any], Any]) -> Actor:
        bodies, claim = snapshot
        views = [SessionView.from_body(b) for b in bodies.values()]
        plan = decide(views, Claim.from_body(claim) if claim else None, world.now, world.defaults)
        actor = cls(plan, {v.uid: v.resource_version for v in views})
        actor.steps = [("finalizer", s.uid, True) for s in plan.add_finalizer]
        actor.steps += [("status", w.session.uid, w.status) for w in plan.writes if w.kind == "demote"]
        if plan.fence is not None:
            actor.steps.append(("fence", plan.fence.uid))
        if plan.claim_change is not None:
            actor.steps.append(("claim", plan.claim_change))
        actor.steps += [("status", w.session.uid, w.status) for w in plan.writes if w.kind != "demote"]
        actor.steps += [("finalizer", s.uid, False) for s in plan.remove_finalizer]
        return actor

    @property
    def done(self) -> bool:
        return self.aborted or not self.steps

    def step(self, world: World) -> None:
        kind, *args = self.steps.pop(0)
        if kind == "claim":
            self._claim(world, args[0])
            return
        uid = args[0]
        body = world.bodies.get(uid)
        if body is None:
            if kind == "fence":
                return  # gone: nothing can make it Active any more
            self.aborted = True
            return
        if body["metadata"]["resourceVersion"] != self.seen.get(uid):
            self.aborted = True  # 409: this actor's view of it is stale
            return
        if kind == "status":
            if body["status"] != args[1]:
                body["status"] = copy.deepcopy(args[1])
                body["metadata"]["resourceVersion"] = str(next(world.rv))
        elif kind == "finalizer":
            finalizers = [f for f in body["metadata"]["finalizers"] if f != FINALIZER]
            if args[1]:
                finalizers.append(FINALIZER)
            body["metadata"]["finalizers"] = finalizers
            body["metadata"]["resourceVersion"] = str(next(world.rv))
            if body["metadata"].get("deletionTimestamp") and not finalizers:
                del world.bodies[uid]
        self.seen[uid] = body["metadata"]["resourceVersion"]
        world.snapshot()
        world.check()

    def _claim(self, world: World, change: Any) -> None:
        current = world.claim
        if change.op == "create":
            if current is not None:
                self.aborted = True
                return
        elif current is None or current["metadata"]["resourceVersion"] != change.claim.resource_version:
            self.aborted = True
            return
        plan = Plan(claim_change=change)
        world._apply_claim(plan)  # checks the invariant too
        world.snapshot()


NAMES = [f"s{i}" for i in range(5)]
POLICIES = ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]
user_action = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.sampled_from(POLICIES), st.sampled_from(["a", "b"])),
    st.tuples(st.just("state"), st.sampled_from(NAMES),
              st.sampled_from(["Active", "Inactive", "Completed", "Archived"])),
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
)
round_ = st.tuples(
    st.lists(user_action, min_size=1, max_size=3),
    st.integers(0, 6),  # how stale actor A's view is (writes ago)
    st.integers(0, 6),  # how stale actor B's view is
    st.lists(st.booleans(), min_size=30, max_size=30),  # who steps next
)


EXAMPLES = int(os.environ.get("CONCURRENCY_EXAMPLES", "400"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(round_, min_size=1, max_size=8))
def test_two_actors_on_stale_views_never_break_exclusivity(rounds: list[Any]) -> None:
    world = World()
    world.history = []
    world.snapshot()
    for actions, lag_a, lag_b, schedule in rounds:
        for action in actions:
            kind, name = action[0], action[1]
            exists = any(b["metadata"]["name"] == name for b in world.bodies.values())
            if kind == "create" and not exists:
                world.create(name, onConflict=action[2], profile=action[3])
            elif kind == "state" and exists:
                world.set_spec(name, state=action[2])
            elif kind == "delete" and exists:
                world.delete(name)
            world.snapshot()
        actors = [
            Actor.on_snapshot(world, world.history[max(0, len(world.history) - 1 - lag)])
            for lag in (lag_a, lag_b)
        ]
        for pick in schedule:
            live = [a for a in actors if not a.done]
            if not live:
                break
            live[0 if pick or len(live) == 1 else 1].step(world)
    # Whatever happened, a single up-to-date operator converges to a sound state.
    world.reconcile(rounds=10)
    active = [v.name for v in world.views() if v.phase == "Active"]
    claim = world.claim_view()
    assert active == ([claim.holder] if claim is not None and claim.holder else [])
