"""Reconcile one target group: gather, decide (arbiter), act (claims, status, events).

Whatever happened — a create, a spec change, a deletion, a claim change, a deadline —
the same function runs for the whole (namespace, target) group and converges it. The
order of writes is what keeps rule 1 true at every instant:

1. finalizers on sessions about to hold or wait (so a deletion is always seen);
2. demotions: sessions leaving Active are written non-Active first;
3. the one claim change (create / transfer / confirm / release), conditional;
4. activations and every other status write, each conditional on its resourceVersion;
5. finalizer removals, then retention deletions.

A 409 anywhere means the plan was made on stale data: re-read and decide again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from . import claims, logs, metrics
from . import kube as kube_api
from .arbiter import Defaults, Plan, StatusWrite, decide, status_patch
from .model import FINALIZER, ActivityClock, Claim, Phase, SessionView, rv_order
from .workqueue import RetryLater

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (namespace, target)
MAX_ATTEMPTS = 8


class EventPoster:
    """Posts Kubernetes Events so that reconciles never wait on them.

    A few serial lanes, a session always on the same one: its events keep their order,
    while a burst of thousands of transitions is not posted one at a time.
    """

    def __init__(self, kube: kube_api.Kube, instance: str, *, lanes: int = 4, capacity: int = 10_000) -> None:
        self._kube = kube
        self._instance = instance
        self._lanes: list[asyncio.Queue[tuple[SessionView, str, str, str]]] = [
            asyncio.Queue(capacity // lanes) for _ in range(lanes)
        ]

    def post(self, session: SessionView, reason: str, message: str, event_type: str) -> None:
        lane = self._lanes[hash(session.uid) % len(self._lanes)]
        try:
            lane.put_nowait((session, reason, message, event_type))
        except asyncio.QueueFull:
            log.warning("Dropped event %s for session %s/%s: queue full", reason, session.namespace, session.name)

    async def run(self) -> None:
        await asyncio.gather(*(self._run_lane(lane) for lane in self._lanes))

    async def _run_lane(self, lane: asyncio.Queue[tuple[SessionView, str, str, str]]) -> None:
        while True:
            session, reason, message, event_type = await lane.get()
            involved = {"namespace": session.namespace, "name": session.name, "uid": session.uid}
            try:
                await self._kube.create_event(
                    involved, reason=reason, message=message, event_type=event_type, instance=self._instance
                )
                metrics.EVENTS_POSTED.labels(reason=reason).inc()
            except kube_api.ApiError as e:
                log.warning("Failed to post event %s for %s/%s: %s", reason, session.namespace, session.name, e)


class Reconciler:
    def __init__(
        self,
        kube: kube_api.Kube,
        *,
        sessions: Callable[[TargetKey], Iterable[SessionView]],
        claims: Callable[[TargetKey], Claim | None],
        defaults: Defaults,
        activity: ActivityClock,
        events: EventPoster,
        schedule: Callable[[TargetKey, datetime | None], None],
    ) -> None:
        self._kube = kube
        self._sessions = sessions
        self._claims = claims
        self._defaults = defaults
        self._activity = activity
        self._events = events
        self._schedule = schedule
        # Our own writes, fresher than the indices until the watch delivers them.
        self._overlay: dict[str, SessionView] = {}
        # Claims we wrote (or read fresh): (resourceVersion, claim); None once released.
        self._claim_overlay: dict[TargetKey, tuple[int, Claim | None]] = {}
        # Targets whose claim must be read from the API server (after a lost race).
        self._claim_stale: set[TargetKey] = set()

    def forget(self, uid: str) -> None:
        """The session is gone from the cluster: drop what we remembered of it."""
        self._overlay.pop(uid, None)
        self._activity.forget(uid)

    async def reconcile(self, key: TargetKey) -> None:
        started = time.monotonic()
        try:
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    plan = await self._once(key)
                except kube_api.Conflict as e:
                    log.debug("Re-deciding target %s/%s after a conflict: %s", key[0], key[1], e)
                    self._claim_stale.add(key)
                    continue
                except kube_api.ApiError as e:
                    metrics.RECONCILE_ERRORS.labels(error=e.reason or str(e.status)).inc()
                    raise RetryLater(f"target {key[0]}/{key[1]}: {e}") from e
                self._schedule(key, plan.next_due)
                return
        finally:
            metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
        metrics.RECONCILE_ERRORS.labels(error="Conflict").inc()
        raise RetryLater(f"target {key[0]}/{key[1]} still conflicting after {MAX_ATTEMPTS} attempts")

    # --- gathering -----------------------------------------------------------------------

    def _group(self, key: TargetKey) -> list[SessionView]:
        views = []
        for view in self._sessions(key):
            newer = self._overlay.get(view.uid)
            if newer is not None:
                if rv_order(newer.resource_version) > rv_order(view.resource_version):
                    view = newer
                else:
                    del self._overlay[view.uid]
            views.append(view)
        return views

    async def _holder_if_missing(
        self, namespace: str, target: str, views: list[SessionView], claim: Claim | None
    ) -> None:
        """The index may not have seen the claim holder yet (another replica just created
        it). Read it before treating the claim as abandoned."""
        if claim is None or not claim.holder:
            return
        if any(v.name == claim.holder and claim.holder_uid in (None, v.uid) for v in views):
            return
        try:
            body = await self._kube.get_session(namespace, claim.holder)
        except kube_api.NotFound:
            return
        view = SessionView.from_body(body, self._activity)
        if view.target == target and claim.holder_uid in (None, view.uid):
            views.append(view)

    async def _claim(self, key: TargetKey) -> Claim | None:
        """The claim from the watch, unless our own write (or a fresh read) is newer.

        Reading it from the index saves a GET per reconcile; deciding on a stale claim is
        safe because every claim write is conditional, and after a lost race the claim is
        read from the API server."""
        namespace, target = key
        if key in self._claim_stale:
            self._claim_stale.discard(key)
            fresh = await claims.read_claim(self._kube, namespace, target)
            indexed = self._claims(key)
            floor = rv_order(indexed.resource_version) if indexed is not None else -1
            self._claim_overlay[key] = (rv_order(fresh.resource_version) if fresh else floor, fresh)
            return fresh
        indexed = self._claims(key)
        known = self._claim_overlay.get(key)
        if known is None:
            return indexed
        known_rv, known_claim = known
        indexed_rv = rv_order(indexed.resource_version) if indexed is not None else -1
        caught_up = indexed_rv > known_rv or (
            indexed_rv == known_rv and indexed is not None and known_claim is not None
        ) or (indexed is None and known_claim is None)
        if caught_up:
            del self._claim_overlay[key]
            return indexed
        return known_claim

    async def _once(self, key: TargetKey) -> Plan:
        namespace, target = key
        views = self._group(key)
        claim = await self._claim(key)
        await self._holder_if_missing(namespace, target, views, claim)
        now = datetime.now(UTC)
        plan = decide(views, claim, now, self._defaults)
        if not plan.empty:
            await self._execute(namespace, target, plan, now)
        return plan

    # --- acting --------------------------------------------------------------------------

    async def _execute(self, namespace: str, target: str, plan: Plan, now: datetime) -> None:
        current: dict[str, SessionView] = {}
        for session in plan.add_finalizer:
            view = current.get(session.uid, session)
            body = await self._guarded(
                view,
                self._kube.set_session_finalizers(
                    namespace, view.name, [*view.finalizers, FINALIZER], view.resource_version
                ),
            )
            current[view.uid] = self._remember(body)
        for write in plan.writes:
            if write.kind == "demote":
                current[write.session.uid] = await self._write_status(write, current, now)
        if plan.fence is not None:
            view = current.get(plan.fence.uid, plan.fence)
            try:  # no change, only the precondition: "the holder is still as this plan saw it"
                await self._kube.patch_session_status(view.namespace, view.name, {}, view.resource_version)
            except kube_api.NotFound:
                self.forget(view.uid)  # gone: nothing can make it Active any more
            except kube_api.Conflict:
                metrics.CLAIM_CONFLICTS.labels(object="session").inc()
                await self._refresh(view)
                raise
        if plan.claim_change is not None:
            try:
                written = await claims.apply_change(self._kube, namespace, target, plan.claim_change, now)
            except kube_api.Conflict:
                metrics.CLAIM_CONFLICTS.labels(object="claim").inc()
                raise
            before = plan.claim_change.claim
            self._claim_overlay[(namespace, target)] = (
                rv_order(written.resource_version) if written is not None
                else rv_order(before.resource_version) if before is not None else -1,
                written,
            )
        for write in plan.writes:
            if write.kind != "demote":
                current[write.session.uid] = await self._write_status(write, current, now)
        for session in plan.remove_finalizer:
            view = current.get(session.uid, session)
            finalizers = [f for f in view.finalizers if f != FINALIZER]
            try:
                body = await self._guarded(
                    view,
                    self._kube.set_session_finalizers(namespace, view.name, finalizers, view.resource_version),
                )
            except kube_api.Conflict:
                if view.deleting:
                    raise
                continue  # only tidiness is lost; the next reconcile tries again
            if body.get("metadata", {}).get("deletionTimestamp") and not finalizers:
                self.forget(view.uid)
            else:
                current[view.uid] = self._remember(body)
        for session in plan.delete:
            view = current.get(session.uid, session)
            with contextlib.suppress(kube_api.NotFound):
                await self._kube.delete_session(namespace, view.name, view.uid, view.resource_version)
            metrics.DELETIONS.inc()
            log.info("Deleted session %s/%s after its retention (spec.deleteAfter)", namespace, view.name)

    async def _guarded(self, view: SessionView, call: Any) -> dict[str, Any]:
        """Await a conditional write on a session; on 409/404 refresh our copy and raise Conflict."""
        try:
            result: dict[str, Any] = await call
            return result
        except kube_api.Conflict:
            metrics.CLAIM_CONFLICTS.labels(object="session").inc()
            await self._refresh(view)
            raise
        except kube_api.NotFound as e:
            self.forget(view.uid)
            raise kube_api.Conflict(409, "Conflict", f"session {view.name} is gone") from e

    async def _refresh(self, view: SessionView) -> None:
        try:
            body = await self._kube.get_session(view.namespace, view.name)
        except kube_api.NotFound:
            self.forget(view.uid)
            return
        if (body.get("metadata") or {}).get("uid") == view.uid:
            self._remember(body)

    def _remember(self, body: dict[str, Any]) -> SessionView:
        view = SessionView.from_body(body, self._activity)
        self._overlay[view.uid] = view
        return view

    async def _write_status(
        self, write: StatusWrite, current: dict[str, SessionView], now: datetime
    ) -> SessionView:
        view = current.get(write.session.uid, write.session)
        patch = status_patch(view.status, write.status)
        body = await self._guarded(
            view,
            self._kube.patch_session_status(view.namespace, view.name, patch, view.resource_version),
        )
        written = self._remember(body)
        transition = write.transition
        if transition is not None:
            self._record(written, write.status, transition, now)
        return written

    def _record(self, session: SessionView, status: dict[str, Any], transition: Any, now: datetime) -> None:
        phase = status.get("phase", "")
        metrics.DECISIONS.labels(outcome=transition.outcome).inc()
        if transition.first_decision:
            metrics.DECISION_LATENCY.observe(max(0.0, (now - session.created).total_seconds()))
        if phase == Phase.REPLACED:
            metrics.REPLACEMENTS.labels(reason=transition.outcome).inc()
        if phase == Phase.ARCHIVED:
            metrics.ARCHIVALS.labels(reason=transition.outcome).inc()
        verb = transition.event_reason or phase
        log.info(
            "%s session %s/%s: %s",
            verb,
            session.namespace,
            session.name,
            transition.message,
            extra=logs.context(namespace=session.namespace, name=session.name, target=session.target),
        )
        if transition.event_reason:
            self._events.post(session, transition.event_reason, transition.message, transition.event_type)
