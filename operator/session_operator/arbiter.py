"""The arbiter: given one target's sessions and its claim, decide everything (pure).

No I/O, no clock: the caller passes ``now`` and plain data (``SessionView``, ``Claim``)
and gets back a ``plan.Plan``: the status each session should show, the one claim change to
make, finalizers to add or remove, and sessions due for deletion. The executor applies a
plan in a fixed order (demote, claim, activate, the rest), each write conditional on the
resourceVersion the plan was made from, so a plan made on stale data fails rather than
doing harm.

The decision, in order, for one target group:

1. The claim holder: a session that holds the claim stays Active unless it is being
   deleted, its spec asks for another state, its spec became invalid, or a deadline
   (maxDuration, idleTimeout) passed. A claim whose holder is gone is released.
2. Decided sessions keep their phase (rule 2); terminal ones may be archived or deleted
   by retention, when their time has come.
3. If the target is free, the head of the queue (priority, age, name) is promoted,
   unless an undecided session asks to be activated (it takes the free target instead).
4. Undecided sessions (new, or their spec changed) are applied one by one in that same
   order, each meeting the holder left by the ones before it (rule 4). A session with a
   pending ``spec.activateRequest`` is decided as if its policy were Replace, and the
   request is recorded in its status (consumed).
5. Queue truth: new entries and the head are written exactly, as part of the decision;
   other waiting sessions whose holder or position is stale are refreshed head-first, at
   most ``Defaults.refresh_budget`` per decision, after the activation (so a promotion's
   critical path stays demote, claim, activate); if some remain, the target is due again
   a second later. Each refresh writes the truth of that moment, so a burst of changes
   costs about the budget per second, not one write per waiting session per change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, assert_never

from . import target
from .conditions import Reason, build_conditions
from .model import (
    TERMINAL_PHASES,
    Claim,
    DesiredState,
    InvalidSpecError,
    OnConflict,
    Owner,
    Phase,
    SessionView,
    format_duration,
    format_time,
    parse_duration,
    parse_time,
    same_owner,
)
from .plan import ClaimChange, DeleteSession, DropFinalizer, Fence, Plan, StatusWrite, Step, Transition
from .policy import NO_GOVERNANCE, PREEMPT_VERB, Governance, cap_breach, not_permitted, protected, violation

_STATE_PHASE = {
    DesiredState.INACTIVE: (Phase.INACTIVE, Reason.INACTIVE),
    DesiredState.COMPLETED: (Phase.COMPLETED, Reason.COMPLETED),
    DesiredState.ARCHIVED: (Phase.ARCHIVED, Reason.ARCHIVED),
}

# The Event each kind of transition posts (reason, type); one per transition.
_EVENTS: dict[tuple[Phase, Reason], tuple[str, str]] = {
    (Phase.ACTIVE, Reason.ACQUIRED): ("Activated", "Normal"),
    (Phase.ACTIVE, Reason.PROMOTED): ("Promoted", "Normal"),
    (Phase.ACTIVE, Reason.REPLACED_PREVIOUS): ("Replaced", "Normal"),
    (Phase.QUEUED, Reason.QUEUED): ("Queued", "Normal"),
    (Phase.REJECTED, Reason.TARGET_BUSY): ("Rejected", "Warning"),
    (Phase.REJECTED, Reason.DUPLICATE_PROFILE): ("Rejected", "Warning"),
    (Phase.REPLACED, Reason.REPLACED): ("Replaced", "Normal"),
    (Phase.REPLACED, Reason.PROFILE_CHANGED): ("Replaced", "Normal"),
    (Phase.ABANDONED, Reason.IDLE_TIMEOUT): ("Abandoned", "Normal"),
    (Phase.ABANDONED, Reason.MAX_DURATION_EXCEEDED): ("Abandoned", "Normal"),
    (Phase.ARCHIVED, Reason.REQUESTED): ("Archived", "Normal"),
    (Phase.ARCHIVED, Reason.RETENTION): ("Archived", "Normal"),
    (Phase.INVALID, Reason.INVALID_SPEC): ("Invalid", "Warning"),
    (Phase.INVALID, Reason.POLICY_VIOLATION): ("Invalid", "Warning"),
    (Phase.REJECTED, Reason.NOT_PERMITTED): ("Rejected", "Warning"),
    (Phase.REJECTED, Reason.OWNER_LIMIT): ("Rejected", "Warning"),
    (Phase.REJECTED, Reason.PROTECTED): ("Rejected", "Warning"),
}


@dataclass(frozen=True, slots=True)
class Defaults:
    """Operator-wide values for sessions that leave them unset."""

    archive_after: timedelta | None = timedelta(hours=168)
    delete_after: timedelta | None = None
    # Stale waiting sessions (holder or queue position) this decision may refresh: the
    # reconciler passes what is left of its per-target rate (--queue-refresh-rate).
    refresh_budget: int = 20


# A target whose waiting sessions are not all refreshed yet is decided again this much later.
QUEUE_REFRESH_INTERVAL = timedelta(seconds=1)


@dataclass(slots=True)
class _Outcome:
    """The phase a session ends with in this plan, before it is rendered to status."""

    phase: Phase
    reason: Reason
    message: str
    fields: dict[str, Any]
    replaced_reason: Reason | None = None
    archived_reason: Reason | None = None
    transition: bool = True  # False: same phase, only fields refreshed (no Event)


def _holder_info(session: SessionView, active_since: str | None) -> dict[str, Any]:
    return {
        "name": session.name,
        "uid": session.uid,
        "profile": session.profile,
        "activeSince": active_since,
    }


class _Group:
    """Working state while deciding one target group."""

    def __init__(
        self,
        sessions: Sequence[SessionView],
        claim: Claim | None,
        now: datetime,
        defaults: Defaults,
        governance: Governance = NO_GOVERNANCE,
    ) -> None:
        self.sessions = sessions
        self.governance = governance
        self.asks: set[Owner] = set()  # permissions needed and not known
        self.restore_active: set[str] = set()  # claim holders whose phase was edited away from Active
        self.no_take: set[str] = set()  # decided again after a status edit: may not replace anyone
        self.claim = claim
        self.now = now
        self.stamp = format_time(now)
        self.defaults = defaults
        self.outcomes: dict[str, _Outcome] = {}
        self.holder: SessionView | None = None
        self.holder_since: str | None = None
        self.due: list[datetime] = []
        self.claim_change: ClaimChange | None = None
        self.deletions: list[SessionView] = []
        self.consumed: dict[str, str] = {}  # uid -> the spec.activateRequest acted on
        self.refreshes = 0

    @property
    def target(self) -> str:
        for session in self.sessions:
            if session.target:
                return session.target
        return ""

    # --- outcomes ------------------------------------------------------------------------

    def set(self, session: SessionView, outcome: _Outcome) -> None:
        self.outcomes[session.uid] = outcome

    def phase_of(self, session: SessionView) -> str | None:
        outcome = self.outcomes.get(session.uid)
        return outcome.phase.value if outcome else session.phase

    def take(self, session: SessionView, since: str | None = None) -> None:
        self.holder = session
        self.holder_since = since or self.stamp

    # --- messages --------------------------------------------------------------------------

    def held_by(self) -> str:
        assert self.holder is not None
        return target.held_by(self.target, self.holder, self.holder_since)

    # --- lifecycle -------------------------------------------------------------------------

    def archive_after(self, session: SessionView) -> timedelta | None:
        if session.spec is not None and session.spec.archive_after is not None:
            return session.spec.archive_after
        return self.defaults.archive_after

    def delete_after(self, session: SessionView) -> timedelta | None:
        if session.spec is not None and session.spec.delete_after is not None:
            return session.spec.delete_after
        return self.defaults.delete_after

    def deadline(self, when: datetime) -> bool:
        """True when ``when`` has come; otherwise remember it as the group's next due time."""
        if when <= self.now:
            return True
        self.due.append(when)
        return False


