"""The only module that imports kopf: the framework that runs beside the operator's work.

kopf logs in with the operator's own credentials and runs for the whole life of the
process, on every replica (the admission webhook will be served through it). It does
not watch sessions or claims: the operator's informers do that (``informer.py``), because
kopf handles every watch event in a per-object worker (about 1 ms of CPU each, measured,
four events per new session), and because its indices wait for every object's worker
at start-up, which stalls for ever above ``queueing.worker_limit`` objects (kopf issue
#1243). Every kopf setting that differs from its default says why below.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import kopf

from .model import ANNOTATION_PREFIX

log = logging.getLogger(__name__)

Credentials = Callable[[], Coroutine[Any, Any, dict[str, Any]]]


def kopf_settings() -> kopf.OperatorSettings:
    config = kopf.OperatorSettings()
    # Leader election is ours (a Lease, with fencing); kopf's peering is not leader
    # election, so it is switched off.
    config.peering.standalone = True
    # kopf would list and watch Namespaces (with --namespace) and CRDs to find what to
    # serve; it serves no resources here, and the operator should need no RBAC for those.
    config.scanning.disabled = True
    # kopf keeps its own bookkeeping in annotations under our prefix, never in status
    # (no change-detecting handlers are registered, so in practice it writes none).
    config.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    config.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    config.persistence.finalizer = f"{ANNOTATION_PREFIX}/kopf"
    # Events are the operator's: one per transition. kopf's per-handler ones would be noise.
    config.posting.enabled = False
    config.networking.request_timeout = 60
    config.networking.connect_timeout = 10
    return config


def registry(credentials: Credentials) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # The same kubeconfig / in-cluster credentials the rest of the operator uses.
        return kopf.ConnectionInfo(**await credentials())

    return registry


class _NotOnMainThread(logging.Filter):
    """kopf warns that it ignores OS signals off the main thread: that is the point here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("OS signals are ignored")


class KopfThread:
    """kopf on a thread and event loop of its own.

    kopf assumes it owns its loop: it installs SIGINT/SIGTERM handlers (in the main
    thread), and when it stops it cancels every task created after it started. On its
    own thread it does neither to the operator, whose loop keeps its own signal handling
    and its orderly shutdown. What kopf needs of the operator (the credentials) it gets
    by running the operator's coroutine on the operator's loop.
    """

    def __init__(self, credentials: Credentials, namespaces: Sequence[str]) -> None:
        self._credentials = credentials
        self._namespaces = list(namespaces)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> asyncio.Future[None]:
        """Start kopf; the future resolves (in the caller's loop) when kopf has ended."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def report(error: BaseException | None) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        async def credentials() -> dict[str, Any]:
            return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._credentials(), loop))

        def main() -> None:
            error: BaseException | None = None
            try:
                asyncio.run(kopf.operator(
                    registry=registry(credentials),
                    settings=kopf_settings(),
                    standalone=True,
                    clusterwide=not self._namespaces,
                    namespaces=self._namespaces,
                    stop_flag=self._stop,
                ))
            except BaseException as e:  # reported to the operator's loop, which decides
                error = e
            if not loop.is_closed():
                loop.call_soon_threadsafe(report, error)

        logging.getLogger("kopf._core.reactor.running").addFilter(_NotOnMainThread())
        self._thread = threading.Thread(target=main, name="kopf", daemon=True)
        self._thread.start()
        return done

    async def stop(self, wait: float = 10.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, wait)
            if thread.is_alive():
                log.warning("kopf did not stop within %.0fs; leaving it to the process exit", wait)
