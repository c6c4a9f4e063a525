"""The operator's parts in the test's own event loop, against an in-process API emulator.

``InLoopOperator`` gets cache, informers, reconciler, executor, event poster and work
queue from ``runtime.build``, the same assembly the process runs, with a real
``kube.Kube`` client and the operator's own ``Settings``, but without kopf and without
leader election: it leads from the moment its cache is filled, starting with the same
resync (``Parts.resync``). What the component tier adds, and nothing more:

* each informer feeds the cache through a ``Valve``, which can hold watch events back
  (a lagging watch) and deliver them later, so a test can make the cache stale on
  purpose; listings always go through;
* reconcile failures that are not ``RetryLater`` (a bug) are recorded and fail the test
  at teardown, instead of only being logged and retried;
* ``settled()`` waits until the cache holds every session and claim at the version the
  API server has, and nothing is queued, running or waiting for a retry.

``RuleWatcher`` is ``support.watcher.InvariantWatcher`` with watches that start at a
listing (what exists is seen as ADDED, nothing after it is missed, nothing to wait for)
and that end once both have seen the server's version at exit (the emulator sends
bookmarks often).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from session_operator import paths
from session_operator.cache import TargetKey
from session_operator.informer import Informer, Listing, Sink
from session_operator.kube import Kube
from session_operator.metrics import Metrics
from session_operator.runtime import CLAIM_SELECTOR, build
from session_operator.settings import Settings
from session_operator.workqueue import RetryLater
from support.watcher import InvariantWatcher


async def until(condition: Callable[[], Any], what: str, within: float = 10.0, interval: float = 0.01) -> Any:
    """Poll ``condition`` (plain or async) until it returns something truthy."""
    try:
        async with asyncio.timeout(within):
            while True:
                result = condition()
                if asyncio.iscoroutine(result):
                    result = await result
                if result:
                    return result
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from None


class Valve:
    """Between an informer and the cache: ``hold()`` keeps watch events back, as a watch
    that lags behind; ``release()`` delivers them in order. Listings always pass."""

    def __init__(self, sink: Sink, changed: Callable[[set[Any]], None]) -> None:
        self._sink = sink
        self._changed = changed
        self._held: list[tuple[str, Mapping[str, Any]]] | None = None

    def listing(self, namespace: str | None) -> Listing:
        return self._sink.listing(namespace)

    def event(self, kind: str, body: Mapping[str, Any]) -> set[Any]:
        if self._held is not None:
            self._held.append((kind, body))
            return set()
        return self._sink.event(kind, body)

    @property
    def held(self) -> list[tuple[str, Mapping[str, Any]]]:
        return list(self._held or ())

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> None:
        held, self._held = self._held or [], None
        for kind, body in held:
            touched = self._sink.event(kind, body)
            if touched:
                self._changed(touched)


class InLoopOperator:
    def __init__(
        self,
        kube: Kube,
        *,
        namespaces: Sequence[str] = (),
        identity: str = "component-test",
        **settings: Any,
    ) -> None:
        """``settings``: any of the operator's settings (``workers``, ``queue_refresh_rate``, ...)."""
        self.kube = kube
        self.namespaces = list(namespaces)
        self.settings = Settings(namespaces=self.namespaces, **settings)
        self.metrics = Metrics()
        self.failures: list[tuple[TargetKey, BaseException]] = []  # bugs: not RetryLater
        self.retrying: set[TargetKey] = set()
        self.reconciles = 0
        self.sessions_valves: list[Valve] = []
        self.claims_valves: list[Valve] = []
        self.parts = build(
            self.settings, kube, metrics=self.metrics, sink_wrap=self._valve,
            process_wrap=self._recording, identity=identity,
        )
        self.cache = self.parts.cache
        self.events = self.parts.events
        self.reconciler = self.parts.reconciler
        self.queue = self.parts.queue
        self.informers = self.parts.informers
        self._tasks: list[asyncio.Task[Any]] = []

    def _valve(self, what: str, sink: Sink) -> Sink:
        if what == "sessionpolicies":
            return sink
        valve = Valve(sink, self.parts_changed)
        (self.sessions_valves if what == "sessions" else self.claims_valves).append(valve)
        return valve

    def parts_changed(self, keys: set[Any]) -> None:
        self.parts.changed(keys)

    def _recording(self, reconcile: Any) -> Any:
        self._reconcile_inner = reconcile
        return self._reconcile

    async def _reconcile(self, key: TargetKey) -> float | None:
        self.reconciles += 1
        try:
            due = await self._reconcile_inner(key)
        except RetryLater:
            self.retrying.add(key)
            raise
        except Exception as e:
            self.failures.append((key, e))
            raise
        self.retrying.discard(key)
        return due

    # --- running -------------------------------------------------------------------------

    async def start(self) -> InLoopOperator:
        self._tasks = [asyncio.create_task(i.run(), name=f"informer {i.what}") for i in self.informers]
        await until(lambda: self.parts.synced, "the cache to be filled")
        self.parts.leading = True
        self._tasks.append(asyncio.create_task(self.queue.run(), name="work-queue"))
        self._tasks.append(asyncio.create_task(self.events.run(), name="event-poster"))
        self.parts.resync()  # as runtime.Operator does when it starts leading
        return self

    async def stop(self) -> None:
        self.parts.leading = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def check(self) -> None:
        """Raise if a reconcile failed with a bug, or a part of the operator ended."""
        ended = [t for t in self._tasks if t.done() and not t.cancelled()]
        problems = [f"{t.get_name()} ended: {t.exception()!r}" for t in ended]
        problems += [f"reconcile {key} failed: {error!r}" for key, error in self.failures]
        if problems:
            raise AssertionError("\n".join(problems))

    @property
    def session_informers(self) -> list[Informer]:
        return [i for i in self.informers if i.what.startswith("sessions")]

    # --- holding the watch back ------------------------------------------------------------

    def hold_sessions(self) -> None:
        for valve in self.sessions_valves:
            valve.hold()

    def release_sessions(self) -> None:
        for valve in self.sessions_valves:
            valve.release()

    def hold_claims(self) -> None:
        for valve in self.claims_valves:
            valve.hold()

    def release_claims(self) -> None:
        for valve in self.claims_valves:
            valve.release()

    # --- waiting -------------------------------------------------------------------------

    def known(self) -> tuple[dict[str, str], dict[TargetKey, str]]:
        """What the cache holds: session uid -> resourceVersion, claim key -> resourceVersion."""
        sessions: dict[str, str] = {}
        claims: dict[TargetKey, str] = {}
        for key in set(self.cache.keys()):
            for view in self.cache.sessions(key):
                sessions[view.uid] = view.resource_version
            claim = self.cache.claim(key)
            if claim is not None:
                claims[key] = claim.resource_version
        return sessions, claims

    async def served(self) -> tuple[dict[str, str], dict[TargetKey, str]]:
        """What the API server holds, in the namespaces this operator watches."""
        sessions: dict[str, str] = {}
        claims: dict[TargetKey, str] = {}
        scopes: list[str | None] = list(self.namespaces) or [None]
        for namespace in scopes:
            listing = await self.kube.request("GET", paths.sessions(namespace))
            for item in listing.get("items") or ():
                sessions[item["metadata"]["uid"]] = item["metadata"]["resourceVersion"]
            leases = await self.kube.request(
                "GET", paths.leases(namespace), query={"labelSelector": CLAIM_SELECTOR}
            )
            for item in leases.get("items") or ():
                metadata = item["metadata"]
                target = (metadata.get("annotations") or {}).get("session-operator.io/target")
                if target:
                    claims[(metadata["namespace"], target)] = metadata["resourceVersion"]
        return sessions, claims

    def quiet(self) -> bool:
        return self.queue.idle and not self.retrying

    async def settled(self, within: float = 10.0) -> None:
        """Until the cache matches the API server and there is no work left but deadlines."""

        async def caught_up() -> bool:
            if not self.quiet():
                return False
            served = await self.served()
            return self.quiet() and served == self.known()

        await until(caught_up, "the operator to settle", within=within)