def decide(
    sessions: Iterable[SessionView],
    claim: Claim | None,
    now: datetime,
    defaults: Defaults | None = None,
    governance: Governance = NO_GOVERNANCE,
) -> Plan:
    """Decide one target group. ``sessions`` are all sessions of one (namespace, target).

    ``governance``: the SessionPolicies that select the target, the per-owner counts
    their caps need, and the preempt permissions known so far. When the decision needs a
    permission that is not known, the plan is empty and names it in ``asks``."""
    group = _Group(list(sessions), claim, now, defaults or Defaults(), governance)
    live = [s for s in group.sessions if not s.deleting]
    claim_holder = target.named_by_claim(group.sessions, claim)

    undecided: list[SessionView] = []
    handled: set[str] = set()
    # A status edit never moves a target: a phase that its own conditions contradict is
    # put back (the conditions are what the operator wrote with the outcome).
    if (
        claim_holder is not None and claim_holder.decided and claim_holder.phase != Phase.ACTIVE
        and _ready(claim_holder) is not None and _shows_active_conditions(claim_holder)
        and claim_holder.status.get("activeSince")
    ):
        group.restore_active.add(claim_holder.uid)
    # 1. The claim holder first: it keeps the target unless it is leaving.
    if claim_holder is not None and not claim_holder.deleting:
        if claim_holder.decided and claim_holder.phase != Phase.ACTIVE and claim_holder.uid not in group.restore_active:
            pass  # decided and not Active: a leftover claim (crash between writes); released below
        elif target.wants_target(claim_holder):
            _keep_holder(group, claim_holder)
            handled.add(claim_holder.uid)
        else:
            undecided.append(claim_holder)  # leaves: its new state, or Invalid
            handled.add(claim_holder.uid)

    # A session being deleted that still shows Active is demoted first, so that no
    # watcher ever sees it Active next to the session that takes the target over.
    for session in group.sessions:
        if session.deleting and session.phase == Phase.ACTIVE:
            group.set(
                session,
                _Outcome(
                    Phase.INACTIVE,
                    Reason.INACTIVE,
                    f'session is being deleted; target "{session.target}" released',
                    {},
                    transition=False,
                ),
            )

    # 2. Decided sessions keep their phase; time may move them on. With no claim naming a
    # session (lost, or not seen yet), the holder is the one the target module names.
    unclaimed_holder = target.holder(live, None) if claim_holder is None else None
    queue: list[SessionView] = []
    for session in live:
        if session.uid in handled:
            continue
        if not session.decided or session.spec is None:
            undecided.append(session)
            continue
        phase = session.phase
        if phase == Phase.ACTIVE and session is not claim_holder and not _shows_active_conditions(session):
            # Shows Active, but its conditions record another outcome: a status edit (the
            # operator writes phase and conditions together). Put the outcome back.
            restored = _recorded_outcome(session)
            group.set(session, restored)
            if restored.phase is Phase.QUEUED:
                queue.append(session)
            elif restored.phase in TERMINAL_PHASES:
                _retention(group, session, restored)
            continue
        if phase == Phase.ACTIVE and session is not claim_holder:
            # Active without the claim (the claim was lost or taken): if nobody holds the
            # claim it simply takes it again; otherwise it is decided afresh.
            if claim_holder is None and group.holder is None and session is unclaimed_holder:
                _keep_holder(group, session)
            else:
                # Only a status edit leaves it Active beside the holder (a holder is always
                # written out of Active before the claim moves): it is decided again, but
                # what it asked for was decided already, so it takes no target from anyone.
                group.no_take.add(session.uid)
                undecided.append(session)
        elif phase == Phase.QUEUED:
            queue.append(session)
        elif phase in TERMINAL_PHASES:
            _retention(group, session)

    # A holder that is leaving (new state, invalid spec) was not kept in step 1, so the
    # queue is promoted below before the newcomers are applied, in queue order (rule 4).
    undecided.sort(key=lambda s: s.order_key)

    # 3. A free target goes to the head of the queue, unless a session asks to be
    # activated: it takes the target in step 4, and the queue keeps its order.
    if group.holder is None and queue and not any(s.activation is not None for s in undecided):
        queue.sort(key=lambda s: s.order_key)
        # The first waiting session whose owner is under every cap (SessionPolicy
        # perOwner.maxActive); the ones passed over keep their place.
        head = next((s for s in queue if _over_cap(group, s, Phase.ACTIVE) is None), None)
        if head is not None:
            queue.remove(head)
            _activate(group, head, Reason.PROMOTED, _promoted_message(group, claim_holder))

    # 4. Undecided sessions, one by one, in queue order (rule 4).
    for session in undecided:
        _evaluate(group, session, queue)

    if group.asks:
        # A permission is needed that the caller has not asked the API server about: it
        # asks, then decides again. Nothing is written on a partial answer.
        return Plan(asks=frozenset(group.asks))
    # Finalise: queue positions, the claim change, and the plan's stages.
    _queue_positions(group, queue)
    _claim_change(group, claim_holder)
    return Plan(
        stages=_stages(group, claim_holder),
        next_due=min(group.due) if group.due else None,
        refreshes=group.refreshes,
    )


