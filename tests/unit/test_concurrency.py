"""Rule 1 with two operators acting at once, each on a possibly stale view.

Each actor decides on a snapshot of the world taken some writes ago (its cache lags),
then carries out its plan with the operator's own ``Executor`` against the in-memory API
server (``support.simulator.World``): every session write conditional on the version the
actor saw, every claim change on the claim's; a write that changes nothing keeps the
version; a lost race ends the actor's plan. The writes of both actors (and the writes
of one stage, which the executor sends at once) are let through one at a time, in an
order drawn at random, and exclusivity is checked after every single write.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from session_operator.arbiter import decide
from session_operator.executor import LostRace
from session_operator.model import Claim, SessionView
from support.simulator import NAMESPACE, World


class Turns:
    """Holds every write at the gate and lets one through at a time, as ``picks`` say."""

    def __init__(self, picks: list[int]) -> None:
        self._picks = iter(picks)
        self.waiting: list[tuple[str, asyncio.Future[None]]] = []

    async def gate(self, what: str) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((what, turn))
        await turn

    async def run(self, actors: list[asyncio.Task[Any]]) -> None:
        while True:
            for _ in range(20):  # let every actor run up to its next write (no real I/O here)
                await asyncio.sleep(0)
            if not self.waiting:
                if all(actor.done() for actor in actors):
                    return
                raise AssertionError("an actor is stuck outside the gate")
            index = next(self._picks, 0) % len(self.waiting)
            _, turn = self.waiting.pop(index)
            turn.set_result(None)


async def act(world: World, snapshot: tuple[dict[str, Any], Any]) -> None:
    bodies, claim = snapshot
    views = [SessionView.from_body(b) for b in bodies.values()]
    plan = decide(views, Claim.from_body(claim) if claim else None, world.now, world.defaults)
    with contextlib.suppress(LostRace):  # its view was stale: a real operator re-reads and decides again
        await world.executor().execute(plan, (NAMESPACE, world.target), world.now)


async def two_actors(world: World, lags: tuple[int, int], picks: list[int]) -> None:
    turns = Turns(picks)
    world.gate = turns.gate
    try:
        snapshots = [world.history[max(0, len(world.history) - 1 - lag)] for lag in lags]
        actors = [asyncio.create_task(act(world, snapshot)) for snapshot in snapshots]
        await turns.run(actors)
        for actor in actors:
            actor.result()  # an InvariantViolation surfaces here
    finally:
        world.gate = None


NAMES = [f"s{i}" for i in range(5)]
POLICIES = ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]
user_action = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(NAMES), st.sampled_from(POLICIES), st.sampled_from(["a", "b"])),
    st.tuples(st.just("state"), st.sampled_from(NAMES),
              st.sampled_from(["Active", "Inactive", "Completed", "Archived"])),
    st.tuples(st.just("activate"), st.sampled_from(NAMES)),  # kubectl session activate
    st.tuples(st.just("delete"), st.sampled_from(NAMES)),
)
round_ = st.tuples(
    st.lists(user_action, min_size=1, max_size=3),
    st.integers(0, 6),  # how stale actor A's view is (writes ago)
    st.integers(0, 6),  # how stale actor B's view is
    st.lists(st.integers(0, 7), min_size=30, max_size=30),  # which waiting write goes next
)


EXAMPLES = int(os.environ.get("CONCURRENCY_EXAMPLES", "400"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(round_, min_size=1, max_size=8))
def test_two_actors_on_stale_views_never_break_exclusivity(rounds: list[Any]) -> None:
    world = World()
    try:
        world.snapshot()
        for number, (actions, lag_a, lag_b, picks) in enumerate(rounds):
            for action in actions:
                kind, name = action[0], action[1]
                exists = any(b["metadata"]["name"] == name for b in world.bodies.values())
                if kind == "create" and not exists:
                    world.create(name, onConflict=action[2], profile=action[3])
                elif kind == "state" and exists:
                    world.set_spec(name, state=action[2])
                elif kind == "activate" and exists:
                    world.set_spec(name, state="Active", activateRequest=f"request-{number}")
                elif kind == "delete" and exists:
                    world.delete(name)
                world.snapshot()
            world.loop.run_until_complete(two_actors(world, (lag_a, lag_b), picks))
        # Whatever happened, a single up-to-date operator converges to a sound state.
        world.reconcile(rounds=10)
        active = [v.name for v in world.views() if v.phase == "Active"]
        claim = world.claim_view()
        assert active == ([claim.holder] if claim is not None and claim.holder else [])
    finally:
        world.close()
