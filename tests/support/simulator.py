"""A tiny in-memory world for the arbiter: sessions, one claim, and plan application.

It applies a Plan the way the executor does (demote, claim, activate, rest) and checks
the exclusivity invariant after every single write, not only at the end.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from session_operator.arbiter import Defaults, Plan, decide
from session_operator.model import FINALIZER, ActivityClock, Claim, Phase, SessionView, format_time

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


class InvariantViolation(AssertionError):
    pass


class World:
    def __init__(self, target: str = "repo/payments", defaults: Defaults | None = None) -> None:
        self.target = target
        self.now = T0
        self.defaults = defaults or Defaults()
        self.bodies: dict[str, dict[str, Any]] = {}  # uid -> body
        self.claim: dict[str, Any] | None = None
        self.rv = itertools.count(1)
        self.uids = itertools.count(1)
        self.plans: list[Plan] = []
        self.activity = ActivityClock()
        self.history: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    # --- user actions --------------------------------------------------------------------

    def create(self, name: str, *, created: datetime | None = None, **spec: Any) -> str:
        uid = f"uid-{next(self.uids)}"
        body_spec = {"target": self.target, "profile": "", "onConflict": "Reject", "priority": 0, "state": "Active"}
        body_spec.update(spec)
        self.bodies[uid] = {
            "metadata": {
                "namespace": "ns",
                "name": name,
                "uid": uid,
                "resourceVersion": str(next(self.rv)),
                "generation": 1,
                "creationTimestamp": format_time(created or self.now),
                "finalizers": [],
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

    def annotate_activity(self, name: str, when: datetime) -> None:
        body = self.bodies[self.uid(name)]
        body["metadata"].setdefault("annotations", {})["session-operator.io/last-activity"] = format_time(when)
        body["metadata"]["resourceVersion"] = str(next(self.rv))

    def delete(self, name: str) -> None:
        uid = self.uid(name)
        body = self.bodies[uid]
        if body["metadata"]["finalizers"]:
            body["metadata"]["deletionTimestamp"] = format_time(self.now)
            body["metadata"]["generation"] += 1
        else:
            del self.bodies[uid]

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def snapshot(self) -> None:
        """Remember the world as it is now (what a lagging index may still show later)."""
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
            plan = decide(self.views(), self.claim_view(), self.now, self.defaults)
            self.plans.append(plan)
            if plan.empty:
                return last
            self.apply(plan)
            last = plan
        raise AssertionError("the arbiter did not converge")

    def apply(self, plan: Plan) -> None:
        for session in plan.add_finalizer:
            body = self.bodies[session.uid]
            body["metadata"]["finalizers"].append(FINALIZER)
            body["metadata"]["resourceVersion"] = str(next(self.rv))
        writes = list(plan.writes)
        for write in [w for w in writes if w.kind == "demote"]:
            self._write_status(write.session.uid, write.status)
        if plan.claim_change is not None:
            self._apply_claim(plan)
        for write in [w for w in writes if w.kind != "demote"]:
            self._write_status(write.session.uid, write.status)
        for session in plan.remove_finalizer:
            body = self.bodies.get(session.uid)
            if body is None:
                continue
            body["metadata"]["finalizers"] = [f for f in body["metadata"]["finalizers"] if f != FINALIZER]
            if body["metadata"].get("deletionTimestamp") and not body["metadata"]["finalizers"]:
                del self.bodies[session.uid]
        for session in plan.delete:
            if session.uid in self.bodies:
                self.delete(self.bodies[session.uid]["metadata"]["name"])

    def _apply_claim(self, plan: Plan) -> None:
        change = plan.claim_change
        assert change is not None
        if change.op == "release":
            self.claim = None
        else:
            holder = change.holder
            assert holder is not None
            transitions = 0 if self.claim is None else self.claim["spec"].get("leaseTransitions", 0)
            if change.op == "transfer":
                transitions += 1
            self.claim = {
                "metadata": {
                    "name": "claim",
                    "resourceVersion": str(next(self.rv)),
                    "annotations": {"session-operator.io/holder-uid": holder.uid},
                },
                "spec": {"holderIdentity": holder.name, "leaseTransitions": transitions},
            }
        self.check()

    def _write_status(self, uid: str, status: dict[str, Any]) -> None:
        body = self.bodies.get(uid)
        if body is None:
            return
        body["status"] = status
        body["metadata"]["resourceVersion"] = str(next(self.rv))
        self.check()

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
