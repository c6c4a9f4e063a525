"""Plain data of the Session API: names, enums, durations, and the view of one session.

Everything here is pure: no I/O, no kopf. ``SessionView.from_body`` turns an API object
into the small immutable record the arbiter decides on; the index stores these records,
so a target group of thousands of sessions costs little memory.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

GROUP = "session-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Session"
PLURAL = "sessions"

ANNOTATION_PREFIX = "session-operator.io"
ACTIVITY_ANNOTATION = f"{ANNOTATION_PREFIX}/last-activity"
TARGET_ANNOTATION = f"{ANNOTATION_PREFIX}/target"
HOLDER_UID_ANNOTATION = f"{ANNOTATION_PREFIX}/holder-uid"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "session-operator"
CLAIM_PREFIX = "session-target-"
# Earlier versions put this finalizer on sessions that held or waited for a claim. It
# bought nothing the claim does not: a claim whose holder is gone is released when the
# operator sees it, whether the holder went while it ran or while it was down. It cost a
# write and a watch event per session and blocked namespace deletion while no operator
# ran, so the operator now only removes it where it finds it.
LEGACY_FINALIZER = f"{ANNOTATION_PREFIX}/claim"


class Phase(StrEnum):
    PENDING = "Pending"
    ACTIVE = "Active"
    QUEUED = "Queued"
    REJECTED = "Rejected"
    REPLACED = "Replaced"
    INACTIVE = "Inactive"
    COMPLETED = "Completed"
    ABANDONED = "Abandoned"
    ARCHIVED = "Archived"
    INVALID = "Invalid"


TERMINAL_PHASES = frozenset(
    {Phase.REJECTED, Phase.REPLACED, Phase.COMPLETED, Phase.ABANDONED, Phase.ARCHIVED, Phase.INVALID}
)


class OnConflict(StrEnum):
    REJECT = "Reject"
    QUEUE = "Queue"
    REPLACE = "Replace"
    REPLACE_IF_PROFILE_CHANGED = "ReplaceIfProfileChanged"


class DesiredState(StrEnum):
    ACTIVE = "Active"
    INACTIVE = "Inactive"
    COMPLETED = "Completed"
    ARCHIVED = "Archived"


class InvalidSpecError(ValueError):
    """A spec value the schema let through but the operator cannot use; names the field."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field = field_path
        self.message = f"{field_path}: {message}"


