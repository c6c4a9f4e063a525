"""Condition types, reasons, and building ``status.conditions`` (pure).

Every decided session carries all six condition types, so dashboards and ``kubectl wait``
can rely on them. ``lastTransitionTime`` moves only when a condition's status flips.
Conditions that are False carry the session's phase as their reason (for example
``Stalled=False reason=Active``), which tells a reader why without another lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from .model import Phase, format_time

READY = "Ready"
CONFLICTED = "Conflicted"
REPLACED = "Replaced"
ARCHIVED = "Archived"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Reason(StrEnum):
    # Ready=True
    ACQUIRED = "Acquired"
    PROMOTED = "Promoted"
    REPLACED_PREVIOUS = "ReplacedPrevious"
    # Ready=False
    PENDING = "Pending"
    TARGET_BUSY = "TargetBusy"
    QUEUED = "Queued"
    DUPLICATE_PROFILE = "DuplicateProfile"
    REPLACED = "Replaced"
    INACTIVE = "Inactive"
    COMPLETED = "Completed"
    IDLE_TIMEOUT = "IdleTimeout"
    MAX_DURATION_EXCEEDED = "MaxDurationExceeded"
    ARCHIVED = "Archived"
    INVALID_SPEC = "InvalidSpec"
    # Governance (SessionPolicy, the preempt permission)
    POLICY_VIOLATION = "PolicyViolation"  # Invalid: the spec breaks a static rule
    NOT_PERMITTED = "NotPermitted"  # Rejected: taking another owner's target needs "preempt"
    OWNER_LIMIT = "OwnerLimit"  # Rejected: the owner is at a per-owner cap
    PROTECTED = "Protected"  # Rejected: the holder is inside its protection window
    # Replaced=True
    PROFILE_CHANGED = "ProfileChanged"
    # Archived=True
    REQUESTED = "Requested"
    RETENTION = "Retention"


def build_conditions(
    *,
    phase: Phase,
    reason: Reason,
    message: str,
    generation: int,
    now: datetime,
    previous: Iterable[Mapping[str, Any]] = (),
    replaced_reason: Reason | None = None,
    archived_reason: Reason | None = None,
) -> list[dict[str, Any]]:
    """The six conditions for a session in ``phase`` whose Ready reason is ``reason``.

    ``replaced_reason`` is set while the session shows that it was displaced (phase
    Replaced, or Archived after it); ``archived_reason`` when phase is Archived.
    """
    fallback = phase.value
    # Ready says Archived; the Archived condition says why (Requested or Retention).
    ready_reason = Reason.ARCHIVED if phase is Phase.ARCHIVED else reason
    wanted: list[tuple[str, bool, str, str]] = [
        (READY, phase is Phase.ACTIVE, ready_reason.value, message),
        (
            CONFLICTED,
            phase in (Phase.QUEUED, Phase.REJECTED),
            reason.value if phase in (Phase.QUEUED, Phase.REJECTED) else fallback,
            message if phase in (Phase.QUEUED, Phase.REJECTED) else "",
        ),
        (
            REPLACED,
            replaced_reason is not None,
            replaced_reason.value if replaced_reason is not None else fallback,
            message if phase is Phase.REPLACED else "",
        ),
        (
            ARCHIVED,
            phase is Phase.ARCHIVED,
            archived_reason.value if archived_reason is not None and phase is Phase.ARCHIVED else fallback,
            message if phase is Phase.ARCHIVED else "",
        ),
        (
            RECONCILING,
            phase in (Phase.PENDING, Phase.QUEUED),
            reason.value if phase in (Phase.PENDING, Phase.QUEUED) else fallback,
            message if phase in (Phase.PENDING, Phase.QUEUED) else "",
        ),
        (
            STALLED,
            phase in (Phase.REJECTED, Phase.INVALID),
            reason.value if phase in (Phase.REJECTED, Phase.INVALID) else fallback,
            message if phase in (Phase.REJECTED, Phase.INVALID) else "",
        ),
    ]
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    stamp = format_time(now)
    conditions = []
    for type_, is_true, cond_reason, cond_message in wanted:
        status = "True" if is_true else "False"
        old = before.get(type_)
        transition = old.get("lastTransitionTime") if old and old.get("status") == status else None
        conditions.append(
            {
                "type": type_,
                "status": status,
                "reason": cond_reason,
                "message": cond_message,
                "lastTransitionTime": transition or stamp,
                "observedGeneration": generation,
            }
        )
    return conditions

