"""A tiny in-memory API server for one target, written to by the operator's own executor.

``World`` holds sessions and the claim Lease with the API server's write semantics:
every write is conditional on the resourceVersion it carries (409 otherwise), a missing
object is 404, a write that changes nothing does not bump the version, status is a JSON
merge patch. Plans are carried out by ``session_operator.executor.Executor``, the same
code the operator runs, so the order of writes the properties check is the real one.
Rule 1 (at most one Active, and it holds the claim) is checked after every single write.

``gate`` (optional) is awaited before each write: the two-operator property test uses it
to interleave the writes of two executors at random.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kube_emulator.api import merge_patch  # RFC 7386, as the API server applies it
from session_operator.arbiter import Defaults, decide
from session_operator.cache import ActivityClock
from session_operator.errors import Conflict, NotFound
from session_operator.executor import Executor, TargetKey
from session_operator.model import Claim, Phase, SessionView, format_time
from session_operator.plan import Plan, StatusWrite
from session_operator.policy import NO_GOVERNANCE, Governance

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)
NAMESPACE = "ns"


class InvariantViolation(AssertionError):
    pass


class Crash(Exception):
    """The operator died between two writes (``World.apply(..., crash_after=N)``)."""


class World:
    def __init__(
        self,
        target: str = "repo/payments",
        defaults: Defaults | None = None,
        governance: Governance = NO_GOVERNANCE,
        authorizer: Mapping[str, bool] | None = None,
    ) -> None:
        self.target = target
        self.now = T0
        self.defaults = defaults or Defaults()
        # The policies and counts a reconciler would pass; ``authorizer``: who may preempt
        # (username -> allowed; anyone else is refused), asked as the reconciler asks.
        self.governance = governance
        self.authorizer = dict(authorizer or {})
        self.asked: list[str] = []  # usernames, one per permission request
        self.bodies: dict[str, dict[str, Any]] = {}  # uid -> body
        self.claim: dict[str, Any] | None = None
        self.rv = itertools.count(1)
        self.uids = itertools.count(1)
        self.plans: list[Plan] = []
        self.transitions: list[tuple[str, str]] = []  # (session, event reason or phase), in order
        self.activity = ActivityClock()
        self.history: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        self.gate: Callable[[str], Awaitable[None]] | None = None
        self.writes = 0
        self._crash_after: int | None = None
        self.loop = asyncio.new_event_loop()

    def close(self) -> None:
        self.loop.close()

    def __del__(self) -> None:
        if not self.loop.is_closed():
            self.loop.close()

    # --- user actions --------------------------------------------------------------------

    def create(self, name: str, *, created: datetime | None = None, owner: str | None = None, **spec: Any) -> str:
        uid = f"uid-{next(self.uids)}"
        body_spec = {"target": self.target, "profile": "", "onConflict": "Reject", "priority": 0, "state": "Active"}
        if owner is not None:
            body_spec["owner"] = {"username": owner, "groups": ["system:authenticated"]}
        body_spec.update(spec)
        self.bodies[uid] = {
            "metadata": {
                "namespace": NAMESPACE,
                "name": name,
                "uid": uid,
                "resourceVersion": str(next(self.rv)),
                "generation": 1,
                "creationTimestamp": format_time(created or self.now),
            },
            "spec": body_spec,
            "status": {},
        }
        return uid

    def uid(self, name: str) -> str:
        for uid, body in self.bodies.items():
            if body["metadata"]["name"] == name:
                return uid
        raise KeyError(name)

    def set_spec(self, name: str, **changes: Any) -> None:
        body = self.bodies[self.uid(name)]
        body["spec"].update(changes)
        body["metadata"]["generation"] += 1
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def set_finalizers(self, name: str, finalizers: list[str]) -> None:
        body = self.bodies[self.uid(name)]
        body["metadata"]["finalizers"] = list(finalizers)
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def annotate_activity(self, name: str, when: datetime) -> None:
        body = self.bodies[self.uid(name)]
        body["metadata"].setdefault("annotations", {})["session-operator.io/last-activity"] = format_time(when)
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def delete(self, name: str) -> None:
        """As the API server does: gone at once, or marked for deletion while finalizers remain."""
        uid = self.uid(name)
        body = self.bodies[uid]
        if body["metadata"].get("finalizers"):
            body["metadata"]["deletionTimestamp"] = format_time(self.now)
            body["metadata"]["generation"] += 1
            body["metadata"]["resourceVersion"] = str(next(self.rv))
        else:
            del self.bodies[uid]

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def snapshot(self) -> None:
        """Remember the world as it is now (what a lagging cache may still show later)."""
        self.history.append((copy.deepcopy(self.bodies), copy.deepcopy(self.claim)))

    # --- views ---------------------------------------------------------------------------

    def views(self) -> list[SessionView]:
        return [SessionView.from_body(b, self.activity, self.now) for b in self.bodies.values()]

    def view(self, name: str) -> SessionView:
        return SessionView.from_body(self.bodies[self.uid(name)], self.activity, self.now)

    def phase(self, name: str) -> str | None:
        return self.bodies[self.uid(name)]["status"].get("phase")

    def status(self, name: str) -> dict[str, Any]:
        return self.bodies[self.uid(name)]["status"]

    def claim_view(self) -> Claim | None:
        return Claim.from_body(self.claim) if self.claim is not None else None

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        for condition in self.status(name).get("conditions", []):
            if condition["type"] == type_:
                return condition
        raise KeyError(type_)

    # --- the operator ----------------------------------------------------------------------

    def reconcile(self, rounds: int = 5) -> Plan:
        """Decide and apply until nothing is left to do (a real operator re-reconciles
        after its own writes arrive through the watch)."""
        last = Plan()
        for _ in range(rounds):
            plan = self.decide()
            self.plans.append(plan)
            if plan.empty:
                return last
            self.apply(plan)
            last = plan
        raise AssertionError("the arbiter did not converge")

    def decide(self) -> Plan:
        """One decision, asking for the permissions it needs as the reconciler does: each
        owner once, then deciding again with the answers."""
        permits: dict[str, bool] = {}
        views, claim = self.views(), self.claim_view()
        while True:
            plan = decide(views, claim, self.now, self.defaults, replace(self.governance, permits=permits))
            if not plan.asks:
                return plan
            for owner in plan.asks:
                assert owner.username not in permits, f"asked twice for {owner.username}"
                self.asked.append(owner.username)
                permits[owner.username] = self.authorizer.get(owner.username, False)

    def apply(self, plan: Plan, *, crash_after: int | None = None) -> None:
        """Carry out ``plan`` with the operator's executor; ``crash_after=N``: die after N writes."""
        self._crash_after = None if crash_after is None else self.writes + crash_after
        try:
            self.loop.run_until_complete(self.executor().execute(plan, (NAMESPACE, self.target), self.now))
        except Crash:
            pass
        finally:
            self._crash_after = None

    def executor(self, api: Any = None) -> Executor:
        return Executor(api or self, self)

    # --- the API server (executor.WriteApi, reconciler.ReadApi) -------------------------------

    async def _write(self, what: str) -> None:
        if self._crash_after is not None and self.writes >= self._crash_after:
            raise Crash(what)
        if self.gate is not None:
            await self.gate(what)

    def _session(self, name: str, rv: str | None) -> dict[str, Any]:
        for body in self.bodies.values():
            if body["metadata"]["name"] == name:
                if rv is not None and body["metadata"]["resourceVersion"] != rv:
                    raise Conflict(409, "Conflict", f"session {name}: the object has been modified")
                return body
        raise NotFound(404, "NotFound", f"session {name} not found")

    def _wrote(self, body: dict[str, Any], before: Any, after: Any) -> None:
        self.writes += 1
        if before != after:
            body["metadata"]["resourceVersion"] = str(next(self.rv))
        self.snapshot()
        self.check()

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._session(name, None))

    async def patch_session_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        await self._write(f"status {name}")
        body = self._session(name, resource_version)
        before = body["status"]
        body["status"] = merge_patch(before, dict(status_patch))
        self._wrote(body, before, body["status"])
        return copy.deepcopy(body)

    async def set_session_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        await self._write(f"finalizers {name}")
        body = self._session(name, resource_version)
        before = body["metadata"].get("finalizers") or []
        body["metadata"]["finalizers"] = list(finalizers)
        self._wrote(body, before, finalizers)
        if body["metadata"].get("deletionTimestamp") and not finalizers:
            del self.bodies[body["metadata"]["uid"]]
        return copy.deepcopy(body)

    async def delete_session(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        await self._write(f"delete {name}")
        body = self._session(name, resource_version)
        if body["metadata"]["uid"] != uid:
            raise Conflict(409, "Conflict", "uid precondition failed")
        self.writes += 1
        self.delete(name)
        self.snapshot()
        self.check()

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        if self.claim is None:
            raise NotFound(404, "NotFound", f"lease {name} not found")
        return copy.deepcopy(self.claim)

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await self._write("claim create")
        if self.claim is not None:
            raise Conflict(409, "AlreadyExists", "lease already exists")
        return self._store_claim(body)

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        await self._write("claim replace")
        if self.claim is None:
            raise NotFound(404, "NotFound", f"lease {name} not found")
        if self.claim["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "lease: the object has been modified")
        return self._store_claim(body)

    def _store_claim(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.claim = copy.deepcopy(dict(body))
        self.claim["metadata"]["resourceVersion"] = str(next(self.rv))
        self.writes += 1
        self.snapshot()
        self.check()
        return copy.deepcopy(self.claim)

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        await self._write("claim delete")
        if self.claim is None:
            raise NotFound(404, "NotFound", f"lease {name} not found")
        if self.claim["metadata"]["resourceVersion"] != resource_version:
            raise Conflict(409, "Conflict", "lease: precondition failed")
        self.claim = None
        self.writes += 1
        self.snapshot()
        self.check()

    # --- what the executor reports (executor.Observer) ------------------------------------

    def session_written(self, body: Mapping[str, Any]) -> SessionView:
        return SessionView.from_body(body, self.activity, self.now)

    def session_gone(self, session: SessionView) -> None:
        pass

    def claim_written(self, key: TargetKey, claim: Claim | None, previous: Claim | None) -> None:
        pass

    def transition(self, write: StatusWrite, written: SessionView) -> None:
        assert write.transition is not None
        self.transitions.append((written.name, write.transition.event_reason or write.status.get("phase", "")))

    def retention_deleted(self, session: SessionView) -> None:
        pass

    # --- rule 1 ----------------------------------------------------------------------------

    def check(self) -> None:
        """Rule 1 at this instant: at most one Active, and it is the claim holder."""
        active = [b for b in self.bodies.values() if b["status"].get("phase") == Phase.ACTIVE]
        if len(active) > 1:
            names = [b["metadata"]["name"] for b in active]
            raise InvariantViolation(f"two Active sessions at once: {names}")
        for body in active:
            claim = self.claim_view()
            if claim is None or claim.holder != body["metadata"]["name"] or claim.holder_uid != body["metadata"]["uid"]:
                raise InvariantViolation(f"{body['metadata']['name']} is Active without holding the claim ({claim})")


def with_status(view: SessionView, **status: Any) -> SessionView:
    return replace(view, status={**view.status, **status})
