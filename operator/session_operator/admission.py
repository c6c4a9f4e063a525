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
* anything else (a free target, a session created Inactive): allowed, nothing to say.

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
from .model import Claim, DesiredState, InvalidSpecError, OnConflict, SessionView, Spec, parse_spec

OK = 200
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


ALLOW = Admission(allowed=True)


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
) -> Admission:
    """The answer to the CREATE of ``body``, given the sessions of its (namespace, target)
    and the target's claim as this replica sees them."""
    raw_spec = body.get("spec")
    try:
        spec = parse_spec(raw_spec)
    except InvalidSpecError as e:
        return Admission(allowed=False, code=UNPROCESSABLE, message=f"{e.message}; the session would be Invalid")
    if spec.state is not DesiredState.ACTIVE:
        return ALLOW  # it does not compete for the target
    new = SessionView.from_body(body)
    if not (body.get("metadata") or {}).get("creationTimestamp"):
        new = replace(new, created=now)
    group = list(sessions)
    holder = target.holder(group, claim)
    if holder is None or holder.name == new.name:
        # A free target; or a session of the same name, which the API server refuses
        # (AlreadyExists) after admission, with the right message.
        return ALLOW
    waiting = target.queue(group)
    if activation_requested(raw_spec):
        return _will_replace(holder, "spec.activateRequest is set")
    # One branch per policy; mypy fails on a policy added and not answered here.
    policy = spec.on_conflict
    match policy:
        case OnConflict.REPLACE:
            return _will_replace(holder, None)
        case OnConflict.REPLACE_IF_PROFILE_CHANGED:
            if holder.profile != spec.profile:
                return _will_replace(holder, f'profile changes from "{holder.profile}" to "{spec.profile}"')
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
            return Admission(
                allowed=True,
                warnings=(
                    f'will queue behind "{holder.name}" (profile "{holder.profile}", active since '
                    f"{_since(holder)}) at expected position {target.position(waiting, new)} of {len(waiting) + 1}",
                ),
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