def _keep_holder(group: _Group, session: SessionView) -> None:
    """``session`` holds the claim and wants the target: it stays (or becomes) Active,
    unless a deadline has passed, in which case it is Abandoned and releases. A pending
    activation request is simply recorded: it holds the target already."""
    if session.activation is not None:
        group.consumed[session.uid] = session.activation
    status = session.status
    was_active = session.phase == Phase.ACTIVE or session.uid in group.restore_active
    active_since = status.get("activeSince") if was_active else None
    since_dt = parse_time(active_since) or group.now
    spec = session.spec
    assert spec is not None
    # Activity: never backwards, and a time in the future counts as now.
    candidates = [since_dt]
    recorded = parse_time(status.get("lastActivityTime")) if was_active else None
    if recorded is not None:
        candidates.append(recorded)
    if session.last_activity is not None:
        candidates.append(min(session.last_activity, group.now))
    last_activity = max(candidates)
    idle_timeout, max_duration = _limits_in_force(session)
    if was_active and max_duration is not None and group.deadline(since_dt + max_duration):
        _leave(
            group,
            session,
            Phase.ABANDONED,
            Reason.MAX_DURATION_EXCEEDED,
            f"active since {format_time(since_dt)}, longer than {_limit_name(session, 'maxDuration')} "
            f"{format_duration(max_duration)}; target \"{session.target}\" released",
            fields={"activeSince": active_since, "lastActivityTime": format_time(last_activity)},
        )
        return
    idle_deadline = last_activity + idle_timeout if idle_timeout is not None else None
    if was_active and idle_deadline is not None and group.deadline(idle_deadline):
        _leave(
            group,
            session,
            Phase.ABANDONED,
            Reason.IDLE_TIMEOUT,
            f"no activity since {format_time(last_activity)} for {_limit_name(session, 'idleTimeout')} "
            f"{format_duration(idle_timeout or timedelta())}; target \"{session.target}\" released",
            fields={"activeSince": active_since, "lastActivityTime": format_time(last_activity)},
        )
        return
    if not was_active:
        # Holds the claim but does not show Active yet (a crash between the claim write
        # and the status write, or a re-evaluation): activate, confirming the claim.
        reason = _ready_reason(session) or Reason.ACQUIRED
        _activate(group, session, reason, _acquired_message(session))
        return
    group.take(session, active_since)
    fields = dict(_active_fields(status))
    fields["lastActivityTime"] = format_time(last_activity)
    fields["idleDeadline"] = format_time(idle_deadline) if idle_deadline is not None else None
    reason = _ready_reason(session) or Reason.ACQUIRED
    message = _ready_message(session) or _acquired_message(session)
    # A spec change while holding lands here too: it keeps the target, new deadlines apply.
    group.set(session, _Outcome(Phase.ACTIVE, reason, message, fields, transition=False))


