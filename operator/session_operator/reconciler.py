"""Reconcile one target group: read it from the cache, decide (arbiter), execute (executor).

Whatever happened — a create, a spec change, a deletion, a claim change, a deadline —
the same function runs for the whole (namespace, target) group and converges it. It
reads nothing from the API server in the usual case: the cache holds the group and the
claim, including the answers to the operator's own writes. It reads only to recover:

* after a lost race (409), the object that moved, so the next decision is not stale;
* when the claim names a holder the cache has not seen (another replica just created
  it), that session, before treating the claim as abandoned.

Refreshing waiting sessions' holder and position (queue truth) is paced per target: each
decision may spend what is left of ``refresh_rate`` writes per second (``RefreshBudget``,
passed to the arbiter as that decision's ``Defaults.refresh_budget``), however often the
target is reconciled, so a burst of holder changes costs about that many writes a
second, not the queue's length for every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from . import logs
from .arbiter import Defaults, decide
from .cache import ClusterView, OwnerKey, TargetKey
from .errors import ApiError, NotFound
from .events import EventPoster
from .executor import Executor, LostRace, WriteApi
from .informer import UNREACHABLE_BACKOFF
from .metrics import Metrics
from .model import Claim, DesiredState, Owner, Phase, SessionView, claim_name
from .permissions import Permissions
from .plan import ClaimChange, Plan, StatusWrite
from .policy import Governance
from .workqueue import RetryLater

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
# A target whose undecided session waits for an earlier one of its owner under a cap is
# looked at again this much later (the earlier one is being decided meanwhile).
CAP_ORDER_WAIT = timedelta(seconds=0.1)


class ReadApi(Protocol):
    async def get_session(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]: ...


class Api(ReadApi, WriteApi, Protocol):
    pass


class RefreshBudget:
    """A token bucket per target: ``rate`` queue-truth writes a second, at most ``rate``
    at once. Targets with a full bucket keep no entry."""

    PRUNE_ABOVE = 1024

    def __init__(self, rate: int) -> None:
        self.rate = max(0, rate)
        self._buckets: dict[TargetKey, tuple[float, float]] = {}  # key -> (tokens, at when)

    def _tokens(self, key: TargetKey, now: float) -> float:
        bucket = self._buckets.get(key)
        if bucket is None:
            return float(self.rate)
        tokens, at = bucket
        return min(float(self.rate), tokens + max(0.0, now - at) * self.rate)

    def available(self, key: TargetKey, now: float) -> int:
        """Writes ``key`` may spend now (``now``: seconds since the epoch)."""
        return int(self._tokens(key, now))

    def spend(self, key: TargetKey, count: int, now: float) -> None:
        if count <= 0:
            return
        self._buckets[key] = (self._tokens(key, now) - count, now)
        if len(self._buckets) > self.PRUNE_ABOVE:
            for other in [k for k in self._buckets if self._tokens(k, now) >= self.rate]:
                del self._buckets[other]

    def __len__(self) -> int:
        return len(self._buckets)


class OwnerLocks:
    """One lock per (namespace, owner), held across the decision and the writes of every
    target group whose policies cap that owner: two targets deciding at once cannot both
    count the owner under its cap. Taken in sorted order (no deadlock); an entry lives
    only while someone holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[OwnerKey, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def held(self, owners: Iterable[OwnerKey]) -> Any:
        keys = sorted(set(owners))
        async with contextlib.AsyncExitStack() as stack:
            for key in keys:
                lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
                self._locks[key] = (lock, users + 1)
                stack.callback(self._release, key)
                await stack.enter_async_context(lock)
            yield

    def _release(self, key: OwnerKey) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


def _owner_key(namespace: str, owner: Owner | None) -> OwnerKey:
    return (namespace, owner.username if owner is not None else "")


def _holding(sessions: Iterable[SessionView]) -> set[str]:
    """Owners (usernames; "" for none) with a session showing Active."""
    return {s.owner.username if s.owner else "" for s in sessions if s.phase == Phase.ACTIVE}


class Reconciler:
    def __init__(
        self,
        cache: ClusterView,
        api: Api,
        *,
        defaults: Defaults,
        refresh_rate: int = 20,
        events: EventPoster,
        metrics: Metrics,
        concurrency: int = 16,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        permissions: Permissions | None = None,
        wake: Callable[[TargetKey], None] | None = None,
    ) -> None:
        self._cache = cache
        self._api = api
        self._defaults = defaults
        self._events = events
        self._metrics = metrics
        self._clock = clock
        self._executor = Executor(api, self, concurrency=concurrency)
        # --queue-refresh-rate: queue-truth writes a second per target; each decision may
        # spend what is left of it (Defaults.refresh_budget, per decision).
        self._refresh = RefreshBudget(refresh_rate)
        self._stale_claims: set[TargetKey] = set()  # read fresh before the next decision
        # Without an authorizer (a test's), every preempt permission asked for is refused.
        self._permissions = permissions
        self._wake = wake
        self.owner_locks = OwnerLocks()

    async def reconcile(self, key: TargetKey) -> float | None:
        """Converge one target group; returns when it is next due (seconds since the epoch)."""
        started = time.monotonic()
        try:
            for _attempt in range(MAX_ATTEMPTS):
                try:
                    next_due = await self._once(key)
                except LostRace as e:
                    log.debug("Re-deciding target %s/%s after a lost race: %s", key[0], key[1], e)
                    await self._recover(key, e)
                    continue
                except ApiError as e:
                    self._metrics.reconcile_errors.labels(error=e.reason or str(e.status)).inc()
                    # The server cannot be reached: try again within seconds, not after
                    # a backoff grown through the outage (see informer.UNREACHABLE_BACKOFF).
                    delay = UNREACHABLE_BACKOFF * (0.5 + random.random() / 2) if e.status == 0 else None
                    raise RetryLater(f"target {key[0]}/{key[1]}: {e}", delay) from e
                return next_due.timestamp() if next_due is not None else None
        finally:
            self._metrics.reconcile_duration.observe(time.monotonic() - started)
        self._metrics.reconcile_errors.labels(error="Conflict").inc()
        raise RetryLater(f"target {key[0]}/{key[1]} still conflicting after {MAX_ATTEMPTS} attempts")

    async def _once(self, key: TargetKey) -> datetime | None:
        sessions = self._cache.sessions(key)
        claim = await self._claim(key)
        holder = await self._unseen_holder(key, sessions, claim)
        if holder is not None:
            sessions.append(holder)
        capped = any(p.capped and p.selects(*key) for p in self._cache.policies())
        # Caps: the owners that may gain an Active or Queued session here are locked, and
        # their counts elsewhere read once the lock is held.
        contenders = {
            _owner_key(key[0], s.owner) for s in sessions
            if capped and not s.deleting and (not s.decided or s.phase == Phase.QUEUED)
        }
        async with self.owner_locks.held(contenders):
            governance = self._governance(key, sessions)
            holding = _holding(sessions) if capped else set()
            now = self._clock()
            ahead = self._ahead(sessions, governance) if capped else None
            if ahead is not None:
                # The owner's earlier session on another target takes its cap first.
                log.debug("Deciding target %s/%s after %s/%s, of the same owner and earlier in queue order",
                          key[0], key[1], ahead.namespace, ahead.name)
                return now + CAP_ORDER_WAIT
            budget = self._refresh.available(key, now.timestamp())
            defaults = replace(self._defaults, refresh_budget=budget)
            plan = decide(sessions, claim, now, defaults, governance)
            if plan.asks:
                plan = await self._ask(key, sessions, claim, now, defaults, governance, plan)
            self._refresh.spend(key, plan.refreshes, now.timestamp())
            if not plan.empty:
                await self._executor.execute(plan, key, now)
        if holding and self._wake is not None:
            # An owner that held here and no longer does is further from its caps: its
            # waiting sessions elsewhere may be promoted now.
            for username in holding - _holding(self._cache.sessions(key)):
                for other in self._cache.queued_targets((key[0], username)) - {key}:
                    self._wake(other)
        return plan.next_due

    def _ahead(self, sessions: list[SessionView], governance: Governance) -> SessionView | None:
        """An undecided session of a capped owner here waits for one of that owner's that
        comes before it in queue order on another target, if any."""
        for session in sessions:
            if session.decided or session.deleting or session.phase in (Phase.ACTIVE, Phase.QUEUED):
                continue
            if session.spec is None or session.spec.state is not DesiredState.ACTIVE:
                continue
            for policy in governance.terms.capped:
                ahead = self._cache.waits_behind(session, policy)
                if ahead is not None:
                    return ahead
        return None

    def _governance(self, key: TargetKey, sessions: list[SessionView]) -> Governance:
        owners = {s.owner for s in sessions if s.owner is not None}
        permits = self._permissions.known(key[0], owners) if self._permissions is not None and owners else {}
        return self._cache.governance(key, sessions, permits)

    async def _ask(
        self, key: TargetKey, sessions: list[SessionView], claim: Claim | None, now: datetime,
        defaults: Defaults, governance: Governance, plan: Plan,
    ) -> Plan:
        """The decision needs to know whether some owners may preempt: ask (at most one
        request per owner, cached), then decide again with the answers. An answer can
        change who holds the target for the sessions after it, so that decision may need
        another owner's answer: each owner is asked at most once."""
        permits = dict(governance.permits)
        while plan.asks:
            for owner in sorted(plan.asks, key=lambda o: o.username):
                if owner.username in permits:
                    raise RuntimeError(f"the decision asked twice for the permission of {owner.username}")
                if self._permissions is None:
                    permits[owner.username] = False
                    continue
                try:
                    permits[owner.username] = await self._permissions.may_preempt(key[0], owner)
                except ApiError as e:
                    log.warning(
                        "Could not ask whether user %s may preempt sessions in namespace %s: %s; "
                        "deciding target %s later", owner.username, key[0], e, key[1],
                    )
                    raise
            plan = decide(sessions, claim, now, defaults, replace(governance, permits=permits))
        return plan

    async def _claim(self, key: TargetKey) -> Claim | None:
        if key in self._stale_claims:
            previous = self._cache.claim(key)
            try:
                fresh: Claim | None = Claim.from_body(await self._api.get_lease(key[0], claim_name(key[1])))
            except NotFound:
                fresh = None
            # (Only once read: a failed read leaves it marked, to be read on the retry.)
            self._stale_claims.discard(key)
            self._cache.claim_written(key, fresh, previous)
        return self._cache.claim(key)

    async def _unseen_holder(
        self, key: TargetKey, sessions: list[SessionView], claim: Claim | None
    ) -> SessionView | None:
        """The claim's holder when the cache has not seen it (yet): read it once."""
        if claim is None or not claim.holder:
            return None
        if any(s.name == claim.holder and claim.holder_uid in (None, s.uid) for s in sessions):
            return None
        if claim.holder_uid is not None and self._cache.known_gone(claim.holder_uid):
            return None  # the watch saw it deleted
        try:
            body = await self._api.get_session(key[0], claim.holder)
        except NotFound:
            return None
        view = self._cache.session_written(body)
        if view.target == key[1] and claim.holder_uid in (None, view.uid):
            return view
        return None

    async def _recover(self, key: TargetKey, lost: LostRace) -> None:
        step = lost.step
        if isinstance(step, ClaimChange):
            self._metrics.claim_conflicts.labels(object="claim").inc()
            self._stale_claims.add(key)
            return
        self._metrics.claim_conflicts.labels(object="session").inc()
        session = step.session
        try:
            body = await self._api.get_session(session.namespace, session.name)
        except NotFound:
            self._cache.session_gone(session.uid)
            return
        if (body.get("metadata") or {}).get("uid") == session.uid:
            self._cache.session_written(body)
        else:
            self._cache.session_gone(session.uid)  # same name, another object

    # --- what the executor reports (executor.Observer) -------------------------------------

    def session_written(self, body: Mapping[str, Any]) -> SessionView:
        return self._cache.session_written(body)

    def session_gone(self, session: SessionView) -> None:
        self._cache.session_gone(session.uid)

    def claim_written(self, key: TargetKey, claim: Claim | None, previous: Claim | None) -> None:
        self._cache.claim_written(key, claim, previous)

    def retention_deleted(self, session: SessionView) -> None:
        self._cache.session_gone(session.uid)
        self._metrics.deletions.inc()
        log.info("Deleted session %s/%s after its retention (spec.deleteAfter)", session.namespace, session.name)

    def transition(self, write: StatusWrite, written: SessionView) -> None:
        transition = write.transition
        assert transition is not None
        metrics = self._metrics
        phase = write.status.get("phase", "")
        metrics.decisions.labels(outcome=transition.outcome).inc()
        if transition.first_decision:
            metrics.decision_latency.observe(max(0.0, (self._clock() - written.created).total_seconds()))
        if phase == Phase.REPLACED:
            metrics.replacements.labels(reason=transition.outcome).inc()
        elif phase == Phase.ARCHIVED:
            metrics.archivals.labels(reason=transition.outcome).inc()
        verb = transition.event_reason or phase
        log.info(
            "%s session %s/%s: %s",
            verb,
            written.namespace,
            written.name,
            transition.message,
            extra=logs.context(namespace=written.namespace, name=written.name, target=written.target),
        )
        if transition.event_reason:
            self._events.post(written, transition.event_reason, transition.message, transition.event_type)
