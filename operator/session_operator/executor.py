"""Performs a plan's steps, stage by stage, each write conditional: the one executor.

The arbiter says what to write and in which order (``plan.Plan``: stages run one
after the other; the steps of one stage are independent). This module performs exactly
that, against anything that speaks ``WriteApi``: ``kube.Kube`` in the operator, an
in-memory fake in the property tests, so the properties check the code that runs.

* Every session write carries the resourceVersion the plan was decided on, or the one
  the executor's own previous write on that session returned.
* Every claim change is a create-if-absent or a write conditional on the claim's
  resourceVersion.
* Steps of one stage run at once (bounded), except that steps on the same session run
  in order.
* A write that loses its race raises ``LostRace`` once the stage's other writes have
  ended; nothing of a later stage is written. The caller re-reads and decides again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from .cache import TargetKey
from .errors import Conflict, NotFound
from .model import (
    HOLDER_UID_ANNOTATION,
    LEGACY_FINALIZER,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    TARGET_ANNOTATION,
    Claim,
    SessionView,
    claim_name,
    format_micro_time,
)
from .plan import ClaimChange, DeleteSession, DropFinalizer, Fence, Plan, StatusWrite, Step, status_patch


class WriteApi(Protocol):
    """The writes a plan is made of (``kube.Kube`` implements them)."""

    async def patch_session_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]: ...

    async def set_session_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]: ...

    async def delete_session(self, namespace: str, name: str, uid: str, resource_version: str) -> None: ...

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]: ...

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None: ...


class Observer(Protocol):
    """What the executor reports as it goes (the reconciler keeps its cache with it)."""

    def session_written(self, body: Mapping[str, Any]) -> SessionView: ...

    def session_gone(self, session: SessionView) -> None: ...

    def claim_written(self, key: TargetKey, claim: Claim | None, previous: Claim | None) -> None: ...

    def transition(self, write: StatusWrite, written: SessionView) -> None: ...

    def retention_deleted(self, session: SessionView) -> None: ...


class LostRace(Conflict):
    """A conditional write found the object changed (or gone): the plan was stale."""

    def __init__(self, step: Step, cause: Exception) -> None:
        super().__init__(409, "Conflict", f"{type(step).__name__}: {cause}")
        self.step = step


def claim_body(
    namespace: str,
    target: str,
    holder: SessionView,
    *,
    now: datetime,
    transitions: int,
    resource_version: str | None = None,
) -> dict[str, Any]:
    """The claim Lease naming ``holder``; with ``resource_version`` it is a conditional replace."""
    metadata: dict[str, Any] = {
        "name": claim_name(target),
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        "annotations": {TARGET_ANNOTATION: target, HOLDER_UID_ANNOTATION: holder.uid},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    stamp = format_micro_time(now)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder.name,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        },
    }


class Executor:
    def __init__(self, api: WriteApi, observer: Observer, *, concurrency: int = 16) -> None:
        self._api = api
        self._observer = observer
        self._limit = asyncio.Semaphore(concurrency)

    async def execute(self, plan: Plan, key: TargetKey, now: datetime) -> None:
        versions: dict[str, str] = {}  # uid -> resourceVersion our own last write returned
        for stage in plan.stages:
            await self._stage(stage, key, now, versions)

    async def _stage(self, stage: Sequence[Step], key: TargetKey, now: datetime, versions: dict[str, str]) -> None:
        if len(stage) == 1:
            await self._step(stage[0], key, now, versions)
            return
        # Steps on one session run in order; different sessions at once.
        chains: dict[str, list[Step]] = {}
        for step in stage:
            chains.setdefault(_uid_of(step), []).append(step)

        async def run(chain: list[Step]) -> None:
            async with self._limit:
                for step in chain:
                    await self._step(step, key, now, versions)

        results = await asyncio.gather(*(run(chain) for chain in chains.values()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _step(self, step: Step, key: TargetKey, now: datetime, versions: dict[str, str]) -> None:
        if isinstance(step, ClaimChange):
            await self._claim(step, key, now)
            return
        session = step.session
        rv = versions.get(session.uid, session.resource_version)
        if isinstance(step, StatusWrite):
            body = await self._session_write(
                step, session,
                lambda: self._api.patch_session_status(
                    session.namespace, session.name, status_patch(session.status, step.status), rv
                ),
            )
            written = self._observer.session_written(body)
            versions[session.uid] = written.resource_version
            if step.transition is not None:
                self._observer.transition(step, written)
        elif isinstance(step, Fence):
            # No change, only the precondition: "the holder is still as this plan saw it".
            with contextlib.suppress(_Gone):  # gone: nothing can make it Active any more
                await self._session_write(
                    step, session, lambda: self._api.patch_session_status(session.namespace, session.name, {}, rv)
                )
        elif isinstance(step, DropFinalizer):
            finalizers = [f for f in session.finalizers if f != LEGACY_FINALIZER]
            try:
                body = await self._session_write(
                    step, session,
                    lambda: self._api.set_session_finalizers(session.namespace, session.name, finalizers, rv),
                )
            except _Gone:
                return
            except LostRace:
                if session.deleting:
                    raise
                return  # only tidiness is lost; the next reconcile tries again
            if (body.get("metadata") or {}).get("deletionTimestamp") and not finalizers:
                self._observer.session_gone(session)
            else:
                versions[session.uid] = self._observer.session_written(body).resource_version
        elif isinstance(step, DeleteSession):
            with contextlib.suppress(NotFound):
                await self._api.delete_session(session.namespace, session.name, session.uid, rv)
            self._observer.retention_deleted(session)

    async def _session_write(
        self, step: Step, session: SessionView, call: Callable[[], Awaitable[dict[str, Any]]]
    ) -> dict[str, Any]:
        try:
            return await call()
        except Conflict as e:
            raise LostRace(step, e) from e
        except NotFound as e:
            self._observer.session_gone(session)
            if isinstance(step, (Fence, DropFinalizer)):
                raise _Gone from e
            raise LostRace(step, e) from e

    async def _claim(self, change: ClaimChange, key: TargetKey, now: datetime) -> None:
        namespace, target = key
        claim = change.claim
        try:
            if change.op == "release":
                assert claim is not None
                with contextlib.suppress(NotFound):  # already gone: released is released
                    await self._api.delete_lease(namespace, claim.name, claim.resource_version)
                self._observer.claim_written(key, None, claim)
                return
            holder = change.holder
            assert holder is not None
            if change.op == "create":
                body = claim_body(namespace, target, holder, now=now, transitions=0)
                written = await self._api.create_lease(namespace, body)
            else:
                assert claim is not None
                # transfer: one conditional write moves the claim, and the transition count
                # (the fencing epoch) goes up; confirm: same holder, a write that bumps the
                # resourceVersion, so that a concurrent transfer and this activation cannot
                # both succeed.
                transitions = claim.transitions + 1 if change.op == "transfer" else claim.transitions
                body = claim_body(
                    namespace, target, holder, now=now, transitions=transitions,
                    resource_version=claim.resource_version,
                )
                written = await self._api.replace_lease(namespace, claim.name, body)
        except (Conflict, NotFound) as e:  # moved, created or deleted under us: a lost race
            raise LostRace(change, e) from e
        self._observer.claim_written(key, Claim.from_body(written), claim)


class _Gone(Exception):
    """The session a fence or finalizer removal was for no longer exists (fine)."""


def _uid_of(step: Step) -> str:
    return "" if isinstance(step, ClaimChange) else step.session.uid
