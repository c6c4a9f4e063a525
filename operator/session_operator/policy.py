"""SessionPolicy: the terms the cluster's owners set for sessions (pure).

A ``Policy`` is one SessionPolicy as the operator reads it. It selects sessions by
namespace and target prefix; every policy that selects a session applies to it:

* static rules a session's spec alone shows (``violation``): the onConflict values
  allowed (an activation request counts as Replace), the priority range, the largest
  idleTimeout and maxDuration. A session that breaks one is decided Invalid, reason
  PolicyViolation; the chart's ValidatingAdmissionPolicy refuses it at admission;
* defaults for idleTimeout and maxDuration, from the first selecting policy by name
  that has one (``Terms.idle_default``), fixed in ``status.limits`` when decided;
* per-owner caps on Active and Queued sessions in a namespace, each counted over the
  sessions that policy selects (the strictest wins: every cap must hold);
* a protection window: how long a holder keeps its target against other owners'
  Replace, the longest of the selecting policies'.

No I/O. ``Policy.from_body`` raises ``InvalidPolicyError`` naming the field for a policy
the schema let through but the operator cannot use; such a policy is reported and
ignored, and the others still apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from .model import (
    GROUP,
    VERSION,
    InvalidSpecError,
    OnConflict,
    Owner,
    Spec,
    format_duration,
    parse_duration,
)

# The permission that taking a target from another owner's session needs (RBAC): a
# verb of its own on sessions, which no built-in role grants unless told to.
PREEMPT_VERB = "preempt"

KIND = "SessionPolicy"
API_VERSION = f"{GROUP}/{VERSION}"


class InvalidPolicyError(ValueError):
    def __init__(self, name: str, field_path: str, message: str) -> None:
        super().__init__(f'SessionPolicy "{name}": {field_path}: {message}')
        self.field = field_path


@dataclass(frozen=True, slots=True)
class Limit:
    """A duration field's default and maximum; ``None``: not set."""

    default: timedelta | None = None
    max: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    namespaces: frozenset[str] = frozenset()
    target_prefixes: tuple[str, ...] = ()
    allowed_on_conflict: frozenset[OnConflict] | None = None
    priority_min: int | None = None
    priority_max: int | None = None
    idle_timeout: Limit = field(default_factory=Limit)
    max_duration: Limit = field(default_factory=Limit)
    max_active: int | None = None
    max_queued: int | None = None
    protection_window: timedelta | None = None

    def selects(self, namespace: str, target: str) -> bool:
        if self.namespaces and namespace not in self.namespaces:
            return False
        return not self.target_prefixes or any(target.startswith(p) for p in self.target_prefixes)

    @property
    def capped(self) -> bool:
        return self.max_active is not None or self.max_queued is not None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Policy:
        name = str((body.get("metadata") or {}).get("name") or "")
        spec = body.get("spec")
        if not isinstance(spec, Mapping):
            raise InvalidPolicyError(name, "spec", "is missing or not an object")

        def strings(key: str) -> list[str]:
            value = spec.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InvalidPolicyError(name, f"spec.{key}", "must be a list of strings")
            return value

        allowed: frozenset[OnConflict] | None = None
        if spec.get("allowedOnConflict") is not None:
            try:
                allowed = frozenset(OnConflict(v) for v in strings("allowedOnConflict"))
            except ValueError as e:
                raise InvalidPolicyError(name, "spec.allowedOnConflict", str(e)) from None

        def integer(path: str, value: Any) -> int | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidPolicyError(name, path, f"{value!r} is not an integer")
            return value

        priority = _object(name, spec, "priority")
        pmin = integer("spec.priority.min", priority.get("min"))
        pmax = integer("spec.priority.max", priority.get("max"))
        if pmin is not None and pmax is not None and pmin > pmax:
            raise InvalidPolicyError(name, "spec.priority", f"min {pmin} is greater than max {pmax}")
        per_owner = _object(name, spec, "perOwner")
        caps = {}
        for key in ("maxActive", "maxQueued"):
            value = integer(f"spec.perOwner.{key}", per_owner.get(key))
            if value is not None and value < 0:
                raise InvalidPolicyError(name, f"spec.perOwner.{key}", f"{value} is negative")
            caps[key] = value
        return cls(
            name=name,
            namespaces=frozenset(strings("namespaces")),
            target_prefixes=tuple(strings("targetPrefixes")),
            allowed_on_conflict=allowed,
            priority_min=pmin,
            priority_max=pmax,
            idle_timeout=_limit(name, spec, "idleTimeout"),
            max_duration=_limit(name, spec, "maxDuration"),
            max_active=caps["maxActive"],
            max_queued=caps["maxQueued"],
            protection_window=_duration(name, spec.get("protectionWindow"), "spec.protectionWindow"),
        )


