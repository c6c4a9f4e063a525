"""What the operator knows of the cluster: one place, plain data, no I/O.

``ClusterView`` holds every watched session (as a ``SessionView``) grouped by
(namespace, target), and every claim by (namespace, target). Two sources feed it:

* the informers (``informer.py``): a paged LIST, then the watch's events;
* the operator's own writes: the object the API server returned, which is fresher than
  the watch until the watch delivers the same version.

For any object the newest version wins (resourceVersions of one server are compared as
the increasing integers etcd makes them; a wrong guess costs a 409 and a re-read, never
a wrong write, because every write is conditional). A deletion leaves a tombstone, so a
late answer to an earlier write cannot bring a deleted session back, and a release of a
claim leaves a floor below which watch events about that claim are stale.

Every method that changes the view returns the target keys it touched, so the caller
knows what to reconcile. Counts by phase and the oldest undecided session are kept up
to date on every change, so a metrics scrape costs nothing at 100,000 sessions.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from .model import (
    ACTIVITY_ANNOTATION,
    TARGET_ANNOTATION,
    Claim,
    DesiredState,
    Phase,
    SessionView,
    parse_time,
    rv_order,
)
from .policy import Counts, Governance, InvalidPolicyError, Policy, Terms, selecting

log = logging.getLogger(__name__)

TargetKey = tuple[str, str]  # (namespace, target)
OwnerKey = tuple[str, str]  # (namespace, owner's username; "" for sessions without one)
UNDECIDED = "Undecided"  # the phase label of a session with no decision for its generation


class ActivityClock:
    """Pins each activity annotation value to the time it was first seen.

    A time in the future counts as now, and "now" must be when the operator first saw
    that value, not every later moment: otherwise an annotation set far ahead would keep
    a session from ever going idle. Keeps one entry per session (its latest value).
    """

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, datetime]] = {}
        self._unreadable: dict[str, Any] = {}  # the last unreadable value per session, to warn once

    def observe(self, uid: str, raw: Any, now: datetime | None = None) -> datetime | None:
        when = parse_time(raw)
        if when is None:
            if raw not in (None, "") and self._unreadable.get(uid) != raw:
                self._unreadable[uid] = raw
                log.warning(
                    "Ignored annotation %s=%r on session uid %s: not an RFC 3339 time "
                    "(for example 2026-11-21T10:00:00Z)", ACTIVITY_ANNOTATION, raw, uid,
                )
            self._seen.pop(uid, None)
            return None
        self._unreadable.pop(uid, None)
        seen = self._seen.get(uid)
        if seen is None or seen[0] != raw:
            seen = (str(raw), now or datetime.now(UTC))
            self._seen[uid] = seen
        return min(when, seen[1])

    def forget(self, uid: str) -> None:
        self._seen.pop(uid, None)
        self._unreadable.pop(uid, None)


def _phase_key(view: SessionView) -> tuple[str, str]:
    phase = view.phase if view.decided else None
    return (view.namespace, phase or UNDECIDED)


def claim_key(body: Mapping[str, Any]) -> TargetKey | None:
    """The (namespace, target) a claim Lease belongs to; None for a Lease that is no claim."""
    metadata = body.get("metadata") or {}
    target = (metadata.get("annotations") or {}).get(TARGET_ANNOTATION)
    if not isinstance(target, str) or not target:
        return None
    return (metadata.get("namespace") or "", target)


@dataclass(frozen=True, slots=True)
class _Stored:
    """One session as the cache keeps it: the view without its status, and the status as
    compact JSON. A decoded status is a tree of small dicts and strings (about 4 KB for
    six conditions); its JSON is a fifth of that. A reconcile decodes the statuses of the
    one group it decides, which costs about 10 µs a session."""

    view: SessionView  # with an empty status
    status: bytes
    phase_key: tuple[str, str]  # (namespace, phase or Undecided), for the counts
    shown: str | None  # status.phase as written, decided for this generation or not

    @classmethod
    def of(cls, view: SessionView) -> _Stored:
        # A copy: orjson's result sits in a 4 KiB allocation whatever its length.
        status = bytes(memoryview(orjson.dumps(view.status))) if view.status else b""
        return cls(replace(view, status=_NO_STATUS), status, _phase_key(view), view.phase)

    def full(self) -> SessionView:
        return replace(self.view, status=orjson.loads(self.status)) if self.status else self.view

    @property
    def uid(self) -> str:
        return self.view.uid

    @property
    def rv(self) -> int:
        return rv_order(self.view.resource_version)

    @property
    def key(self) -> TargetKey:
        return (self.view.namespace, self.view.target)


_NO_STATUS: dict[str, Any] = {}


class ClusterView:
    def __init__(self, activity: ActivityClock | None = None, *, tombstones: int = 50_000) -> None:
        self.activity = activity or ActivityClock()
        self._sessions: dict[str, _Stored] = {}  # uid -> newest version
        self._groups: dict[TargetKey, dict[str, _Stored]] = {}
        self._gone: OrderedDict[str, None] = OrderedDict()  # uids seen deleted, newest last
        self._tombstones = tombstones
        self._claims: dict[TargetKey, Claim] = {}
        self._claim_floor: dict[TargetKey, int] = {}  # events at or below this rv are stale
        self._phases: Counter[tuple[str, str]] = Counter()
        self._undecided: dict[str, datetime] = {}  # uid -> since when
        # Per owner, the Active and the Queued sessions (uid -> target), for the caps of
        # SessionPolicies: a count is a len() or a walk over one owner's few sessions.
        self._owned: dict[tuple[str, str, str], dict[str, str]] = {}  # (ns, owner, phase) -> uid -> target
        self._policies: dict[str, Policy] = {}
        self._policy_errors: dict[str, str] = {}  # name -> why it is not in force

    # --- reading -------------------------------------------------------------------------

    def sessions(self, key: TargetKey) -> list[SessionView]:
        group = self._groups.get(key)
        return [stored.full() for stored in group.values()] if group else []

    def session(self, uid: str) -> SessionView | None:
        stored = self._sessions.get(uid)
        return stored.full() if stored is not None else None

    def claim(self, key: TargetKey) -> Claim | None:
        return self._claims.get(key)

    def known_gone(self, uid: str) -> bool:
        """The watch said this session was deleted."""
        return uid in self._gone

    def keys(self) -> set[TargetKey]:
        return set(self._groups) | set(self._claims)

    def undecided_keys(self) -> list[TargetKey]:
        """Targets with a session that has no decision for its generation yet, the target
        of the newest such session first."""
        newest: dict[TargetKey, datetime] = {}
        for uid, since in self._undecided.items():
            stored = self._sessions.get(uid)
            if stored is not None and since >= newest.get(stored.key, since):
                newest[stored.key] = since
        return sorted(newest, key=newest.__getitem__, reverse=True)

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def claim_count(self) -> int:
        return len(self._claims)

    def phase_counts(self) -> dict[tuple[str, str], int]:
        """(namespace, phase) -> sessions; ``Undecided`` for those with no decision yet."""
        return {key: count for key, count in self._phases.items() if count}

    def oldest_undecided(self, now: datetime) -> float:
        """Seconds the longest-waiting undecided session has waited; 0 when none waits."""
        if not self._undecided:
            return 0.0
        return max(0.0, (now - min(self._undecided.values())).total_seconds())

    # --- owners and policies ------------------------------------------------------------------

    def owner_counts(self, owner: OwnerKey, policy: Policy, exclude: str | None = None) -> Counts:
        """The owner's Active and Queued sessions that ``policy`` selects, other than on
        target ``exclude``."""
        namespace, username = owner

        def count(phase: Phase) -> int:
            sessions = self._owned.get((namespace, username, phase.value))
            if not sessions:
                return 0
            if not policy.target_prefixes and exclude is None:
                return len(sessions)
            return sum(1 for target in sessions.values() if target != exclude and policy.selects(namespace, target))

        if policy.namespaces and namespace not in policy.namespaces:
            return Counts()
        return Counts(
            active=count(Phase.ACTIVE) if policy.max_active is not None else 0,
            queued=count(Phase.QUEUED) if policy.max_queued is not None else 0,
        )

    def governance(
        self, key: TargetKey, sessions: Iterable[SessionView], permits: Mapping[str, bool] | None = None
    ) -> Governance:
        """What a decision about ``key`` needs beyond its group: the policies that select
        it, and each capped policy's counts for the owners in ``sessions`` elsewhere."""
        terms = Terms(selecting(self._policies.values(), *key))
        elsewhere = {}
        for policy in terms.capped:
            for username in {s.owner.username if s.owner else "" for s in sessions}:
                elsewhere[(policy.name, username)] = self.owner_counts((key[0], username), policy, key[1])
        return Governance(terms, elsewhere, dict(permits or {}))

    def queued_targets(self, owner: OwnerKey) -> set[TargetKey]:
        """The targets where the owner has a Queued session."""
        namespace, username = owner
        return {(namespace, t) for t in (self._owned.get((namespace, username, Phase.QUEUED.value)) or {}).values()}

    def queued_keys(self, policy: Policy) -> set[TargetKey]:
        """Targets with a Queued session that ``policy`` selects (after it changes)."""
        keys: set[TargetKey] = set()
        for (namespace, _, phase), sessions in self._owned.items():
            if phase == Phase.QUEUED.value:
                keys.update((namespace, t) for t in sessions.values() if policy.selects(namespace, t))
        return keys

    def policies(self) -> tuple[Policy, ...]:
        """The SessionPolicies in force (an unusable one is left out, see policy_errors)."""
        return tuple(self._policies.values())

    def policy_errors(self) -> dict[str, str]:
        return dict(self._policy_errors)

    def policy_names(self) -> tuple[list[str], list[str]]:
        """The SessionPolicies in force, and those left out, by name."""
        return sorted(self._policies), sorted(self._policy_errors)

    def policy_event(self, kind: str, body: Mapping[str, Any]) -> set[TargetKey]:
        """A watch event about a SessionPolicy; returns the targets to decide again (those
        with waiting sessions it selects or selected: a raised cap promotes them)."""
        name = str((body.get("metadata") or {}).get("name") or "")
        before = self._policies.pop(name, None)
        self._policy_errors.pop(name, None)
        after = None
        if kind != "DELETED":
            try:
                after = Policy.from_body(body)
            except InvalidPolicyError as e:
                self._policy_errors[name] = str(e)
                log.warning("Ignored SessionPolicy %s, which the operator cannot use: %s", name, e)
            else:
                self._policies[name] = after
        if before == after:
            return set()
        touched: set[TargetKey] = set()
        for policy in (before, after):
            if policy is not None:
                touched |= self.queued_keys(policy)
        return touched

    def policy_listing(self, namespace: str | None = None) -> _PolicyListing:
        return _PolicyListing(self)

    def _own(self, stored: _Stored, add: bool) -> None:
        view = stored.view
        phase = stored.shown
        if view.deleting:
            return
        if phase not in (Phase.ACTIVE.value, Phase.QUEUED.value):
            # (The stored view has no status: whether it is decided is in its phase key.)
            if stored.phase_key[1] != UNDECIDED or view.spec is None or view.spec.state is not DesiredState.ACTIVE:
                return
            phase = UNDECIDED  # asks for its target and is not decided yet
        owner = view.owner
        key = (view.namespace, owner.username if owner is not None else "", phase)
        if add:
            self._owned.setdefault(key, {})[view.uid] = view.target
            return
        sessions = self._owned.get(key)
        if sessions is not None:
            sessions.pop(view.uid, None)
            if not sessions:
                del self._owned[key]

    def waits_behind(self, session: SessionView, policy: Policy) -> SessionView | None:
        """An undecided session of the same owner, on another target that ``policy`` also
        selects, that comes before ``session`` in queue order (priority, age, name): under
        a cap it is decided first, so that the owner's sessions take their cap in order."""
        owner = session.owner
        namespace = session.namespace
        others = self._owned.get((namespace, owner.username if owner is not None else "", UNDECIDED))
        if not others:
            return None
        first = None
        for uid, target in others.items():
            if target == session.target or not policy.selects(namespace, target):
                continue
            stored = self._sessions.get(uid)
            if stored is None or stored.view.order_key >= session.order_key:
                continue
            if first is None or stored.view.order_key < first.order_key:
                first = stored.view
        return first

    # --- sessions --------------------------------------------------------------------------

    def session_event(self, kind: str, body: Mapping[str, Any]) -> set[TargetKey]:
        """A watch event (ADDED, MODIFIED, DELETED) about a session."""
        uid = (body.get("metadata") or {}).get("uid") or ""
        if kind == "DELETED":
            return self._remove(uid, tombstone=True)
        if uid in self._gone:
            return set()  # an event from before its deletion, which we saw first (a 404)
        return self._put(self._view(body))

    def session_written(self, body: Mapping[str, Any]) -> SessionView:
        """The API server's answer to one of our writes: newer than the watch, for now."""
        if ((body.get("metadata") or {}).get("uid") or "") in self._gone:
            return SessionView.from_body(body)  # not kept: must not pin activity for a session gone
        view = self._view(body)
        self._put(view)
        return view

    def session_gone(self, uid: str) -> set[TargetKey]:
        """A write or read found the session gone (404)."""
        return self._remove(uid, tombstone=True)

    def session_listing(self, namespace: str | None = None) -> _SessionListing:
        """A full LIST (in ``namespace``, or everywhere), fed page by page; at ``finish``,
        sessions it did not contain were deleted meanwhile, unless we wrote them since."""
        return _SessionListing(self, namespace)

    def _view(self, body: Mapping[str, Any]) -> SessionView:
        metadata = body.get("metadata") or {}
        current = self._sessions.get(metadata.get("uid") or "")
        if current is not None and rv_order(str(metadata.get("resourceVersion") or "")) <= current.rv:
            # A copy older than the one held is not kept, so it must not re-pin the activity
            # clock: that would move the first sight of the newer value's time.
            return SessionView.from_body(body)
        return SessionView.from_body(body, self.activity)

    def _put(self, view: SessionView) -> set[TargetKey]:
        current = self._sessions.get(view.uid)
        if current is not None:
            if rv_order(view.resource_version) <= current.rv:
                return set()  # the copy we hold is as new (our own write came back) or newer
            self._unindex(current)
        stored = _Stored.of(view)
        self._sessions[view.uid] = stored
        key = stored.key
        self._groups.setdefault(key, {})[view.uid] = stored
        self._phases[stored.phase_key] += 1
        self._own(stored, add=True)
        if not view.decided and not view.deleting:
            previous = self._undecided.get(view.uid)
            self._undecided[view.uid] = previous or (
                view.created if view.generation <= 1 else datetime.now(UTC)
            )
        else:
            self._undecided.pop(view.uid, None)
        touched = {key}
        if current is not None and current.key != key:
            touched.add(current.key)  # target changed (no CEL on this server)
        return touched

    def _unindex(self, stored: _Stored) -> None:
        key = stored.key
        group = self._groups.get(key)
        if group is not None:
            group.pop(stored.uid, None)
            if not group:
                del self._groups[key]
        self._phases[stored.phase_key] -= 1
        if not self._phases[stored.phase_key]:
            del self._phases[stored.phase_key]
        self._own(stored, add=False)

    def _remove(self, uid: str, *, tombstone: bool) -> set[TargetKey]:
        if tombstone and uid:
            self._gone[uid] = None
            self._gone.move_to_end(uid)
            while len(self._gone) > self._tombstones:
                self._gone.popitem(last=False)
        stored = self._sessions.pop(uid, None)
        self._undecided.pop(uid, None)
        self.activity.forget(uid)
        if stored is None:
            return set()
        self._unindex(stored)
        return {stored.key}

    # --- claims ----------------------------------------------------------------------------

    def claim_event(self, kind: str, body: Mapping[str, Any]) -> set[TargetKey]:
        """A watch event about a claim Lease (Leases that are no claim are ignored)."""
        key = claim_key(body)
        if key is None:
            return set()
        claim = Claim.from_body(body)
        rv = rv_order(claim.resource_version)
        if rv <= self._claim_floor.get(key, -1):
            return set()
        current = self._claims.get(key)
        if current is not None and rv < rv_order(current.resource_version):
            return set()
        if kind == "DELETED":
            self._claims.pop(key, None)
            self._claim_floor[key] = rv
            return {key}
        if current == claim:
            return set()
        self._claims[key] = claim
        return {key}

    def claim_written(self, key: TargetKey, claim: Claim | None, previous: Claim | None = None) -> None:
        """Our own claim write (or a fresh read): ``None`` when the claim is gone now;
        ``previous`` is the version it replaced, for a release."""
        if claim is None:
            gone = self._claims.pop(key, None)
            floor = max(
                rv_order(gone.resource_version) if gone else -1,
                rv_order(previous.resource_version) if previous else -1,
            )
            self._claim_floor[key] = max(floor, self._claim_floor.get(key, -1))
            return
        current = self._claims.get(key)
        if current is None or rv_order(claim.resource_version) >= rv_order(current.resource_version):
            self._claims[key] = claim
            self._claim_floor.pop(key, None)

    def claim_listing(self, namespace: str | None = None) -> _ClaimListing:
        return _ClaimListing(self, namespace)

    # --- what the informers feed -------------------------------------------------------------

    @property
    def session_sink(self) -> _Sink:
        return _Sink(self.session_listing, self.session_event)

    @property
    def claim_sink(self) -> _Sink:
        return _Sink(self.claim_listing, self.claim_event)

    @property
    def policy_sink(self) -> _Sink:
        return _Sink(self.policy_listing, self.policy_event)


