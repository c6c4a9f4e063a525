"""One operator run: kopf (watching, indexing), the reconcile queue, the sweep, the event poster.

``serve`` is what the leader runs; it returns once ``stop`` is set and everything it
started has stopped, so a replica that loses leadership stops acting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Any

import kopf

from . import metrics
from .arbiter import Defaults
from .handlers import TargetKey, Wiring
from .kube import Kube
from .lifecycle import Sweep
from .model import ANNOTATION_PREFIX, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ActivityClock
from .reconciler import EventPoster, Reconciler
from .settings import Settings
from .workqueue import WorkQueue

log = logging.getLogger(__name__)

_ready = False


def is_ready() -> bool:
    """True once kopf has started and the session index has been filled."""
    return _ready


def kopf_settings(settings: Settings) -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    # Leader election is ours (a Lease, with fencing); kopf's peering is not leader
    # election, so it is switched off.
    config.peering.standalone = True
    # kopf keeps its own bookkeeping in annotations under our prefix, never in status
    # (we register no change-detecting handlers, so in practice it writes none).
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    config.persistence.finalizer = f"{ANNOTATION_PREFIX}/kopf"
    # Events are ours: one per transition, posted by the reconciler. kopf's own per-handler
    # events would add noise to `kubectl describe`.
    config.posting.enabled = False
    # kopf 1.45 has no time-based batching window any more (events are handled as they
    # come), so there is none to tune. Its per-object workers here only index and enqueue
    # (microseconds each); a worker lingers idle_timeout after an object's last event
    # holding its slot, so with the default 5 s and a limit, a burst of thousands of new
    # sessions would queue behind lingering workers (measured: ~50 objects/s at 256/5 s).
    # Workers exit almost at once instead, and the limit bounds memory during a start-up
    # listing of many thousands of sessions; the real concurrency limit is our own
    # reconcile queue (--workers).
    config.queueing.worker_limit = 1000
    config.queueing.idle_timeout = 0.2
    # Ask the API server to end watches every few minutes and give up on a silent
    # stream a little later: silent watch hangs are a known failure mode.
    config.watching.server_timeout = 300
    config.watching.client_timeout = 330
    config.watching.connect_timeout = 10
    # Only claim Leases, filtered by the API server: a cluster has a Lease per node in
    # kube-node-lease renewed every few seconds, which we must not even receive.
    config.watching.label_selectors["coordination.k8s.io", "leases"] = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
    config.networking.request_timeout = 60
    config.networking.connect_timeout = 10
    return config


async def serve(settings: Settings, kube: Kube, *, stop: asyncio.Event) -> None:
    global _ready
    activity = ActivityClock()
    instance = settings.identity or f"{socket.gethostname()}_{os.getpid()}"
    events = EventPoster(kube, instance)
    defaults = Defaults(archive_after=settings.archive_after, delete_after=settings.delete_after)

    queue: WorkQueue[TargetKey]
    sweep: Sweep
    reconciler: Reconciler

    def enqueue(key: Any) -> None:
        queue.add(key)

    sweep = Sweep(enqueue, batch_size=settings.delete_batch_size)
    wiring = Wiring(
        enqueue=enqueue,
        forget=lambda uid: reconciler.forget(uid),
        activity=activity,
        credentials=kube.credentials,
    )
    reconciler = Reconciler(
        kube,
        sessions=wiring.sessions,
        claims=wiring.claim,
        defaults=defaults,
        activity=activity,
        events=events,
        schedule=sweep.schedule,
    )
    queue = WorkQueue(reconciler.reconcile, workers=settings.workers)
    metrics.set_session_source(
        lambda: ((view.namespace, view.phase or "Undecided") for view in wiring.all_sessions())
    )

    ready_flag = asyncio.Event()
    kopf_stop = asyncio.Event()
    namespaces = list(settings.namespaces)
    operator_task: asyncio.Task[Any] = asyncio.create_task(
        kopf.operator(
            registry=wiring.registry,
            settings=kopf_settings(settings),
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
            stop_flag=kopf_stop,
            ready_flag=ready_flag,
        ),
        name="kopf",
    )
    tasks = [
        asyncio.create_task(queue.run(), name="reconcile-queue"),
        asyncio.create_task(sweep.run(), name="lifecycle-sweep"),
        asyncio.create_task(events.run(), name="event-poster"),
    ]
    stop_task: asyncio.Task[Any] = asyncio.create_task(stop.wait(), name="stop")
    ready_task: asyncio.Task[Any] = asyncio.create_task(ready_flag.wait(), name="kopf-ready")
    try:
        done, _ = await asyncio.wait({operator_task, stop_task, ready_task}, return_when=asyncio.FIRST_COMPLETED)
        if ready_task in done and not stop.is_set():
            _ready = True
            log.info("Started reconciling sessions in %s", ", ".join(namespaces) or "all namespaces")
            await asyncio.wait({operator_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if operator_task.done() and not stop.is_set():
            exc = operator_task.exception()
            if exc is not None:
                raise RuntimeError(f"kopf stopped unexpectedly: {exc!r}") from exc
            # kopf installs its own SIGTERM/SIGINT handlers (replacing the caller's) and
            # ends cleanly on them: pass the request on, so the caller shuts down in order.
            log.info("Received a stop signal")
            stop.set()
    finally:
        _ready = False
        # Stop acting first (no new writes), then let kopf close its watches.
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kopf_stop.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(operator_task, timeout=10)
        for task in (stop_task, ready_task):
            task.cancel()
        metrics.set_session_source(None)
        log.info("Stopped reconciling sessions")