def _active_fields(status: dict[str, Any]) -> dict[str, Any]:
    return {"activeSince": status.get("activeSince"), "replaces": status.get("replaces"),
            "limits": status.get("limits")}


def _limits_in_force(session: SessionView) -> tuple[timedelta | None, timedelta | None]:
    """idleTimeout and maxDuration: the spec's, else the policy defaults fixed in
    ``status.limits`` when the session became Active (a later policy change does not
    move them)."""
    spec = session.spec
    assert spec is not None
    limits = session.status.get("limits") or {}
    values = []
    for own, api_name in ((spec.idle_timeout, "idleTimeout"), (spec.max_duration, "maxDuration")):
        value = own
        if value is None and isinstance(limits, dict) and isinstance(limits.get(api_name), str):
            try:
                value = parse_duration(limits[api_name], f"status.limits.{api_name}")
            except InvalidSpecError:
                value = None  # written by the operator; unreadable only if edited by hand
        values.append(value)
    return values[0], values[1]


def _limit_name(session: SessionView, api_name: str) -> str:
    spec = session.spec
    assert spec is not None
    own = spec.idle_timeout if api_name == "idleTimeout" else spec.max_duration
    if own is not None:
        return f"spec.{api_name}"
    policy = (session.status.get("limits") or {}).get("policy")
    return f'the default {api_name} of SessionPolicy "{policy}"' if policy else f"status.limits.{api_name}"


def _ready_reason(session: SessionView) -> Reason | None:
    for condition in session.status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            try:
                return Reason(condition.get("reason"))
            except ValueError:
                return None
    return None


def _ready_message(session: SessionView) -> str | None:
    for condition in session.status.get("conditions") or ():
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return condition.get("message") or None
    return None


def _acquired_message(session: SessionView) -> str:
    return f'session "{session.name}" holds target "{session.target}"'


def _promoted_message(group: _Group, previous: SessionView | None) -> str:
    if previous is not None:
        return f'promoted from the queue of target "{group.target}" after "{previous.name}" released it'
    return f'promoted from the queue of target "{group.target}"'


def _activate(
    group: _Group,
    session: SessionView,
    reason: Reason,
    message: str,
    *,
    replaces: str | None = None,
) -> None:
    spec = session.spec
    assert spec is not None
    idle_timeout, max_duration = spec.idle_timeout, spec.max_duration
    # Where the spec leaves a limit unset, the policy's default applies, fixed now in
    # status.limits: the holder's deadlines do not move when the policy changes later.
    limits: dict[str, str] = {}
    terms = group.governance.terms
    for own, api_name, default in (
        (idle_timeout, "idleTimeout", terms.idle_default()),
        (max_duration, "maxDuration", terms.duration_default()),
    ):
        if own is None and default is not None:
            limits[api_name] = format_duration(default.value)
            limits.setdefault("policy", default.policy)
            if api_name == "idleTimeout":
                idle_timeout = default.value
            else:
                max_duration = default.value
    fields: dict[str, Any] = {
        "activeSince": group.stamp,
        "lastActivityTime": group.stamp,
        "idleDeadline": format_time(group.now + idle_timeout) if idle_timeout is not None else None,
        "replaces": replaces,
        "limits": limits or None,
    }
    for limit in (idle_timeout, max_duration):
        if limit is not None:
            group.deadline(group.now + limit)
    group.set(session, _Outcome(Phase.ACTIVE, reason, message, fields))
    group.take(session)


