"""Leader election with a coordination.k8s.io/v1 Lease, after client-go's leaderelection.

Why not kopf peering: peering has no fencing and notices a dead peer only after ~60 s;
a Lease gives one leader at a time (as far as clocks tick alike) and a fast handover.
Exclusivity of sessions does not rest on this (the claim Leases do that); leader election
keeps replicas from doing the same work twice.

Semantics, as in client-go:

- A replica may take the Lease when it does not exist (create; a 409 means another
  replica created it first), when it has no holder, when it is ours, or when it has
  expired. Expiry is judged with the *local* clock: a record is expired once
  ``leaseDurationSeconds`` have passed since we last saw the record change, whatever its
  ``renewTime`` says, so clocks need not agree across machines, only tick at the same rate.
- Every write is a PUT carrying the resourceVersion it was decided on; a 409 means
  someone else wrote first, and we read again.
- Taking the Lease over increments ``leaseTransitions`` and sets ``acquireTime``;
  renewing keeps both and moves ``renewTime``.
- The leader renews every ``retry_period``. It stops acting as soon as
  ``renew_deadline`` has passed since the start of its last successful renewal (before
  the Lease can expire for the others, since ``renew_deadline < lease_duration``), or at
  once if it reads the Lease held by someone else.
- On a clean shutdown the leader releases the Lease (empty holder, duration 1 s) so that
  a standby takes over at its next retry instead of waiting for the Lease to expire.

The pure decisions (``is_expired``, ``is_held_by``, ``can_acquire``, ``next_spec``,
``renew_deadline_passed``) are plain functions; ``LeaderElector`` does the I/O through
anything with ``get_lease``/``create_lease``/``replace_lease`` (``kube.Kube`` in the
operator, an in-memory fake in tests). ``run_leading`` ties election to the work.

Errors are the client-free types of ``errors`` (``Conflict``, ``NotFound``), so this
module never imports the Kubernetes client, as the import-linter contract requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .errors import ApiError, Conflict, NotFound
from .model import format_micro_time
from .settings import Settings

log = logging.getLogger(__name__)

LEASE_API_VERSION = "coordination.k8s.io/v1"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# client-go waits retry_period * (1 + random * 1.2) between attempts to acquire.
JITTER_FACTOR = 1.2
# The leader Lease's own labels. Not the claims' managed-by label: the claim watch selects
# on that one, and must never receive the leader's renewals (one every retry period).
LEADER_LABELS = {"app.kubernetes.io/name": "session-operator", "app.kubernetes.io/component": "leader-election"}


class LeaseApi(Protocol):
    """The part of ``kube.Kube`` that leader election uses."""

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...


class LeadershipLost(Exception):
    """The leader could not renew in time, or saw the Lease held by someone else."""


# Pure decisions ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaderRecord:
    """The leader-election fields of a Lease's spec."""

    holder: str = ""
    lease_duration_seconds: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaderRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )


def lease_duration_seconds(lease_duration: float) -> int:
    """The Lease field is whole seconds; round up so others never wait less than we assume."""
    return max(1, math.ceil(lease_duration))


def is_held_by(record: LeaderRecord, identity: str) -> bool:
    return bool(record.holder) and record.holder == identity


def is_expired(record: LeaderRecord, observed_at: float, now: float, default_duration: float) -> bool:
    """True once the record's lease duration has passed since we *observed* it change.

    ``observed_at`` and ``now`` are readings of our own monotonic clock; the record's
    ``renewTime`` is deliberately not used (another machine's clock).
    """
    duration = record.lease_duration_seconds or default_duration
    return now - observed_at > duration


def can_acquire(record: LeaderRecord, identity: str, observed_at: float, now: float, default_duration: float) -> bool:
    """Ours, free (no holder, e.g. released) or expired: we may write ourselves in."""
    return not record.holder or is_held_by(record, identity) or is_expired(record, observed_at, now, default_duration)


def next_spec(record: LeaderRecord | None, identity: str, lease_duration: float, now: datetime) -> dict[str, Any]:
    """The spec to write: a renewal if the record is ours, else a takeover (or creation)."""
    renew_time = format_micro_time(now)
    if record is not None and is_held_by(record, identity):
        acquire_time = record.acquire_time or renew_time
        transitions = record.transitions
    else:
        acquire_time = renew_time
        transitions = 0 if record is None else record.transitions + 1
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": lease_duration_seconds(lease_duration),
        "acquireTime": acquire_time,
        "renewTime": renew_time,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaderRecord, now: datetime) -> dict[str, Any]:
    """What a leader writes on a clean exit: no holder, so a standby may take it at once."""
    stamp = format_micro_time(now)
    return {
        "holderIdentity": "",
        "leaseDurationSeconds": 1,
        "acquireTime": stamp,
        "renewTime": stamp,
        "leaseTransitions": record.transitions,
    }


