"""The questions one target answers, asked in one place (pure).

Who holds the target, who waits for it and in which order, where a session stands in that
queue, and the sentence that names a holder. The arbiter (deciding), the admission
webhook (answering at apply time) and the kubectl plugin (showing ``who`` and ``why``)
all ask this module, so they cannot disagree about the same state of a target.

The claim Lease is the lock (rule 1: an Active session is always the claim's holder), so
the holder is the session the claim names. The cache's view of the claim can lag the
session's status by a watch event, and the plugin may not be allowed to read Leases; so
when no claim is known, or it names no session in view, the holder is the Active session
that stays (not being deleted, its spec still asks for Active) first in queue order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .model import Claim, DesiredState, Phase, SessionView


def named_by_claim(sessions: Iterable[SessionView], claim: Claim | None) -> SessionView | None:
    """The session the claim names (its name, and its uid when the claim records one)."""
    if claim is None or not claim.holder:
        return None
    for session in sessions:
        if session.name == claim.holder and claim.holder_uid in (None, session.uid):
            return session
    return None


def wants_target(session: SessionView) -> bool:
    """Its spec is valid and asks for the target (spec.state: Active)."""
    return session.spec is not None and session.spec.state is DesiredState.ACTIVE


def stays_active(session: SessionView) -> bool:
    """Shows Active, is not being deleted, and its spec still asks for Active."""
    return session.phase == Phase.ACTIVE and not session.deleting and wants_target(session)


def holder(sessions: Iterable[SessionView], claim: Claim | None) -> SessionView | None:
    """The session that holds the target, as the cluster shows it (see the module notes)."""
    active = [s for s in sessions if stays_active(s)]
    named = named_by_claim(active, claim)
    if named is not None:
        return named
    return min(active, key=lambda s: s.order_key) if active else None


def queue(sessions: Iterable[SessionView]) -> list[SessionView]:
    """The sessions waiting for the target (Queued, not being deleted), head first:
    higher priority, then older, then name."""
    return sorted((s for s in sessions if s.phase == Phase.QUEUED and not s.deleting), key=lambda s: s.order_key)


def position(waiting: Sequence[SessionView], session: SessionView) -> int:
    """Where ``session`` would stand in ``waiting`` (a ``queue``): 1-based. A session
    already in it keeps its place; a newcomer goes where its queue order puts it."""
    return 1 + sum(1 for other in waiting if other.uid != session.uid and other.order_key < session.order_key)


def held_by(target: str, holder: SessionView, active_since: str | None) -> str:
    """The sentence that names a holder, as every message about it says it."""
    return (
        f'target "{target}" is held by session "{holder.name}" '
        f'(profile "{holder.profile}", active since {active_since or "an unknown time"})'
    )