def _leave(
    group: _Group,
    session: SessionView,
    phase: Phase,
    reason: Reason,
    message: str,
    *,
    fields: dict[str, Any] | None = None,
    replaced_reason: Reason | None = None,
    archived_reason: Reason | None = None,
) -> None:
    """``session`` ends up in a phase that does not hold the target."""
    fields = dict(fields or {})
    if phase in TERMINAL_PHASES:
        fields.setdefault("endedAt", group.stamp)
    if phase is Phase.ARCHIVED:
        fields.setdefault("archivedAt", group.stamp)
    outcome = _Outcome(
        phase, reason, message, fields, replaced_reason=replaced_reason, archived_reason=archived_reason
    )
    group.set(session, outcome)
    if group.holder is session:
        group.holder = None
        group.holder_since = None
    if phase in TERMINAL_PHASES:
        _retention(group, session, outcome)


def _evaluate(group: _Group, session: SessionView, queue: list[SessionView]) -> None:
    """Rule 4: an undecided session meets the holder left by those before it."""
    if session.spec is None:
        _leave(
            group,
            session,
            Phase.INVALID,
            Reason.INVALID_SPEC,
            f"{session.spec_error}; fix the spec to have it evaluated again",
        )
        return
    spec = session.spec
    if spec.state is not DesiredState.ACTIVE:
        phase, reason = _STATE_PHASE[spec.state]
        messages = {
            Phase.INACTIVE: f'spec.state is Inactive; target "{session.target}" is not held',
            Phase.COMPLETED: f'completed (spec.state: Completed); target "{session.target}" released',
            Phase.ARCHIVED: "archived on request (spec.state: Archived)",
        }
        _leave(
            group,
            session,
            phase,
            Reason.REQUESTED if phase is Phase.ARCHIVED else reason,
            messages[phase],
            archived_reason=Reason.REQUESTED if phase is Phase.ARCHIVED else None,
        )
        return
    policy = spec.on_conflict
    activation = session.activation
    if session.uid in group.no_take:
        activation = None
        if policy in (OnConflict.REPLACE, OnConflict.REPLACE_IF_PROFILE_CHANGED):
            policy = OnConflict.REJECT
    broken = violation(group.governance.terms.policies, spec, activation=activation is not None)
    if broken is not None:
        _leave(
            group,
            session,
            Phase.INVALID,
            Reason.POLICY_VIOLATION,
            f"{broken}; change the spec to have it evaluated again",
        )
        return
    if activation is not None:
        # A one-shot request (kubectl session activate): Replace, whatever onConflict says.
        group.consumed[session.uid] = activation
        policy = OnConflict.REPLACE
    holder = group.holder
    if holder is None or holder is session:
        over = _over_cap(group, session, Phase.ACTIVE)
        if over is None:
            _activate(group, session, Reason.ACQUIRED, _acquired_message(session))
        elif policy is OnConflict.QUEUE:
            _enqueue(group, session, None, queue)  # promoted once its owner is under the cap
        else:
            _reject(group, session, Reason.OWNER_LIMIT, f"{over}; target \"{session.target}\" is free", None)
        return
    # Every policy has its branch: mypy fails on a value added to OnConflict and not
    # handled here (assert_never), instead of it being rejected by a fall-through.
    match policy:
        case OnConflict.REPLACE_IF_PROFILE_CHANGED:
            if holder.profile == spec.profile:
                _reject(
                    group,
                    session,
                    Reason.DUPLICATE_PROFILE,
                    f'{group.held_by()} with the same profile; use session "{holder.name}" (ReplaceIfProfileChanged '
                    "replaces only a holder whose profile differs), or archive it, or change spec.profile or "
                    "spec.onConflict",
                    holder,
                )
                return
            if _may_take(group, session, holder):
                _replace(group, holder, session, Reason.PROFILE_CHANGED)
        case OnConflict.REPLACE:
            if _may_take(group, session, holder):
                _replace(group, holder, session, Reason.REPLACED, on_request=activation is not None)
        case OnConflict.QUEUE:
            _enqueue(group, session, holder, queue)
        case OnConflict.REJECT:
            _reject(
                group,
                session,
                Reason.TARGET_BUSY,
                f"{group.held_by()}; archive it, or set spec.onConflict to Queue or Replace",
                holder,
            )
        case _:
            assert_never(policy)


def _reject(group: _Group, session: SessionView, reason: Reason, message: str, holder: SessionView | None) -> None:
    fields = {"holder": _holder_info(holder, group.holder_since)} if holder is not None else None
    _leave(group, session, Phase.REJECTED, reason, message, fields=fields)