def renew_deadline_passed(last_renew: float, now: float, renew_deadline: float) -> bool:
    """The leader must stop acting: no renewal has succeeded for ``renew_deadline``."""
    return now - last_renew > renew_deadline


def check_timings(lease_duration: float, renew_deadline: float, retry_period: float) -> str | None:
    """client-go's sanity rules; a message naming the broken one, or None."""
    if renew_deadline >= lease_duration:
        return "renew_deadline must be shorter than lease_duration"
    if renew_deadline <= JITTER_FACTOR * retry_period:
        return f"renew_deadline must be longer than {JITTER_FACTOR} x retry_period"
    return None


def default_identity() -> str:
    # A random suffix, as controller-runtime does: two pods with hostNetwork on one node
    # share a hostname and may share a pid, and must still never both think they lead.
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


def lease_namespace(
    settings: Settings,
    *,
    service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The configured namespace, else the pod's (service account file, POD_NAMESPACE), else default."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    try:
        namespace = service_account_file.read_text().strip()
    except OSError:
        namespace = ""
    if namespace:
        return namespace
    env = os.environ if environ is None else environ
    return env.get("POD_NAMESPACE", "").strip() or "default"


# The elector ------------------------------------------------------------------------------


class LeaderElector:
    """Acquires, renews and releases one leader Lease for one identity."""

    def __init__(
        self,
        settings: Settings,
        leases: LeaseApi,
        *,
        identity: str | None = None,
        namespace: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # The timings are checked once, with the command line (``check_timings``).
        self.leases = leases
        self.identity = identity or settings.identity or default_identity()
        self.namespace = namespace or lease_namespace(settings)
        self.name = settings.leader_election_lease_name
        self.lease_duration = settings.lease_duration
        self.renew_deadline = settings.renew_deadline
        self.retry_period = settings.retry_period
        self._clock = clock
        self._wall_clock = wall_clock

        self._leading = False
        self._lease: dict[str, Any] | None = None  # last body read or written: its resourceVersion
        self._observed: LeaderRecord | None = None
        self._observed_at = 0.0  # when (our clock) the record was last seen to change
        self._last_renew: float | None = None  # start of the last successful write of ours
        self._last_contact: float | None = None  # last time the API server answered us
        self._taken_by = ""  # set when, while leading, we read the Lease held by another
        self._last_problem = ""
        self._announced_holder: str | None = None

    # State ------------------------------------------------------------------------------

    @property
    def lease_ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_leader(self) -> bool:
        return self._leading

    @property
    def holder(self) -> str:
        """The holder last seen in the Lease ("" if none or not read yet)."""
        return self._observed.holder if self._observed else ""

    def healthy(self) -> bool:
        """The API server answered us recently (a standby that can take over when needed)."""
        if self._last_contact is None:
            return False
        window = max(self.lease_duration, 3 * self.retry_period)
        return self._clock() - self._last_contact <= window

    def _set_leading(self, leading: bool) -> None:
        self._leading = leading

    # One attempt ------------------------------------------------------------------------

    async def try_acquire_or_renew(self) -> bool:
        """One round: True if we hold the Lease after it (freshly written by us)."""
        started = self._clock()
        if self._leading and self._lease is not None and self._observed is not None:
            # Renewal: PUT on the version we wrote last; only a 409 needs a fresh read.
            try:
                written = await self._replace(
                    self._lease, next_spec(self._observed, self.identity, self.lease_duration, self._wall_clock())
                )
            except Exception as e:
                if not isinstance(e, NotFound | Conflict):
                    self._problem(f"Could not renew leader lease {self.lease_ref}: {e}", e)
                    return False
                self._contacted()  # changed or deleted under us: read it and decide again
            else:
                self._wrote(written, started)
                return True

        try:
            lease = await self.leases.get_lease(self.namespace, self.name)
        except Exception as e:
            if isinstance(e, NotFound):
                self._contacted()
                return await self._create(started)
            self._problem(f"Could not read leader lease {self.lease_ref}: {e}", e)
            return False
        now = self._clock()
        self._contacted()
        self._lease = lease
        record = LeaderRecord.from_lease(lease)
        if record != self._observed:
            self._observed, self._observed_at = record, now
        if not can_acquire(record, self.identity, self._observed_at, now, self.lease_duration):
            if self._leading:
                self._taken_by = record.holder
            self._announce(record.holder)
            return False
        try:
            written = await self._replace(
                lease, next_spec(record, self.identity, self.lease_duration, self._wall_clock())
            )
        except Exception as e:
            if isinstance(e, Conflict):
                self._contacted()
                log.debug("Lost a race to write leader lease %s; reading it again", self.lease_ref)
            else:
                self._problem(f"Could not write leader lease {self.lease_ref}: {e}", e)
            return False
        self._wrote(written, started)
        return True

    async def _create(self, started: float) -> bool:
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": dict(LEADER_LABELS),
            },
            "spec": next_spec(None, self.identity, self.lease_duration, self._wall_clock()),
        }
        try:
            created = await self.leases.create_lease(self.namespace, body)
        except Exception as e:
            if isinstance(e, Conflict):
                self._contacted()
                log.debug("Another replica created leader lease %s first", self.lease_ref)
            else:
                self._problem(f"Could not create leader lease {self.lease_ref}: {e}", e)
            return False
        self._wrote(created, started)
        return True

    async def _replace(self, lease: Mapping[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
        metadata = dict(lease.get("metadata") or {})
        # Our labels on every write, so that a Lease written by an earlier version (with
        # the claims' label) stops reaching the claim watch at its first renewal.
        metadata["labels"] = {**(metadata.get("labels") or {}), **LEADER_LABELS}
        if metadata["labels"].get("app.kubernetes.io/managed-by") == "session-operator":
            del metadata["labels"]["app.kubernetes.io/managed-by"]
        body = {
            "apiVersion": LEASE_API_VERSION,
            "kind": "Lease",
            "metadata": metadata,  # carries the resourceVersion we decided on
            "spec": {**(lease.get("spec") or {}), **spec},
        }
        return await self.leases.replace_lease(self.namespace, self.name, body)

    def _wrote(self, lease: dict[str, Any], started: float) -> None:
        self._contacted()
        self._lease = lease
        self._observed, self._observed_at = LeaderRecord.from_lease(lease), self._clock()
        # The write may have landed any time after we sent it; counting from the start of
        # the attempt keeps our deadline ahead of everyone else's expiry judgement.
        self._last_renew = started
        self._taken_by = ""
        if self._last_problem:
            log.info("Leader lease %s is reachable again", self.lease_ref)
            self._last_problem = ""

    def _contacted(self) -> None:
        self._last_contact = self._clock()

    def _problem(self, message: str, error: BaseException | None = None) -> None:
        # Log each distinct problem once, not every retry period. API errors and timeouts
        # are expected weather; only something else (a bug) deserves a traceback.
        if message != self._last_problem:
            unexpected = error is not None and not isinstance(error, ApiError)
            log.warning("%s", message, exc_info=error if unexpected else None)
            self._last_problem = message
        else:
            log.debug("%s", message)

    def _announce(self, holder: str) -> None:
        if holder != self._announced_holder:
            self._announced_holder = holder
            log.info("Leader lease %s is held by %s; waiting as %s", self.lease_ref, holder, self.identity)

    # Loops ------------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once we lead; retry every retry_period (with client-go's jitter) till then."""
        while True:
            try:
                # Bounded like a renewal: a write that hangs longer is not worth waiting for.
                async with asyncio.timeout(self.renew_deadline):
                    acquired = await self.try_acquire_or_renew()
            except TimeoutError:
                acquired = False
                self._problem(f"Timed out acquiring leader lease {self.lease_ref}")
            if acquired:
                assert self._last_renew is not None
                if renew_deadline_passed(self._last_renew, self._clock(), self.renew_deadline):
                    # Won, but so late that we would have to stop acting at once.
                    continue
                self._set_leading(True)
                self._announced_holder = self.identity
                log.info("Acquired leader lease %s as %s", self.lease_ref, self.identity)
                return
            await asyncio.sleep(self.retry_period * (1 + random.random() * JITTER_FACTOR))

    async def hold(self) -> None:
        """Renew every retry_period while leading; raise LeadershipLost when we must stop.

        Never returns normally; cancel it to stop renewing (then ``release()``).
        """
        if not self._leading or self._last_renew is None:
            raise LeadershipLost(f"not the holder of leader lease {self.lease_ref}")
        next_attempt = self._clock() + self.retry_period
        while True:
            deadline = self._last_renew + self.renew_deadline
            await asyncio.sleep(max(0.0, min(next_attempt, deadline) - self._clock()))
            started = self._clock()
            if renew_deadline_passed(self._last_renew, started, self.renew_deadline) or started >= deadline:
                self._lose(f"no successful renewal for {started - self._last_renew:.1f}s")
            next_attempt = started + self.retry_period
            try:
                async with asyncio.timeout(deadline - started):
                    renewed = await self.try_acquire_or_renew()
            except TimeoutError:
                renewed = False
                self._problem(f"Timed out renewing leader lease {self.lease_ref}")
            if self._taken_by:
                self._lose(f"it is now held by {self._taken_by}")
            if not renewed and renew_deadline_passed(self._last_renew, self._clock(), self.renew_deadline):
                self._lose(f"no successful renewal for {self._clock() - self._last_renew:.1f}s")

    def _lose(self, reason: str) -> None:
        self._set_leading(False)
        log.error("Lost leader lease %s as %s: %s", self.lease_ref, self.identity, reason)
        raise LeadershipLost(reason)

    async def release(self) -> bool:
        """Clear the holder (if we lead) so a standby takes over at once. Never raises."""
        if not self._leading or self._lease is None or self._observed is None:
            return False
        self._set_leading(False)
        try:
            async with asyncio.timeout(max(self.renew_deadline, 1.0)):
                try:
                    released = await self._replace(self._lease, released_spec(self._observed, self._wall_clock()))
                except Exception as e:
                    if not isinstance(e, Conflict):
                        raise
                    # A renewal cancelled mid-flight may have landed: read, and release
                    # only if the Lease is still ours.
                    lease = await self.leases.get_lease(self.namespace, self.name)
                    record = LeaderRecord.from_lease(lease)
                    if not is_held_by(record, self.identity):
                        log.info("Leader lease %s is no longer ours; nothing to release", self.lease_ref)
                        return False
                    released = await self._replace(lease, released_spec(record, self._wall_clock()))
        except Exception as e:
            log.warning("Could not release leader lease %s: %s", self.lease_ref, e)
            return False
        self._lease = released
        self._observed, self._observed_at = LeaderRecord.from_lease(released), self._clock()
        log.info("Released leader lease %s as %s", self.lease_ref, self.identity)
        return True


# Election around the work -----------------------------------------------------------------


async def run_leading(elector: LeaderElector, work: Callable[[], Awaitable[None]], *, stop: asyncio.Event) -> None:
    """Wait to lead (or for ``stop``), run ``work()`` while leading, release on the way out.

    - ``stop`` set: the work is expected to see it and return; renewals go on until it has
      (we still act until then), then the Lease is released.
    - Leadership lost: ``stop`` is set and the work task cancelled at once, and
      LeadershipLost is raised (the Lease is not released: it is not ours).
    - The work returns or fails by itself: the Lease is released and its error re-raised.
    """
    acquiring = asyncio.ensure_future(elector.acquire())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        if not acquiring.done():
            acquiring.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquiring
    if stop.is_set() or not elector.is_leader:
        await elector.release()  # in case we won in the same instant
        return

    working = asyncio.ensure_future(work())
    holding = asyncio.ensure_future(elector.hold())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({working, holding, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not holding.done():
            # Stop requested or the work ended: keep renewing until the work has wound down.
            stop.set()
            await asyncio.wait({working, holding}, return_when=asyncio.FIRST_COMPLETED)
        if holding.done():
            stop.set()
            working.cancel()
            # Bounded: the Lease may expire for the others once lease_duration - renew_deadline
            # has passed; work that ignores cancellation is left to the process exit.
            await asyncio.wait({working}, timeout=max(1.0, elector.lease_duration - elector.renew_deadline))
            if not working.done():
                log.error("The work did not stop when leadership was lost")
            elif not working.cancelled() and working.exception() is not None:
                log.error("The work failed while leadership was being lost", exc_info=working.exception())
            holding.result()  # raises LeadershipLost
            raise LeadershipLost("renewals ended")  # unreachable: hold() never returns normally
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding
        await elector.release()
        working.result()  # re-raise the work's own failure, if any
    finally:
        for task in (working, holding, stopping):
            task.cancel()
        await asyncio.gather(working, holding, stopping, return_exceptions=True)
        if elector.is_leader:  # cancelled from outside: do not claim to lead any more
            elector._set_leading(False)