# Go's time.Duration is an int64 of nanoseconds; a value beyond it is what a real Go
# client would also refuse, so it is the natural upper bound here.
MAX_DURATION = timedelta(microseconds=(2**63 - 1) // 1000)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}


def parse_duration(text: str, field_path: str) -> timedelta:
    """Parse a Go-style duration (``90s``, ``30m``, ``1h30m``, ``0s``) into a timedelta."""
    if not isinstance(text, str) or not text:
        raise InvalidSpecError(field_path, f"duration {text!r} is empty or not a string")
    if text == "0":
        return timedelta(0)
    pos = 0
    total_ns = 0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if match is None:
            raise InvalidSpecError(
                field_path, f'"{text}" is not a duration (use forms like 90s, 30m, 24h, 1h30m)'
            )
        number, unit = match.groups()
        # Integer arithmetic in nanoseconds, as Go does, so that overflow is exact.
        whole, _, frac = number.partition(".")
        scale = round(_UNIT_SECONDS[unit] * 1_000_000_000)
        total_ns += int(whole or "0") * scale
        if frac:
            total_ns += int(frac) * scale // (10 ** len(frac))
        if total_ns > 2**63 - 1:
            raise InvalidSpecError(
                field_path, f'duration "{text}" is out of range (at most {format_duration(MAX_DURATION)})'
            )
        pos = match.end()
    return timedelta(microseconds=total_ns // 1000)


def format_duration(value: timedelta) -> str:
    """Render a timedelta the way users write durations: ``1h30m``, ``90s`` -> ``1m30s``."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = ""
    if hours:
        out += f"{hours}h"
    if minutes:
        out += f"{minutes}m"
    if secs:
        out += f"{secs}s"
    return out


def rv_order(resource_version: str) -> int:
    """resourceVersions are opaque by contract, but etcd's (and the emulator's) are one
    increasing integer. Used only to prefer the fresher of two copies of one object; a
    wrong guess costs a 409 and a re-read, never a wrong write."""
    try:
        return int(resource_version)
    except (TypeError, ValueError):
        return -1


def claim_name(target: str) -> str:
    """The name of a target's claim Lease: stable, DNS-safe, whatever the target's characters."""
    return CLAIM_PREFIX + hashlib.sha256(target.encode("utf-8")).hexdigest()[:20]


def parse_time(value: Any) -> datetime | None:
    """Parse an RFC 3339 timestamp; ``None`` for anything missing or unreadable."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 with second resolution and ``Z``, as Kubernetes writes metav1.Time."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(value: datetime) -> str:
    """metav1.MicroTime: exactly six fractional digits, or the API server answers 400."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Owner:
    """The Kubernetes user who created a session (``spec.owner``), as admission recorded it."""

    username: str
    groups: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.username

    def to_api(self) -> dict[str, Any]:
        # groups always, even empty: the mutating webhook's patch is a merge, which would
        # otherwise keep groups a request wrote there itself.
        return {"username": self.username, "groups": list(self.groups)}


def parse_owner(raw: Any) -> Owner | None:
    """``spec.owner``; None when unset. Raises InvalidSpecError naming the field."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidSpecError("spec.owner", "must be an object with a username")
    username = raw.get("username")
    if not isinstance(username, str) or not username:
        raise InvalidSpecError("spec.owner.username", "is required and must be a non-empty string")
    groups = raw.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise InvalidSpecError("spec.owner.groups", "must be a list of strings")
    return Owner(username, tuple(groups))


def same_owner(a: Owner | None, b: Owner | None) -> bool:
    """Two sessions of one owner: the same username. Two sessions that record no owner
    (created before owners were recorded, or where no admission set one) are not told
    apart, as before owners existed; one with an owner and one without are different."""
    if a is None or b is None:
        return a is None and b is None
    return a.username == b.username


@dataclass(frozen=True, slots=True)
class Spec:
    """The validated spec. Durations are parsed; ``None`` means unset."""

    target: str
    profile: str = ""
    on_conflict: OnConflict = OnConflict.REJECT
    priority: int = 0
    state: DesiredState = DesiredState.ACTIVE
    idle_timeout: timedelta | None = None
    max_duration: timedelta | None = None
    archive_after: timedelta | None = None
    delete_after: timedelta | None = None
    activate_request: str | None = None  # a one-shot "make me Active now" token
    owner: Owner | None = None


_DURATION_FIELDS = (
    ("idleTimeout", "idle_timeout"),
    ("maxDuration", "max_duration"),
    ("archiveAfter", "archive_after"),
    ("deleteAfter", "delete_after"),
)


def parse_spec(raw: Any) -> Spec:
    """Validate what the schema cannot (or what a schema-less server let through).

    Raises InvalidSpecError naming the first offending field.
    """
    if not isinstance(raw, dict):
        raise InvalidSpecError("spec", "is missing or not an object")
    target = raw.get("target")
    if not isinstance(target, str) or not target:
        raise InvalidSpecError("spec.target", "is required and must be a non-empty string")
    if len(target) > 253:
        raise InvalidSpecError("spec.target", f"is {len(target)} characters long; at most 253 are allowed")
    profile = raw.get("profile", "")
    if profile is None:
        profile = ""
    if not isinstance(profile, str):
        raise InvalidSpecError("spec.profile", "must be a string")
    try:
        on_conflict = OnConflict(raw.get("onConflict") or OnConflict.REJECT)
    except ValueError:
        raise InvalidSpecError(
            "spec.onConflict",
            f'unsupported value "{raw.get("onConflict")}": use one of {", ".join(c.value for c in OnConflict)}',
        ) from None
    try:
        state = DesiredState(raw.get("state") or DesiredState.ACTIVE)
    except ValueError:
        raise InvalidSpecError(
            "spec.state",
            f'unsupported value "{raw.get("state")}": use one of {", ".join(s.value for s in DesiredState)}',
        ) from None
    priority = raw.get("priority", 0)
    if priority is None:
        priority = 0
    if isinstance(priority, bool) or not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
        raise InvalidSpecError("spec.priority", f"{priority!r} is not a 32-bit integer")
    activate_request = raw.get("activateRequest")
    if activate_request is not None and not isinstance(activate_request, str):
        raise InvalidSpecError("spec.activateRequest", "must be a string (for example an RFC 3339 time)")
    if activate_request is not None and len(activate_request) > 253:
        raise InvalidSpecError(
            "spec.activateRequest", f"is {len(activate_request)} characters long; at most 253 are allowed"
        )
    owner = parse_owner(raw.get("owner"))
    durations: dict[str, timedelta | None] = {}
    for api_name, attr in _DURATION_FIELDS:
        value = raw.get(api_name)
        durations[attr] = None if value in (None, "") else parse_duration(value, f"spec.{api_name}")
    return Spec(
        target=target,
        profile=profile,
        on_conflict=on_conflict,
        priority=priority,
        state=state,
        activate_request=activate_request or None,
        owner=owner,
        **durations,
    )


class ActivityObserver(Protocol):
    """Turns a session's activity annotation into the time it counts for (cache.ActivityClock)."""

    def observe(self, uid: str, raw: Any, now: datetime | None = None) -> datetime | None: ...


@dataclass(frozen=True, slots=True)
class SessionView:
    """What the arbiter needs of one session: identity, spec, and the status it shows."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int
    created: datetime
    target: str
    spec: Spec | None
    spec_error: str | None
    deleting: bool
    finalizers: tuple[str, ...]
    status: dict[str, Any] = field(default_factory=dict, hash=False, compare=True)
    last_activity: datetime | None = None

    @property
    def has_finalizer(self) -> bool:
        return LEGACY_FINALIZER in self.finalizers

    @property
    def phase(self) -> str | None:
        return self.status.get("phase")

    @property
    def decided(self) -> bool:
        """Decided for its current generation (rule 2: one evaluation per generation)."""
        return (
            self.status.get("observedGeneration") == self.generation
            and self.phase not in (None, Phase.PENDING)
        )

    @property
    def order_key(self) -> tuple[int, datetime, str]:
        """Queue order: higher priority first, then older, then name."""
        priority = self.spec.priority if self.spec is not None else 0
        return (-priority, self.created, self.name)

    @property
    def profile(self) -> str:
        return self.spec.profile if self.spec is not None else ""

    @property
    def owner(self) -> Owner | None:
        return self.spec.owner if self.spec is not None else None

    @property
    def activation(self) -> str | None:
        """The pending one-shot activation request: ``spec.activateRequest`` while
        ``spec.state`` is Active and the operator has not yet acted on that value
        (``status.activateRequest``); None otherwise."""
        spec = self.spec
        if spec is None or spec.activate_request is None or spec.state is not DesiredState.ACTIVE:
            return None
        if self.status.get("activateRequest") == spec.activate_request:
            return None
        return spec.activate_request

    @classmethod
    def from_body(cls, body: Any, activity: ActivityObserver | None = None, now: datetime | None = None) -> SessionView:
        metadata = body.get("metadata") or {}
        raw_spec = body.get("spec") or {}
        try:
            spec: Spec | None = parse_spec(raw_spec)
            spec_error = None
        except InvalidSpecError as e:
            spec, spec_error = None, e.message
        raw_target = raw_spec.get("target") if isinstance(raw_spec, dict) else None
        annotations = metadata.get("annotations") or {}
        return cls(
            namespace=metadata.get("namespace") or "",
            name=metadata.get("name") or "",
            uid=metadata.get("uid") or "",
            resource_version=str(metadata.get("resourceVersion") or ""),
            generation=int(metadata.get("generation") or 1),
            created=parse_time(metadata.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC),
            target=raw_target if isinstance(raw_target, str) else "",
            spec=spec,
            spec_error=spec_error,
            deleting=bool(metadata.get("deletionTimestamp")),
            finalizers=tuple(metadata.get("finalizers") or ()),
            status=dict(body.get("status") or {}),
            last_activity=(
                activity.observe(metadata.get("uid") or "", annotations.get(ACTIVITY_ANNOTATION), now)
                if activity is not None
                else parse_time(annotations.get(ACTIVITY_ANNOTATION))
            ),
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """A target's claim Lease as the arbiter sees it."""

    name: str
    holder: str | None
    holder_uid: str | None
    resource_version: str
    transitions: int = 0

    @classmethod
    def from_body(cls, body: Any) -> Claim:
        metadata = body.get("metadata") or {}
        spec = body.get("spec") or {}
        return cls(
            name=metadata.get("name") or "",
            holder=spec.get("holderIdentity") or None,
            holder_uid=(metadata.get("annotations") or {}).get(HOLDER_UID_ANNOTATION) or None,
            resource_version=str(metadata.get("resourceVersion") or ""),
            transitions=int(spec.get("leaseTransitions") or 0),
        )