class RuleWatcher(InvariantWatcher):
    """Rule 1 over every session and claim event of one namespace, as an outside watcher
    sees them; see ``support.watcher``. Starts with a listing of each and watches from
    it; on exit, reads until both watches have reached the version the server had then."""

    def __init__(self, kube: Any, namespace: str) -> None:
        super().__init__(kube, namespace)
        self._reached: dict[str, int] = {}
        self.gaps = 0  # watches that had to start over (410): events may be missing

    async def _current_rv(self) -> str:
        status, listing = await self.kube.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases", params={"limit": "1"}
        )
        assert status == 200, (status, listing)
        return str(listing["metadata"]["resourceVersion"])

    async def _list(self, path: str, handler: Any) -> str:
        """What exists already, as ADDED events (as a reflector starts); the list's version."""
        status, listing = await self.kube.request("GET", path)
        assert status == 200, (status, listing)
        for item in listing.get("items") or ():
            handler("ADDED", item)
        return str(listing["metadata"]["resourceVersion"])

    async def __aenter__(self) -> RuleWatcher:
        sessions = f"/apis/session-operator.io/v1alpha1/namespaces/{self.namespace}/sessions"
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        sessions_rv = await self._list(sessions, self._on_session)
        leases_rv = await self._list(leases, self._on_lease)
        self._tasks = [
            asyncio.create_task(self._follow_from(sessions, self._on_session, sessions_rv)),
            asyncio.create_task(self._follow_from(leases, self._on_lease, leases_rv)),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            end = int(await self._current_rv())
            await until(
                lambda: len(self._reached) == 2 and min(self._reached.values()) >= end,
                "the watcher to reach the server's version",
            )
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _follow_from(self, path: str, handler: Any, rv: str) -> None:
        while True:
            try:
                query = {"resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "60"}
                async for event in self.kube.watch(path, query):
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        self.gaps += 1
                        rv = await self._current_rv()
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    self._reached[path] = int(rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        handler(kind, obj)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.05)

    def check(self) -> None:
        assert not self.gaps, f"the watcher missed events ({self.gaps} restarts after 410)"
        super().check()

    def phases(self, name: str) -> list[str | None]:
        """The phases ``name`` was seen in, in order, repeats collapsed."""
        out: list[str | None] = []
        for _, _, _, uid, phase, deleted in sorted(self.seen.session_versions):
            if self.names.get(uid) == name and not deleted and (not out or out[-1] != phase):
                out.append(phase)
        return out
