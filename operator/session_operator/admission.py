"""Advisory admission: what a new Session would meet on its target, told at CREATE (pure).

The validating webhook (served through kopf, ``kopf_adapter.py``) asks ``review_create``
with the new Session's body and what this replica's cache holds of its target group and
claim. The answer gives a kubectl user the outcome at apply time:

* the target is held and the session's policy would reject it (``Reject``, or
  ``ReplaceIfProfileChanged`` with the holder's profile): denied, HTTP 409, with a message
  that names the holder (name, profile, active since), the count of waiting sessions, and
  what to do instead;
* ``Queue``: allowed, with a warning giving the expected queue position;
* ``Replace``, ``ReplaceIfProfileChanged`` with another profile, or a non-empty
  ``spec.activateRequest``: allowed, with a warning naming the session to be replaced;
* a spec the schema lets through but the operator cannot use (a duration too large):
  denied, HTTP 422, naming the field;
* governance (HTTP 403, each naming the rule): a ``spec.owner`` that is not the requesting
  user; a static rule of a SessionPolicy broken; the owner at a per-owner cap; taking
  another owner's target inside the holder's protection window, or without the verb
  ``preempt`` on sessions. The permission needs the API server's answer: the review then
  says whom to ask (``Admission.asks``) and the caller reviews again with the answer;
* anything else (a free target, a session created Inactive): allowed, nothing to say.

``review_update`` answers an UPDATE the same way, for what an update can change: a new
``spec.activateRequest`` (it takes the target like Replace), and the static rules of the
fields it changes (so an old session can still be completed after a stricter policy).

It is advisory: the webhook's ``failurePolicy`` is ``Ignore``, and the operator's decision
stays the authority. A cache can be a few milliseconds behind, so two sessions created
at once may both be allowed; the operator then decides between them by policy, as always.

No I/O and no clock: the caller passes ``now`` (the creation time of a session whose body
carries none yet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, assert_never

from . import target
from .model import (
    Claim,
    DesiredState,
    InvalidSpecError,
    OnConflict,
    Owner,
    SessionView,
    Spec,
    format_time,
    parse_spec,
    parse_time,
    same_owner,
)
from .policy import NO_GOVERNANCE, PREEMPT_VERB, Governance, cap_breach, not_permitted, protected, violation

OK = 200
FORBIDDEN = 403  # a governance rule: the owner, a SessionPolicy, the preempt permission
CONFLICT = 409  # the target is held and this session would be rejected
UNPROCESSABLE = 422  # the spec is one the operator would mark Invalid


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to one admission request: ``code`` and ``message`` matter when denied;
    ``warnings`` reach the client as ``Warning`` headers (kubectl prints them)."""

    allowed: bool
    code: int = OK
    message: str = ""
    warnings: tuple[str, ...] = ()
    # The answer depends on whether this owner may preempt: ask, and review again with it.
    asks: Owner | None = None


ALLOW = Admission(allowed=True)


@dataclass(frozen=True, slots=True)
class Request:
    """One admission request, as much of it as the answer depends on."""

    operation: str  # CREATE or UPDATE
    body: Mapping[str, Any]
    old: Mapping[str, Any] | None = None
    user: Owner | None = None  # request.userInfo


def user_of(userinfo: Any) -> Owner | None:
    """The requesting user (``request.userInfo``) as an owner; None when it has no name."""
    if not isinstance(userinfo, Mapping) or not isinstance(userinfo.get("username"), str):
        return None
    if not userinfo["username"]:
        return None
    groups = userinfo.get("groups") or []
    return Owner(userinfo["username"], tuple(g for g in groups if isinstance(g, str)))


def owner_to_record(request: Request) -> dict[str, Any] | None:
    """What the mutating webhook writes to ``spec.owner``, or None to leave it: at CREATE
    the requesting user (whatever the body says: the owner is recorded, never claimed);
    at UPDATE the owner the session already has, where the update leaves it out (a
    ``kubectl replace`` of a file without it), so that the immutability rule holds."""
    spec = request.body.get("spec")
    current = spec.get("owner") if isinstance(spec, Mapping) else None
    if request.operation == "CREATE":
        recorded = request.user.to_api() if request.user is not None else None
    elif request.operation == "UPDATE" and request.old is not None:
        old_spec = request.old.get("spec")
        recorded = old_spec.get("owner") if isinstance(old_spec, Mapping) else None
    else:
        return None
    if recorded is None or recorded == current:
        return None
    return dict(recorded)


