"""List, then watch: how sessions and claims reach the cache.

One ``Informer`` per resource and scope (all namespaces, or one watched namespace),
as client-go's reflector does it:

1. a paged LIST (``limit``/``continue``), page by page into the sink, so that a start
   with 100,000 sessions never holds more than one page of raw JSON;
2. a watch from the listing's resourceVersion, with bookmarks, which the server ends
   every few minutes (``timeoutSeconds``) and which is resumed from the last version
   seen;
3. on ``410 Gone`` (the version is too old), a new LIST: the sink replaces what it holds
   for that scope, and objects missing from the listing were deleted meanwhile.

Errors never end an informer: it waits (exponential backoff with jitter, capped at 30 s,
or at 2 s while the server cannot be reached at all) and tries again.
``synced`` is set once the first listing is in the sink. An informer made with
``absent_is_empty`` (SessionPolicies, whose CRD a chart upgrade does not install) takes a
404 for the resource itself as an empty listing: none can exist. It says so once, is
synced, and keeps looking, so that objects created once the CRD is installed are seen.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from .errors import ApiError

log = logging.getLogger(__name__)

PAGE_SIZE = 500
UNREACHABLE_BACKOFF = 2.0  # seconds, at most, between attempts while the server cannot be reached


class Listing(Protocol):
    def add(self, bodies: Iterable[Mapping[str, Any]]) -> None: ...

    def finish(self, list_rv: str) -> set[Any]: ...


class Sink(Protocol):
    """Where an informer puts what it reads (the cache, through a small adapter)."""

    def listing(self, namespace: str | None) -> Listing: ...

    def event(self, kind: str, body: Mapping[str, Any]) -> set[Any]: ...


class WatchApi(Protocol):
    async def request(self, method: str, path: str, *, query: Mapping[str, str] | None = None) -> dict[str, Any]: ...

    def watch(self, path: str, query: Mapping[str, str], *, idle_timeout: float) -> Any: ...


class Informer:
    def __init__(
        self,
        api: WatchApi,
        *,
        what: str,
        path: str,
        sink: Sink,
        changed: Callable[[set[Any]], None],
        namespace: str | None = None,
        label_selector: str | None = None,
        page_size: int = PAGE_SIZE,
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
        listed: Callable[[], None] | None = None,
        absent_is_empty: bool = False,
        absent_hint: str = "",
    ) -> None:
        self._api = api
        self.what = what if namespace is None else f"{what} in {namespace}"
        self._path = path
        self._sink = sink
        self._changed = changed
        self._namespace = namespace
        self._selector = label_selector
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._max_backoff = max_backoff
        self._listed = listed  # told of every full listing (the first, and one per 410)
        self.synced = asyncio.Event()
        self.lists = 0
        self._absent_is_empty = absent_is_empty
        self.absent = False  # the resource is not served (404), taken as empty
        # Said when the resource itself is not served (404 on the listing): what to install.
        self.absent_hint = absent_hint
        self.missing: str | None = None  # why it cannot list, while it cannot (None: it can)

    def _query(self, **extra: str) -> dict[str, str]:
        query = dict(extra)
        if self._selector:
            query["labelSelector"] = self._selector
        return query

    async def run(self) -> None:
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                    if self.missing is not None:
                        log.info("The API server serves %s now", self.what)
                        self.missing = None
                    if self.absent:
                        log.info("The API server serves %s now", self.what)
                        self.absent = False
                    self.synced.set()
                rv = await self._watch(rv)
                failures = 0
            except ApiError as e:
                if e.status == 410:
                    log.info("Listing %s again: the watch's version is too old (%s)", self.what, e.message)
                    rv = None
                    continue
                if e.status == 404 and self._absent_is_empty and rv is None:
                    if not self.absent:
                        log.warning("The API server does not serve %s (%s): taking it as none, and looking "
                                    "again every %.0fs", self.what, e.message, self._max_backoff)
                    self.absent = True
                    touched = self._sink.listing(self._namespace).finish("")
                    if touched:
                        self._changed(touched)
                    self.synced.set()
                    await asyncio.sleep(self._max_backoff)
                    continue
                failures += 1
                # A server that cannot be reached at all is asked again within a couple of
                # seconds however long it has been gone (a refused connection costs it
                # nothing), so that decisions resume within seconds of it coming back; a
                # server that answers with an error backs off up to max_backoff.
                ceiling = UNREACHABLE_BACKOFF if e.status == 0 else self._max_backoff
                delay = min(ceiling, 0.2 * 2 ** min(failures, 10)) * (0.5 + random.random() / 2)
                if e.status == 404 and rv is None and self.absent_hint:
                    self.missing = self.absent_hint
                    log.warning("%s (retrying in %.1fs)", self.absent_hint, delay)
                else:
                    log.warning("Failed to list or watch %s (retrying in %.1fs): %s", self.what, delay, e)
                await asyncio.sleep(delay)

    async def _list(self) -> str:
        listing = self._sink.listing(self._namespace)
        token = ""
        while True:
            query = self._query(limit=str(self._page_size))
            if token:
                query["continue"] = token
            page = await self._api.request("GET", self._path, query=query)
            listing.add(page.get("items") or ())
            metadata = page.get("metadata") or {}
            token = metadata.get("continue") or ""
            if not token:
                rv = str(metadata.get("resourceVersion") or "")
                break
        self.lists += 1
        if self._listed is not None:
            self._listed()
        touched = listing.finish(rv)
        if touched:
            self._changed(touched)
        return rv

    async def _watch(self, rv: str) -> str:
        # Like client-go: a server-side timeout between one and two times the minimum, so
        # that the watches of many replicas do not all end together.
        timeout = self._watch_timeout + random.randrange(self._watch_timeout + 1)
        query = self._query(resourceVersion=rv, allowWatchBookmarks="true", timeoutSeconds=str(timeout))
        async for event in self._api.watch(self._path, query, idle_timeout=timeout + 30):
            kind = event.get("type")
            body = event.get("object") or {}
            if kind == "ERROR":
                code, reason = int(body.get("code") or 0), str(body.get("reason") or "")
                raise ApiError(code, reason, str(body.get("message") or ""))
            rv = str((body.get("metadata") or {}).get("resourceVersion") or rv)
            if kind == "BOOKMARK" or kind not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            touched = self._sink.event(kind, body)
            if touched:
                self._changed(touched)
        return rv