def _object(name: str, spec: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = spec.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidPolicyError(name, f"spec.{key}", "must be an object")
    return value


def _duration(name: str, value: Any, path: str) -> timedelta | None:
    if value in (None, ""):
        return None
    try:
        return parse_duration(value, path)
    except InvalidSpecError as e:
        raise InvalidPolicyError(name, path, e.message.removeprefix(f"{path}: ")) from None


def _limit(name: str, spec: Mapping[str, Any], key: str) -> Limit:
    raw = _object(name, spec, key)
    limit = Limit(
        default=_duration(name, raw.get("default"), f"spec.{key}.default"),
        max=_duration(name, raw.get("max"), f"spec.{key}.max"),
    )
    if limit.default is not None and limit.max is not None and limit.default > limit.max:
        raise InvalidPolicyError(
            name, f"spec.{key}", f"default {format_duration(limit.default)} is longer than max "
            f"{format_duration(limit.max)}"
        )
    return limit


def selecting(policies: Iterable[Policy], namespace: str, target: str) -> tuple[Policy, ...]:
    """The policies that select (namespace, target), by name."""
    return tuple(sorted((p for p in policies if p.selects(namespace, target)), key=lambda p: p.name))


def violation(
    policies: Iterable[Policy], spec: Spec, *, activation: bool = False, only: Iterable[str] | None = None
) -> str | None:
    """The first static rule ``spec`` breaks, as a sentence naming the policy and the
    rule; None when it keeps them all. ``activation``: it carries a pending activation
    request, which counts as onConflict Replace. ``only``: check only the rules of these
    spec fields (an update is held to the rules of what it changes)."""
    on_conflict = OnConflict.REPLACE if activation else spec.on_conflict
    fields = None if only is None else set(only)

    def checks(api_name: str) -> bool:
        return fields is None or api_name in fields

    for p in policies:
        quoted = f'SessionPolicy "{p.name}"'
        if (
            p.allowed_on_conflict is not None
            and (activation or checks("onConflict"))
            and on_conflict not in p.allowed_on_conflict
        ):
            allowed = ", ".join(sorted(p.allowed_on_conflict)) or "none"
            what = "spec.activateRequest (a Replace)" if activation else f'spec.onConflict "{on_conflict}"'
            return f"{quoted} does not allow {what}; allowed: {allowed}"
        low, high = p.priority_min, p.priority_max
        outside = (low is not None and spec.priority < low) or (high is not None and spec.priority > high)
        if checks("priority") and outside:
            return f"{quoted} allows spec.priority from {_range(p)}; this session asks {spec.priority}"
        for api_name, value, limit in (
            ("idleTimeout", spec.idle_timeout, p.idle_timeout),
            ("maxDuration", spec.max_duration, p.max_duration),
        ):
            if limit.max is None or not checks(api_name):
                continue
            if value is None and limit.default is None:
                return (
                    f"{quoted} requires spec.{api_name} (at most {format_duration(limit.max)}); "
                    "this session leaves it unset"
                )
            if value is not None and value > limit.max:
                return (
                    f"{quoted} allows spec.{api_name} up to {format_duration(limit.max)}; "
                    f"this session asks {format_duration(value)}"
                )
    return None


def _range(p: Policy) -> str:
    low = str(p.priority_min) if p.priority_min is not None else "-2147483648"
    high = str(p.priority_max) if p.priority_max is not None else "2147483647"
    return f"{low} to {high}"


@dataclass(frozen=True, slots=True)
class Default:
    value: timedelta
    policy: str


@dataclass(frozen=True, slots=True)
class Terms:
    """What every policy selecting one target says, combined."""

    policies: tuple[Policy, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.policies)

    @property
    def capped(self) -> tuple[Policy, ...]:
        return tuple(p for p in self.policies if p.capped)

    def idle_default(self) -> Default | None:
        return next((Default(p.idle_timeout.default, p.name) for p in self.policies
                     if p.idle_timeout.default is not None), None)

    def duration_default(self) -> Default | None:
        return next((Default(p.max_duration.default, p.name) for p in self.policies
                     if p.max_duration.default is not None), None)

    def protection(self) -> Default | None:
        """The longest protection window, and the policy that sets it."""
        windows = [Default(p.protection_window, p.name) for p in self.policies if p.protection_window]
        return max(windows, key=lambda d: d.value) if windows else None


NO_TERMS = Terms()


@dataclass(frozen=True, slots=True)
class Counts:
    """One owner's sessions that one policy selects in a namespace, on other targets."""

    active: int = 0
    queued: int = 0


NO_COUNTS = Counts()


@dataclass(frozen=True, slots=True)
class Governance:
    """What one decision needs to know beyond its target group: the policies that select
    the target, how many sessions each capped policy already counts for each owner of
    the group elsewhere, and which owners may preempt in the namespace (an owner missing
    from ``permits`` has not been asked yet)."""

    terms: Terms = NO_TERMS
    elsewhere: Mapping[tuple[str, str], Counts] = field(default_factory=dict)
    permits: Mapping[str, bool] = field(default_factory=dict)


NO_GOVERNANCE = Governance()


# --- the sentences, shared by the decision and the admission webhook -----------------------


def owner_name(owner: Owner | None) -> str:
    return f'user "{owner.username}"' if owner is not None else "no recorded owner"


def cap_breach(governance: Governance, owner: Owner | None, namespace: str, active: bool, here: int) -> str | None:
    """Why one more Active (``active``) or Queued session of ``owner`` would break a
    per-owner cap, as a sentence; None when every cap allows it. ``here``: the owner's
    sessions in that phase on the target being decided (the counts cover the others)."""
    username = owner.username if owner is not None else ""
    for p in governance.terms.capped:
        cap = p.max_active if active else p.max_queued
        if cap is None:
            continue
        counts = governance.elsewhere.get((p.name, username), NO_COUNTS)
        count = (counts.active if active else counts.queued) + here
        if count + 1 > cap:
            phase, field_name = ("Active", "maxActive") if active else ("Queued", "maxQueued")
            subject = (
                f'user "{owner.username}" is' if owner is not None else "the sessions with no recorded owner are"
            )
            return (
                f'{subject} at the cap of SessionPolicy "{p.name}" (perOwner.{field_name}: {cap}): {count} '
                f'{phase} session{"s" if count != 1 else ""} that it selects in namespace "{namespace}"; '
                "end one of them first"
            )
    return None


def protected(holder_owner: Owner | None, window: Default, until: str) -> str:
    return (
        f"of {owner_name(holder_owner)}, which SessionPolicy \"{window.policy}\" protects for "
        f"{format_duration(window.value)} after it became Active (protectionWindow): another owner may "
        f"not replace it until {until}"
    )


def not_permitted(taker: Owner | None, holder_owner: Owner | None, namespace: str, verb: str) -> str:
    who = f'user "{taker.username}"' if taker is not None else "a session with no recorded owner (spec.owner)"
    return (
        f"of {owner_name(holder_owner)}; {who} may not take it: ending another owner's session needs "
        f'the verb "{verb}" on sessions in namespace "{namespace}" (RBAC), or the holder\'s owner can release it'
    )