def _enqueue(group: _Group, session: SessionView, holder: SessionView | None, queue: list[SessionView]) -> None:
    over = _over_cap(group, session, Phase.QUEUED)
    if over is not None:
        where = f"; {group.held_by()}" if holder is not None else ""
        _reject(group, session, Reason.OWNER_LIMIT, over + where, holder)
        return
    fields = {"holder": _holder_info(holder, group.holder_since) if holder is not None else None}
    group.set(session, _Outcome(Phase.QUEUED, Reason.QUEUED, "", fields))
    queue.append(session)


def _over_cap(group: _Group, session: SessionView, phase: Phase) -> str | None:
    """Why ``session`` may not become ``phase`` (Active or Queued) by its owner's caps
    (SessionPolicy perOwner); None when every cap allows it. Besides the counts of other
    targets, the other sessions of this group that end this decision in that phase count."""
    if not group.governance.terms.capped:
        return None
    owner = session.owner
    here = sum(
        1
        for other in group.sessions
        if other is not session and not other.deleting and same_owner(other.owner, owner)
        and group.phase_of(other) == phase.value
    )
    return cap_breach(group.governance, owner, session.namespace, phase is Phase.ACTIVE, here)


def _may_take(group: _Group, session: SessionView, holder: SessionView) -> bool:
    """Whether ``session`` may end ``holder``'s hold on the target. Its own owner's
    session it may always take over. Another owner's only outside the holder's
    protection window, and only with the verb "preempt" on sessions in the namespace
    (RBAC). When that permission is not known yet, it is asked for (``group.asks``).
    When False, ``session`` has been decided Rejected."""
    if same_owner(session.owner, holder.owner):
        return True
    protection = group.governance.terms.protection()
    since = parse_time(group.holder_since)
    if protection is not None and since is not None and group.now < since + protection.value:
        until = format_time(since + protection.value)
        _reject(
            group, session, Reason.PROTECTED, f"{group.held_by()}, {protected(holder.owner, protection, until)}", holder
        )
        return False
    owner = session.owner
    permitted = group.governance.permits.get(owner.username) if owner is not None else False
    if permitted is None:
        assert owner is not None
        group.asks.add(owner)
        return False
    if not permitted:
        sentence = not_permitted(owner, holder.owner, session.namespace, PREEMPT_VERB)
        _reject(group, session, Reason.NOT_PERMITTED, f"{group.held_by()}, {sentence}", holder)
        return False
    # The taker's own caps still hold: it becomes Active.
    over = _over_cap(group, session, Phase.ACTIVE)
    if over is not None:
        _reject(group, session, Reason.OWNER_LIMIT, over, holder)
        return False
    return True


def _replace(
    group: _Group, old: SessionView, new: SessionView, reason: Reason, *, on_request: bool = False
) -> None:
    if reason is Reason.PROFILE_CHANGED:
        old_message = (
            f'replaced by session "{new.name}" on target "{new.target}": profile changed from '
            f'"{old.profile}" to "{new.profile}"'
        )
    else:
        old_message = f'replaced by session "{new.name}" (profile "{new.profile}") on target "{new.target}"'
    new_message = f'replaced session "{old.name}" (profile "{old.profile}") on target "{new.target}"'
    if on_request:
        old_message += ", activated on request (spec.activateRequest)"
        new_message += ", activated on request (spec.activateRequest)"
    old_fields = {"activeSince": group.holder_since, "replacedBy": new.name}
    _leave(group, old, Phase.REPLACED, reason, old_message, fields=old_fields, replaced_reason=reason)
    _activate(group, new, Reason.REPLACED_PREVIOUS, new_message, replaces=old.name)


def _retention(group: _Group, session: SessionView, outcome: _Outcome | None = None) -> None:
    """Terminal sessions are archived after archiveAfter; archived ones deleted after deleteAfter."""
    phase = outcome.phase.value if outcome else session.phase
    fields = outcome.fields if outcome else session.status
    if phase != Phase.ARCHIVED:
        archive_after = group.archive_after(session)
        ended = parse_time(fields.get("endedAt")) or group.now
        if archive_after is None or not group.deadline(ended + archive_after):
            return
        previous = outcome or _previous_outcome(session)
        new_fields = dict(previous.fields)
        new_fields["archivedAt"] = group.stamp
        new_fields.setdefault("endedAt", format_time(ended))
        archived = _Outcome(
            Phase.ARCHIVED,
            Reason.RETENTION,
            f"archived after {format_duration(archive_after)} in phase {phase} (spec.archiveAfter)",
            new_fields,
            replaced_reason=previous.replaced_reason,
            archived_reason=Reason.RETENTION,
        )
        group.set(session, archived)
        fields = new_fields
    delete_after = group.delete_after(session)
    archived_at = parse_time(fields.get("archivedAt")) or group.now
    if delete_after is not None and group.deadline(archived_at + delete_after):
        group.deletions.append(session)


