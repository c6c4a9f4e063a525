"""In-memory storage: objects, one global resourceVersion counter, bounded per-resource
event history (the "watch cache") and the live watchers fed from it."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import expired

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(slots=True)
class Event:
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None
    namespace: str


class Watcher:
    """One open watch: a queue of (type, object) fed by the bucket it watches."""

    MAX_BACKLOG = 200_000

    def __init__(
        self,
        namespace: str | None,
        predicate: Callable[[dict[str, Any]], bool] | None,
        min_rv: int,
    ) -> None:
        self.namespace = namespace
        self.predicate = predicate
        self.min_rv = min_rv
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        self.closed = False
        self.abort = False

    def push(self, kind: str, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        if self.queue.qsize() > self.MAX_BACKLOG:  # a stuck client: end its watch like the cacher
            self.close()
            return
        self.queue.put_nowait((kind, obj))

    def close(self, abort: bool = False) -> None:
        if not self.closed:
            self.closed = True
            self.abort = abort
            self.queue.put_nowait(None)

    def offer(self, event: Event) -> None:
        if event.rv <= self.min_rv:
            return
        if self.namespace is not None and event.namespace != self.namespace:
            return
        predicate = self.predicate
        if predicate is None:
            self.push(event.type, event.obj)
            return
        if event.type == ADDED:
            if predicate(event.obj):
                self.push(ADDED, event.obj)
        elif event.type == DELETED:
            if predicate(event.obj):
                self.push(DELETED, event.obj)
        else:
            now = predicate(event.obj)
            before = event.old is not None and predicate(event.old)
            if now and before:
                self.push(MODIFIED, event.obj)
            elif now:
                self.push(ADDED, event.obj)
            elif before:
                self.push(DELETED, event.obj)


@dataclass
class Bucket:
    """All objects of one stored resource (e.g. ``("example.test", "widgets")``)."""

    history_size: int
    floor: int  # every event with rv > floor is still in `history`
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # ns -> name -> obj
    history: collections.deque[Event] = field(default_factory=collections.deque)
    watchers: set[Watcher] = field(default_factory=set)
    count: int = 0
    version: int = 0  # bumped on every change: what a cached list order was made at
    _orders: dict[str | None, tuple[int, list[str], list[dict[str, Any]]]] = field(default_factory=dict)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        names = self.objects.get(namespace)
        return names.get(name) if names else None

    def iter_objects(self, namespace: str | None) -> Iterator[dict[str, Any]]:
        if namespace is not None:
            yield from (self.objects.get(namespace) or {}).values()
        else:
            for names in self.objects.values():
                yield from names.values()

    def sorted_objects(
        self, namespace: str | None, key: Callable[[dict[str, Any]], str]
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """The objects (of one namespace, or all) in list order, with their sort keys.

        Kept until the next change, so that the pages of one paged LIST of N objects cost
        one sort, not one each (which made a LIST of 100,000 quadratic)."""
        cached = self._orders.get(namespace)
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        pairs = sorted(((key(obj), obj) for obj in self.iter_objects(namespace)), key=lambda kv: kv[0])
        keys, objs = [k for k, _ in pairs], [o for _, o in pairs]
        self._orders = {namespace: (self.version, keys, objs)}  # one order at a time is enough
        return keys, objs

    def record(self, event: Event) -> None:
        self.version += 1
        if self.history_size <= 0:
            self.floor = event.rv
        else:
            while len(self.history) >= self.history_size:
                self.floor = self.history.popleft().rv
            self.history.append(event)
        for watcher in list(self.watchers):
            watcher.offer(event)


class Store:
    def __init__(self, history_size: int = 2000) -> None:
        self.rv = 1
        self.history_size = history_size
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.uids: set[str] = set()

    def bucket(self, key: tuple[str, str]) -> Bucket:
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = Bucket(history_size=self.history_size, floor=self.rv)
            self.buckets[key] = bucket
        return bucket

    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, key: tuple[str, str], obj: dict[str, Any], old: dict[str, Any] | None, rv: int) -> None:
        meta = obj["metadata"]
        namespace = meta.get("namespace", "")
        bucket = self.bucket(key)
        names = bucket.objects.setdefault(namespace, {})
        if meta["name"] not in names:
            bucket.count += 1
            self.uids.add(meta["uid"])
        names[meta["name"]] = obj
        bucket.record(Event(rv, MODIFIED if old is not None else ADDED, obj, old, namespace))

    def remove(self, key: tuple[str, str], last: dict[str, Any], rv: int) -> None:
        """Remove an object; ``last`` is the stored state re-stamped with the deletion rv."""
        meta = last["metadata"]
        namespace = meta.get("namespace", "")
        bucket = self.bucket(key)
        names = bucket.objects.get(namespace)
        if names and names.pop(meta["name"], None) is not None:
            bucket.count -= 1
            self.uids.discard(meta["uid"])
            if not names:
                del bucket.objects[namespace]
        bucket.record(Event(rv, DELETED, last, last, namespace))

    def drop_bucket(self, key: tuple[str, str]) -> None:
        bucket = self.buckets.pop(key, None)
        if bucket is not None:
            for obj in bucket.iter_objects(None):
                self.uids.discard(obj["metadata"]["uid"])
            for watcher in list(bucket.watchers):
                watcher.close()

    def watch(
        self,
        key: tuple[str, str],
        namespace: str | None,
        predicate: Callable[[dict[str, Any]], bool] | None,
        since: int | None,
    ) -> tuple[Watcher, list[tuple[str, dict[str, Any]]]]:
        """Open a watch; returns the watcher and the backlog to send first.

        ``since=None`` means "from now, after synthetic ADDED events for what exists".
        """
        bucket = self.bucket(key)
        backlog: list[tuple[str, dict[str, Any]]] = []
        if since is None:
            objs = list(bucket.iter_objects(namespace))
            objs.sort(key=_sort_key)
            for obj in objs:
                if predicate is None or predicate(obj):
                    backlog.append((ADDED, obj))
            watcher = Watcher(namespace, predicate, self.rv)
        else:
            if since < bucket.floor:
                raise expired(f"too old resource version: {since} ({bucket.floor})")
            watcher = Watcher(namespace, predicate, since)
            collector = _Collector()
            collector.namespace, collector.predicate, collector.min_rv = namespace, predicate, since
            for event in bucket.history:
                if event.rv > since:
                    collector.offer(event)
            backlog = collector.items
            watcher.min_rv = max(since, self.rv)
        bucket.watchers.add(watcher)
        return watcher, backlog

    def unwatch(self, key: tuple[str, str], watcher: Watcher) -> None:
        bucket = self.buckets.get(key)
        if bucket is not None:
            bucket.watchers.discard(watcher)

    def all_watchers(self) -> list[Watcher]:
        return [w for b in self.buckets.values() for w in b.watchers]

    def compact(self) -> None:
        """Forget all history: any watch from an older resourceVersion gets 410 Gone."""
        for bucket in self.buckets.values():
            bucket.history.clear()
            bucket.floor = self.rv

    def set_history_size(self, size: int) -> None:
        self.history_size = size
        for bucket in self.buckets.values():
            bucket.history_size = size
            while len(bucket.history) > max(size, 0):
                bucket.floor = bucket.history.popleft().rv
            if size <= 0:
                bucket.floor = self.rv


class _Collector(Watcher):
    def __init__(self) -> None:  # no queue needed
        self.items: list[tuple[str, dict[str, Any]]] = []
        self.closed = False

    def push(self, kind: str, obj: dict[str, Any]) -> None:
        self.items.append((kind, obj))


def _sort_key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    namespace = meta.get("namespace", "")
    return f"{namespace}/{meta['name']}" if namespace else meta["name"]


sort_key = _sort_key
