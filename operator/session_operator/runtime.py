"""One operator process's work, built in dependency order (nothing refers to anything built later).

    informers ──> cache <── reconciler ──> executor ──> API
        │                      ▲
        └── changed keys ──> work queue (reconciles, retries, deadlines)

* The informers and kopf run for the whole process, on every replica, so a standby's
  cache is warm and it decides at once when it takes over. Every replica also answers
  the admission webhook (through kopf) from that cache: ``admit``.
* The work queue, its workers and the event poster run only while this replica leads
  (always, without leader election), and only once the cache is filled. The first thing
  a new leader does is reconcile every target it knows: a full resync, so nothing that
  happened while no one led is missed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from . import admission, kopf_adapter, leader, logs, paths
from .arbiter import Defaults
from .cache import ClusterView, TargetKey
from .errors import ApiError
from .events import EventPoster
from .informer import Informer
from .kube import Kube
from .metrics import Metrics
from .model import GROUP, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SessionView
from .permissions import Permissions
from .probes import Readiness
from .reconciler import Reconciler
from .settings import Settings
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

CLAIM_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
MISSING_CRD = (
    f"this cluster does not serve sessions.{GROUP} (the Session CRD is not installed); install it with: "
    "kubectl apply --server-side -f charts/session-operator/crds/"
)


class OperatorStopped(RuntimeError):
    """A part that must run for the whole process (an informer, kopf) ended by itself."""


# How the parts are told about the cache's changes: a sink for each informer may be
# wrapped (a test holds watch events back), and so may the work queue's reconcile.
SinkWrap = Callable[[str, Any], Any]
ProcessWrap = Callable[[Callable[[TargetKey], Awaitable[float | None]]], Callable[[TargetKey], Awaitable[float | None]]]


class Parts:
    """Everything one operator process runs, built in dependency order by ``build``:
    cache, event poster, permissions, reconciler (with its executor), work queue, and the
    informers that fill the cache. ``leading`` gates the work queue: changes are queued
    only while this replica leads (``changed``)."""

    def __init__(
        self, settings: Settings, kube: Kube, metrics: Metrics, *, sink_wrap: SinkWrap | None,
        process_wrap: ProcessWrap | None, identity: str | None,
    ) -> None:
        self.leading = False
        self.cache = ClusterView()
        self.events = EventPoster(kube, identity or settings.identity or f"{socket.gethostname()}_{os.getpid()}",
                                  metrics)
        self.permissions = Permissions(kube, metrics)
        self.reconciler = Reconciler(
            self.cache,
            kube,
            defaults=Defaults(archive_after=settings.archive_after, delete_after=settings.delete_after),
            refresh_rate=settings.queue_refresh_rate,
            events=self.events,
            metrics=metrics,
            concurrency=settings.write_concurrency,
            permissions=self.permissions,
            wake=self.wake,
        )
        process = self.reconciler.reconcile if process_wrap is None else process_wrap(self.reconciler.reconcile)
        self.queue: WorkQueue[TargetKey] = WorkQueue(
            process, workers=settings.workers, due_batch=settings.delete_batch_size
        )
        self.informers = _informers(settings, kube, metrics, self.cache, self.changed, sink_wrap or (lambda _, s: s))
        metrics.observe(self.cache, self.queue)

    def changed(self, keys: set[TargetKey]) -> None:
        if self.leading:
            for key in keys:
                self.queue.add(key)

    def wake(self, key: TargetKey) -> None:
        if self.leading:
            self.queue.add(key)

    @property
    def synced(self) -> bool:
        """The cache is filled from a full listing of every scope."""
        return all(informer.synced.is_set() for informer in self.informers)

    def resync(self) -> tuple[int, int]:
        """Queue every target the cache knows, as a new leader does first: targets with an
        undecided session first, newest first (those are the ones a client is most likely
        still waiting on; sessions created while no one led have waited already), then
        every other target (deadlines that passed, claims left behind). Anything that
        changes meanwhile goes ahead of all of them (the queue's first lane). Within a
        target, rule 4's order holds. Returns (targets, targets with undecided sessions)."""
        keys = self.cache.keys()
        waiting = self.cache.undecided_keys()
        for key in waiting:
            self.queue.add_resync(key)
        for key in keys.difference(waiting):
            self.queue.add_resync(key)
        return len(keys), len(waiting)


def _informers(
    settings: Settings, kube: Kube, metrics: Metrics, cache: ClusterView, changed: Callable[[set[TargetKey]], None],
    wrap: SinkWrap,
) -> list[Informer]:
    scopes: list[str | None] = list(settings.namespaces) or [None]
    informers = []
    for namespace in scopes:
        informers.append(Informer(
            kube, what="sessions", namespace=namespace, sink=wrap("sessions", cache.session_sink),
            path=paths.sessions(namespace), changed=changed,
            listed=metrics.watch_lists.labels(resource="sessions").inc, absent_hint=MISSING_CRD,
        ))
        informers.append(Informer(
            kube, what="claims", namespace=namespace, sink=wrap("claims", cache.claim_sink),
            path=paths.leases(namespace), label_selector=CLAIM_SELECTOR,
            changed=changed, listed=metrics.watch_lists.labels(resource="claims").inc,
        ))
    # SessionPolicies are cluster-scoped: one informer, whatever the namespaces. A chart
    # upgrade does not install a new CRD; without it no policy can exist (none in force).
    informers.append(Informer(
        kube, what="sessionpolicies", sink=wrap("sessionpolicies", cache.policy_sink),
        path=paths.session_policies(), changed=changed,
        listed=metrics.watch_lists.labels(resource="sessionpolicies").inc, absent_is_empty=True,
    ))
    return informers


def build(
    settings: Settings,
    kube: Kube,
    *,
    metrics: Metrics,
    sink_wrap: SinkWrap | None = None,
    process_wrap: ProcessWrap | None = None,
    identity: str | None = None,
) -> Parts:
    """The one assembly of the operator's parts: the process (``Operator``) and the
    component tests (``tests/support/inloop.py``) both call it."""
    return Parts(settings, kube, metrics, sink_wrap=sink_wrap, process_wrap=process_wrap, identity=identity)


class Operator:
    def __init__(self, settings: Settings, kube: Kube, *, metrics: Metrics, readiness: Readiness) -> None:
        self._settings = settings
        self._kube = kube
        self._metrics = metrics
        self._readiness = readiness
        self.parts = build(settings, kube, metrics=metrics)
        readiness.missing = lambda: next((i.missing for i in self.parts.informers if i.missing), None)
        self.cache = self.parts.cache
        self.events = self.parts.events
        self.permissions = self.parts.permissions
        self.reconciler = self.parts.reconciler
        self.queue = self.parts.queue
        self.informers = self.parts.informers

    async def run(self, stop: asyncio.Event, elector: leader.LeaderElector | None = None) -> None:
        """Watch until ``stop``; reconcile while leading. Raises ``leader.LeadershipLost``
        when leadership is lost, and ``OperatorStopped`` if a part ends by itself."""
        settings = self._settings
        webhook = None
        if settings.webhook_port:
            webhook = kopf_adapter.Webhook(
                port=settings.webhook_port,
                cert_file=settings.webhook_cert_file,
                key_file=settings.webhook_key_file,
                bind_address=settings.webhook_bind_address,
            )
        kopf = kopf_adapter.KopfThread(self._kube.credentials, settings.namespaces, webhook=webhook, admit=self.admit)
        background = {
            asyncio.create_task(informer.run(), name=f"informer {informer.what}") for informer in self.informers
        }
        background.add(asyncio.create_task(self._mark_synced(), name="synced"))
        kopf_done = kopf.start()
        if elector is None:
            work = asyncio.create_task(self._lead(stop), name="lead")
        else:
            work = asyncio.create_task(leader.run_leading(elector, lambda: self._lead(stop), stop=stop), name="elect")
        try:
            while True:
                done, _ = await asyncio.wait({work, kopf_done, *background}, return_when=asyncio.FIRST_COMPLETED)
                if work in done:
                    work.result()  # LeadershipLost, or the work's own failure
                    return
                if kopf_done in done:
                    error = kopf_done.exception()
                    raise OperatorStopped(f"kopf stopped unexpectedly: {error!r}")
                for task in [task for task in background if task in done]:
                    if task.get_name() == "synced":
                        background.discard(task)
                        continue
                    error = None if task.cancelled() else task.exception()
                    raise OperatorStopped(f"{task.get_name()} stopped unexpectedly: {error!r}")
        finally:
            self._readiness.synced = False
            for task in (work, *background):
                task.cancel()
            await asyncio.gather(work, *background, return_exceptions=True)
            await kopf.stop()

    async def _mark_synced(self) -> None:
        await asyncio.gather(*(informer.synced.wait() for informer in self.informers))
        self._readiness.synced = True
        log.info(
            "Filled the cache: %d sessions and %d claims in %s; %d SessionPolicies in force",
            len(self.cache), self.cache.claim_count, ", ".join(self._settings.namespaces) or "all namespaces",
            len(self.cache.policies()),
        )

    @property
    def synced(self) -> bool:
        return self.parts.synced

    async def admit(self, request: admission.Request) -> admission.Admission:
        """The admission webhook's answer to a CREATE or UPDATE, from this replica's cache
        (leader or standby alike). Runs on the operator's loop, where the cache lives. It
        awaits only a permission the answer depends on (a LocalSubjectAccessReview, cached
        like the reconciler's), and then reviews again on the cache as it is then."""
        body = request.body
        metadata = body.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "")
        if self._settings.namespaces and namespace not in self._settings.namespaces:
            return admission.ALLOW  # not watched: the operator decides nothing there
        if not self.synced:
            return admission.unchecked("this replica's view of sessions is not filled yet")
        spec = body.get("spec")
        target = spec.get("target") if isinstance(spec, Mapping) else None
        key = (namespace, target if isinstance(target, str) else "")
        permits: dict[str, bool] = {}
        for _ in range(2):
            answer = self._review(request, key, permits)
            if answer.asks is None:
                break
            try:
                permits[answer.asks.username] = await self.permissions.may_preempt(namespace, answer.asks)
            except ApiError as e:
                return admission.unchecked(f"could not ask whether {answer.asks.username} may preempt: {e}")
        if answer.asks is not None:
            return admission.unchecked("the permission it needs changed while it was asked")
        if not answer.allowed:
            name = str(metadata.get("name") or "")
            log.info(
                "Denied the %s of session %s/%s at admission: %s", request.operation.lower(), namespace, name,
                answer.message, extra=logs.context(namespace=namespace, name=name, target=key[1]),
            )
        return answer

    def _review(self, request: admission.Request, key: TargetKey, permits: dict[str, bool]) -> admission.Admission:
        sessions = self.cache.sessions(key)
        # The counts are for the owners of the group and of the session under review.
        governance = self.cache.governance(key, [*sessions, SessionView.from_body(request.body)], permits)
        now = datetime.now(UTC)
        if request.operation == "UPDATE" and request.old is not None:
            return admission.review_update(request.old, request.body, sessions, self.cache.claim(key), now, governance)
        if request.operation == "CREATE":
            return admission.review_create(
                request.body, sessions, self.cache.claim(key), now, governance, request.user
            )
        return admission.ALLOW

    async def _lead(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop``: the work of the leader. A stop while the cache is not
        filled yet (no CRD, no API server) returns at once."""
        async def filling() -> None:
            await asyncio.gather(*(informer.synced.wait() for informer in self.informers))

        filled = asyncio.ensure_future(filling())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({filled, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not filled.done():
            filled.cancel()
            return
        self.parts.leading = True
        self._readiness.leading = True
        self._metrics.leader.set(1)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.queue.run(), name="work-queue"),
            asyncio.create_task(self.events.run(), name="event-poster"),
        ]
        try:
            targets, waiting = self.parts.resync()
            log.info("Started reconciling sessions: %d targets to resync, %d with undecided sessions",
                     targets, waiting)
            stopping = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            for task in done:
                if task is not stopping and not task.cancelled() and task.exception() is not None:
                    raise OperatorStopped(f"{task.get_name()} failed: {task.exception()!r}")
        finally:
            # Stop acting first (no new writes); the informers go on until the process ends.
            self.parts.leading = False
            self._readiness.leading = False
            self._metrics.leader.set(0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("Stopped reconciling sessions")