class _Sink:
    def __init__(self, listing: Callable[[str | None], Any], event: Callable[[str, Mapping[str, Any]], set[TargetKey]]):
        self.listing = listing
        self.event = event


class _SessionListing:
    def __init__(self, view: ClusterView, namespace: str | None) -> None:
        self._view = view
        self._namespace = namespace
        self._listed: set[str] = set()
        self.touched: set[TargetKey] = set()

    def add(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        view = self._view
        for body in bodies:
            session = view._view(body)
            self._listed.add(session.uid)
            view._gone.pop(session.uid, None)
            self.touched |= view._put(session)

    def finish(self, list_rv: str) -> set[TargetKey]:
        view = self._view
        floor = rv_order(list_rv)
        for uid, stored in list(view._sessions.items()):
            if uid in self._listed or (self._namespace is not None and stored.view.namespace != self._namespace):
                continue
            if stored.rv <= floor:
                self.touched |= view._remove(uid, tombstone=True)
        return self.touched


class _ClaimListing:
    def __init__(self, view: ClusterView, namespace: str | None) -> None:
        self._view = view
        self._namespace = namespace
        self._listed: set[TargetKey] = set()
        self.touched: set[TargetKey] = set()

    def add(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        view = self._view
        for body in bodies:
            key = claim_key(body)
            if key is None:
                continue
            self._listed.add(key)
            view._claim_floor.pop(key, None)
            self.touched |= view.claim_event("ADDED", body)

    def finish(self, list_rv: str) -> set[TargetKey]:
        view = self._view
        floor = rv_order(list_rv)
        for key, claim in list(view._claims.items()):
            if key in self._listed or (self._namespace is not None and key[0] != self._namespace):
                continue
            if rv_order(claim.resource_version) <= floor:
                del view._claims[key]
                self.touched.add(key)
        return self.touched


class _PolicyListing:
    def __init__(self, view: ClusterView) -> None:
        self._view = view
        self._listed: set[str] = set()
        self.touched: set[TargetKey] = set()

    def add(self, bodies: Iterable[Mapping[str, Any]]) -> None:
        for body in bodies:
            self._listed.add(str((body.get("metadata") or {}).get("name") or ""))
            self.touched |= self._view.policy_event("ADDED", body)

    def finish(self, list_rv: str) -> set[TargetKey]:
        view = self._view
        for name in [n for n in (*view._policies, *view._policy_errors) if n not in self._listed]:
            self.touched |= view.policy_event("DELETED", {"metadata": {"name": name}})
        return self.touched