def unchecked(why: str) -> Admission:
    """Allowed, saying that nothing was checked and why (the webhook is advisory: when it
    cannot tell, it lets the operator decide)."""
    return Admission(allowed=True, warnings=(f"session-operator could not check the target at admission: {why}; "
                                             "the operator decides when it sees the session",))


def activation_requested(raw_spec: Any) -> bool:
    """``spec.activateRequest`` present and non-empty: the session replaces the holder
    whatever its ``onConflict`` says."""
    if not isinstance(raw_spec, Mapping):
        return False
    request = raw_spec.get("activateRequest")
    return request is not None and request not in ("", {}, [])


def review_create(
    body: Mapping[str, Any],
    sessions: Iterable[SessionView],
    claim: Claim | None,
    now: datetime,
    governance: Governance = NO_GOVERNANCE,
    user: Owner | None = None,
) -> Admission:
    """The answer to the CREATE of ``body``, given the sessions of its (namespace, target)
    and the target's claim as this replica sees them; ``governance`` as the operator would
    decide with it, and ``user`` the requesting user (request.userInfo)."""
    raw_spec = body.get("spec")
    try:
        spec = parse_spec(raw_spec)
    except InvalidSpecError as e:
        return Admission(allowed=False, code=UNPROCESSABLE, message=f"{e.message}; the session would be Invalid")
    forged = _forged_owner(spec.owner, user)
    if forged is not None:
        return _forbidden(forged)
    if spec.state is not DesiredState.ACTIVE:
        return ALLOW  # it does not compete for the target
    activation = activation_requested(raw_spec)
    broken = violation(governance.terms.policies, spec, activation=activation)
    if broken is not None:
        return _forbidden(broken)
    new = SessionView.from_body(body)
    if not (body.get("metadata") or {}).get("creationTimestamp"):
        new = replace(new, created=now)
    group = list(sessions)
    holder = target.holder(group, claim)
    if holder is None or holder.name == new.name:
        # A free target; or a session of the same name, which the API server refuses
        # (AlreadyExists) after admission, with the right message.
        over = cap_breach(governance, spec.owner, new.namespace, True, 0)
        if over is None:
            return ALLOW
        if spec.on_conflict is OnConflict.QUEUE and not activation:
            return _enqueue(governance, new, group, None, f"it waits until then: {over}")
        return _forbidden(f"{over}; the session would be Rejected (OwnerLimit)")
    waiting = target.queue(group)
    if activation:
        return _take(new, holder, governance, now, "spec.activateRequest is set")
    # One branch per policy; mypy fails on a policy added and not answered here.
    policy = spec.on_conflict
    match policy:
        case OnConflict.REPLACE:
            return _take(new, holder, governance, now, None)
        case OnConflict.REPLACE_IF_PROFILE_CHANGED:
            if holder.profile != spec.profile:
                return _take(
                    new, holder, governance, now, f'profile changes from "{holder.profile}" to "{spec.profile}"'
                )
            return Admission(
                allowed=False,
                code=CONFLICT,
                message=(
                    f"{_held_by(spec, holder)}, the same profile as this session, {_waiting(waiting)}; "
                    f'use session "{holder.name}" — it runs this profile (or change spec.profile, '
                    "or set spec.onConflict to Replace)"
                ),
            )
        case OnConflict.QUEUE:
            return _enqueue(
                governance, new, group, holder,
                f'will queue behind "{holder.name}" (profile "{holder.profile}", active since '
                f"{_since(holder)}) at expected position {target.position(waiting, new)} of {len(waiting) + 1}",
            )
        case OnConflict.REJECT:
            return Admission(
                allowed=False,
                code=CONFLICT,
                message=(
                    f"{_held_by(spec, holder)}, {_waiting(waiting)}; archive it, "
                    "or set spec.onConflict to Queue or Replace"
                ),
            )
        case _:
            assert_never(policy)


# The spec fields whose static rules an update is checked against when it changes them.
_RULED = ("onConflict", "priority", "idleTimeout", "maxDuration", "activateRequest", "state")