# The phase each Ready reason is written with, for an outcome put back after a status edit.
_PHASE_OF_REASON: dict[Reason, Phase] = {
    Reason.TARGET_BUSY: Phase.REJECTED,
    Reason.DUPLICATE_PROFILE: Phase.REJECTED,
    Reason.NOT_PERMITTED: Phase.REJECTED,
    Reason.OWNER_LIMIT: Phase.REJECTED,
    Reason.PROTECTED: Phase.REJECTED,
    Reason.QUEUED: Phase.QUEUED,
    Reason.REPLACED: Phase.REPLACED,
    Reason.PROFILE_CHANGED: Phase.REPLACED,
    Reason.INACTIVE: Phase.INACTIVE,
    Reason.COMPLETED: Phase.COMPLETED,
    Reason.IDLE_TIMEOUT: Phase.ABANDONED,
    Reason.MAX_DURATION_EXCEEDED: Phase.ABANDONED,
    Reason.ARCHIVED: Phase.ARCHIVED,
    Reason.INVALID_SPEC: Phase.INVALID,
    Reason.POLICY_VIOLATION: Phase.INVALID,
}


def _ready(session: SessionView) -> dict[str, Any] | None:
    for condition in session.status.get("conditions") or ():
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition
    return None


def _shows_active_conditions(session: SessionView) -> bool:
    """Its conditions say Active (Ready=True), or it has none to say otherwise."""
    ready = _ready(session)
    return ready is None or ready.get("status") == "True"


def _recorded_outcome(session: SessionView) -> _Outcome:
    """The outcome a session's conditions record, when its phase was edited to Active.
    What cannot be read back (a reason edited too) is Rejected: it never takes a target."""
    ready = _ready(session) or {}
    try:
        reason = Reason(str(ready.get("reason")))
    except ValueError:
        reason = Reason.TARGET_BUSY
    phase = _PHASE_OF_REASON.get(reason, Phase.REJECTED)
    if reason is Reason.ARCHIVED:
        archived = next((c.get("reason") for c in session.status.get("conditions") or ()
                         if isinstance(c, dict) and c.get("type") == "Archived" and c.get("status") == "True"), None)
        archived_reason = Reason.RETENTION if archived == Reason.RETENTION.value else Reason.REQUESTED
    else:
        archived_reason = None
    previous = _previous_outcome(replace(session, status={**session.status, "phase": phase.value}))
    return _Outcome(
        phase, reason if reason is not Reason.ARCHIVED else archived_reason or Reason.REQUESTED,
        str(ready.get("message") or ""), previous.fields, replaced_reason=previous.replaced_reason,
        archived_reason=archived_reason, transition=False,
    )


def _previous_outcome(session: SessionView) -> _Outcome:
    """The outcome a decided session already shows (to archive it keeping its history)."""
    status = session.status
    keep = ("activeSince", "lastActivityTime", "holder", "replacedBy", "replaces", "endedAt")
    replaced = None
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Replaced" and condition.get("status") == "True":
            try:
                replaced = Reason(condition.get("reason"))
            except ValueError:
                replaced = Reason.REPLACED
    return _Outcome(
        Phase(session.phase or Phase.PENDING),
        Reason.ARCHIVED,
        "",
        {k: status.get(k) for k in keep if status.get(k) is not None},
        replaced_reason=replaced,
    )


def _queue_positions(group: _Group, queue: list[SessionView]) -> None:
    """Every waiting session's holder and position, as they are now.

    New entries, the head, and a former head are written in any case: that is part of
    the decision (a promotion writes the new head). Any other waiting session whose
    status names another holder or position is refreshed, head first, while the refresh
    budget lasts; when some are left, the target is due again after
    ``QUEUE_REFRESH_INTERVAL``, so that the queue converges at the budget's rate.
    """
    waiting = sorted(
        (s for s in queue if group.phase_of(s) == Phase.QUEUED), key=lambda s: s.order_key
    )
    holder = group.holder
    holder_uid = holder.uid if holder is not None else None
    budget = max(0, group.defaults.refresh_budget)
    left = 0
    for position, session in enumerate(waiting, start=1):
        outcome = group.outcomes.get(session.uid)
        recorded = session.status.get("queuePosition")
        recorded_holder = (session.status.get("holder") or {}).get("uid")
        is_new = outcome is not None and outcome.transition
        if not is_new:
            if recorded == position and recorded_holder == holder_uid:
                continue  # true already
            if position != 1 and recorded != 1:
                if budget == 0:
                    left += 1
                    continue
                budget -= 1
                group.refreshes += 1
        holder_info = _holder_info(holder, group.holder_since) if holder is not None else None
        if holder is not None:
            message = (
                f"{group.held_by()}; waiting at position {position} of its queue, "
                "to become Active when the holder is released"
            )
        else:
            message = f'waiting in the queue of target "{group.target}"; position {position}'
            over = _over_cap(group, session, Phase.ACTIVE)
            if over is not None:
                message += f"; passed over while {over.split('; ')[0]}"
        fields = {"holder": holder_info, "queuePosition": position}
        group.set(session, _Outcome(Phase.QUEUED, Reason.QUEUED, message, fields, transition=is_new))
    if left:
        group.due.append(group.now + QUEUE_REFRESH_INTERVAL)


