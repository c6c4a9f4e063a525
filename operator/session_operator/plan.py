"""The write protocol's vocabulary: what a decision asks to be written, as data (pure).

The arbiter (``arbiter.decide``) returns a ``Plan``; the executor (``executor.py``) runs
it. Neither needs the other's internals: this module is all they share. A ``Plan`` is a
sequence of stages; the order of stages is the safety protocol (demote, claim, activate,
the rest, retention), described on ``Plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from .model import Claim, Owner, SessionView


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of phase (or of reason within it) worth an Event and a metric."""

    outcome: str  # the Ready reason, e.g. Acquired, Queued, TargetBusy
    event_reason: str | None
    event_type: str
    message: str
    first_decision: bool  # the session had no phase before: observe decision latency


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """Write ``status`` to a session, conditional on the resourceVersion it was decided on."""

    session: SessionView
    status: dict[str, Any] = field(hash=False)
    transition: Transition | None
    # "demote": leaves Active (or is the claim holder losing the claim), written before
    # the claim changes; "activate": becomes Active, written after; "other": anything else.
    kind: Literal["demote", "activate", "other"]


@dataclass(frozen=True, slots=True)
class Fence:
    """A status write with no change, conditional on ``session``'s resourceVersion: "the
    claim holder is still as this plan saw it". Comes before the claim moves away from a
    holder that has no status write of its own in the plan."""

    session: SessionView


@dataclass(frozen=True, slots=True)
class ClaimChange:
    op: Literal["create", "transfer", "confirm", "release"]
    holder: SessionView | None  # None for release
    claim: Claim | None  # the claim the change is conditional on (None for create)


@dataclass(frozen=True, slots=True)
class DropFinalizer:
    """Remove the finalizer that earlier versions put on sessions (see model.LEGACY_FINALIZER)."""

    session: SessionView


@dataclass(frozen=True, slots=True)
class DeleteSession:
    """Retention: delete exactly this object (uid and resourceVersion preconditions)."""

    session: SessionView


Step = StatusWrite | Fence | ClaimChange | DropFinalizer | DeleteSession


@dataclass(frozen=True, slots=True)
class Plan:
    """What to write, as data: ``stages`` run one after the other, in order; the steps of
    one stage are independent of each other and may run in any order, or at once.

    The order of stages is the safety protocol (rule 1 at every instant):

    1. demotions: sessions leaving Active, and the claim holder the claim moves away
       from (its demotion, or a ``Fence``), each conditional on the version decided on;
    2. the one claim change (create / transfer / confirm / release), conditional;
    3. the activation, if any;
    4. every other status write, and legacy finalizer removals;
    5. retention deletions.

    A step that loses its race (409) ends the plan: the caller re-reads and decides again.
    """

    stages: tuple[tuple[Step, ...], ...] = ()
    next_due: datetime | None = None
    refreshes: int = 0  # status writes of the queue-truth refresh (within the refresh budget)
    # Owners whose permission to preempt the decision needs and was not given: the plan
    # is empty; the caller asks the API server (a LocalSubjectAccessReview) and decides again.
    asks: frozenset[Owner] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.stages

    @property
    def steps(self) -> list[Step]:
        return [step for stage in self.stages for step in stage]

    @property
    def writes(self) -> list[StatusWrite]:
        return [step for step in self.steps if isinstance(step, StatusWrite)]

    @property
    def claim_change(self) -> ClaimChange | None:
        return next((step for step in self.steps if isinstance(step, ClaimChange)), None)

    @property
    def fence(self) -> SessionView | None:
        return next((step.session for step in self.steps if isinstance(step, Fence)), None)

    @property
    def delete(self) -> list[SessionView]:
        return [step.session for step in self.steps if isinstance(step, DeleteSession)]

    @property
    def drop_finalizer(self) -> list[SessionView]:
        return [step.session for step in self.steps if isinstance(step, DropFinalizer)]


def status_patch(current: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that turns ``current`` into ``desired`` (removed keys become null)."""
    patch: dict[str, Any] = {}
    for key in set(current) | set(desired):
        if key not in desired:
            patch[key] = None
        elif current.get(key) != desired[key]:
            patch[key] = desired[key]
    return patch