def review_update(
    old: Mapping[str, Any],
    body: Mapping[str, Any],
    sessions: Iterable[SessionView],
    claim: Claim | None,
    now: datetime,
    governance: Governance = NO_GOVERNANCE,
) -> Admission:
    """The answer to an UPDATE of a session from ``old`` to ``body``."""
    raw_old, raw_new = old.get("spec"), body.get("spec")
    if not isinstance(raw_new, Mapping) or not isinstance(raw_old, Mapping):
        return ALLOW
    if all(raw_old.get(k) == raw_new.get(k) for k in _RULED):
        return ALLOW  # metadata, status, a profile: nothing governed changes
    try:
        spec = parse_spec(raw_new)
    except InvalidSpecError as e:
        return Admission(allowed=False, code=UNPROCESSABLE, message=f"{e.message}; the session would be Invalid")
    if spec.state is not DesiredState.ACTIVE:
        return ALLOW  # leaving the target is always allowed
    activation = activation_requested(raw_new) and raw_new.get("activateRequest") != raw_old.get("activateRequest")
    changed = {k for k in _RULED if raw_old.get(k) != raw_new.get(k)}
    broken = violation(governance.terms.policies, spec, activation=activation, only=changed)
    if broken is not None:
        return _forbidden(broken)
    if not activation:
        return ALLOW
    session = SessionView.from_body(body)
    holder = target.holder(list(sessions), claim)
    if holder is None or holder.name == session.name:
        return ALLOW
    return _take(session, holder, governance, now, "spec.activateRequest is set")


def _forbidden(message: str) -> Admission:
    return Admission(allowed=False, code=FORBIDDEN, message=message)


def _forged_owner(owner: Owner | None, user: Owner | None) -> str | None:
    if owner is None or user is None:
        return None
    if owner.username != user.username:
        return (
            f'spec.owner names user "{owner.username}", but the request comes from user "{user.username}": '
            "leave spec.owner out; it is recorded at admission"
        )
    extra = sorted(set(owner.groups) - set(user.groups))
    if extra:
        return (
            f"spec.owner.groups names groups the requesting user is not in ({', '.join(extra)}): "
            "leave spec.owner out; it is recorded at admission"
        )
    return None


def _enqueue(
    governance: Governance, new: SessionView, group: list[SessionView], holder: SessionView | None, warning: str
) -> Admission:
    here = sum(1 for s in group if s.phase == "Queued" and not s.deleting and same_owner(s.owner, new.owner))
    over = cap_breach(governance, new.owner, new.namespace, False, here)
    if over is not None:
        return _forbidden(f"{over}; the session would be Rejected (OwnerLimit)")
    return Admission(allowed=True, warnings=(warning,))


def _take(new: SessionView, holder: SessionView, governance: Governance, now: datetime, why: str | None) -> Admission:
    """``new`` would end ``holder``'s hold: allowed for the holder's own owner; for
    another owner, outside the protection window and with the preempt permission."""
    if same_owner(new.owner, holder.owner):
        return _will_replace(holder, why)
    held = target.held_by(new.target, holder, holder.status.get("activeSince"))
    window = governance.terms.protection()
    since = parse_time(holder.status.get("activeSince"))
    if window is not None and since is not None and now < since + window.value:
        return _forbidden(f"{held}, {protected(holder.owner, window, format_time(since + window.value))}")
    owner = new.owner
    permitted = governance.permits.get(owner.username) if owner is not None else False
    if permitted is None:
        assert owner is not None
        return Admission(allowed=True, asks=owner)
    if not permitted:
        return _forbidden(f"{held}, {not_permitted(owner, holder.owner, new.namespace, PREEMPT_VERB)}")
    over = cap_breach(governance, new.owner, new.namespace, True, 0)
    if over is not None:
        return _forbidden(f"{over}; the session would be Rejected (OwnerLimit)")
    return _will_replace(holder, why)


def _since(holder: SessionView) -> str:
    return str(holder.status.get("activeSince") or "an unknown time")


def _held_by(spec: Spec, holder: SessionView) -> str:
    return target.held_by(spec.target, holder, holder.status.get("activeSince"))


def _waiting(waiting: list[SessionView]) -> str:
    if not waiting:
        return "with no session waiting"
    return f"with {len(waiting)} session{'s' if len(waiting) != 1 else ''} waiting"


def _will_replace(holder: SessionView, why: str | None) -> Admission:
    detail = why or f'profile "{holder.profile}", active since {_since(holder)}'
    return Admission(allowed=True, warnings=(f'will replace "{holder.name}" ({detail})',))