def _claim_change(group: _Group, claim_holder: SessionView | None) -> None:
    final = group.holder
    claim = group.claim
    if final is None:
        if claim is not None:
            group.claim_change = ClaimChange("release", None, claim)
        return
    if claim is None:
        group.claim_change = ClaimChange("create", final, None)
    elif claim_holder is not final:
        group.claim_change = ClaimChange("transfer", final, claim)
    elif final.phase != Phase.ACTIVE or not final.decided:
        # Becomes Active (again) while already named in the claim: a conditional write to
        # the claim first, so that a concurrent transfer and this activation cannot both win.
        outcome = group.outcomes.get(final.uid)
        if outcome is not None and outcome.transition:
            group.claim_change = ClaimChange("confirm", final, claim)


def _stages(group: _Group, claim_holder: SessionView | None) -> tuple[tuple[Step, ...], ...]:
    """Turn outcomes into full status documents and put every write in its stage.

    The claim's current holder, if the claim moves away from it, is always written
    first ("demote"), whatever this plan believes its phase to be: the write is
    conditional on the version the plan saw, so if that view was stale (it became
    Active meanwhile, through another operator) the plan fails before the claim moves.
    """
    change = group.claim_change
    losing = (
        claim_holder
        if claim_holder is not None and change is not None and change.op in ("transfer", "release")
        else None
    )
    demote: list[Step] = []
    activate: list[Step] = []
    other: list[Step] = []
    for session in group.sessions:
        outcome = group.outcomes.get(session.uid)
        if outcome is None:
            continue
        status = _status(group, session, outcome)
        if _same_status(session.status, status):
            continue
        transition = None
        if outcome.transition:
            event = _EVENTS.get((outcome.phase, outcome.reason))
            transition = Transition(
                outcome=outcome.reason.value,
                event_reason=event[0] if event else None,
                event_type=event[1] if event else "Normal",
                message=outcome.message,
                first_decision=not session.phase or session.phase == Phase.PENDING,
            )
        was_active = session.phase == Phase.ACTIVE
        is_active = outcome.phase is Phase.ACTIVE
        if (was_active and not is_active) or session is losing:
            demote.append(StatusWrite(session, status, transition, "demote"))
        elif is_active and (not was_active or outcome.transition):
            activate.append(StatusWrite(session, status, transition, "activate"))
        else:
            other.append(StatusWrite(session, status, transition, "other"))
    if losing is not None and not any(isinstance(w, StatusWrite) and w.session is losing for w in demote):
        demote.append(Fence(losing))
    # Sessions from earlier versions carry a finalizer that nothing needs any more: the
    # claim already tells a returning operator that its holder is gone.
    deleting = {s.uid for s in group.deletions}
    other.extend(DropFinalizer(s) for s in group.sessions if s.has_finalizer and s.uid not in deleting)
    claim: list[Step] = [change] if change is not None else []
    retention: list[Step] = [DeleteSession(s) for s in group.deletions]
    stages = (demote, claim, activate, other, retention)
    return tuple(tuple(stage) for stage in stages if stage)


def _status(group: _Group, session: SessionView, outcome: _Outcome) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": outcome.phase.value,
        "observedGeneration": session.generation,
        "conditions": build_conditions(
            phase=outcome.phase,
            reason=outcome.reason,
            message=outcome.message,
            generation=session.generation,
            now=group.now,
            previous=session.status.get("conditions") or (),
            replaced_reason=outcome.replaced_reason,
            archived_reason=outcome.archived_reason,
        ),
    }
    for key, value in outcome.fields.items():
        if value is not None:
            status[key] = value
    # The last activation request acted on stays recorded, whatever the phase, so that a
    # later evaluation of the same spec does not act on it again.
    activated = group.consumed.get(session.uid) or session.status.get("activateRequest")
    if activated is not None:
        status["activateRequest"] = activated
    if not outcome.transition:
        # A refresh keeps timestamps the session already shows.
        for key in ("endedAt", "archivedAt"):
            if key in session.status and key in status:
                status[key] = session.status[key]
    return status


def _same_status(current: dict[str, Any], desired: dict[str, Any]) -> bool:
    keys = set(current) | set(desired)
    return all(current.get(k) == desired.get(k) for k in keys)
