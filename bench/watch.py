"""The benchmark's watch on sessions: when each was first seen decided, and watch safety.

One watch (a namespace, or all namespaces) from a given resourceVersion. For every
session it keeps the phase it shows now, the first moment (``time.perf_counter()``) it
showed a decided phase (``status.phase`` set, and not ``Pending``), and, per namespace and
target, which sessions show ``Active``: whenever a target has two at once in the event
stream (which is in the server's resourceVersion order), that is a violation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .cluster import SESSIONS, BenchClient, sessions_path

Key = tuple[str, str]  # (namespace, name)


class SessionWatch:
    def __init__(self, client: BenchClient, namespace: str | None = None, *, keep_objects: bool = False) -> None:
        self.client = client
        self.path = sessions_path(namespace) if namespace else SESSIONS
        self.keep_objects = keep_objects
        self.phase: dict[Key, str | None] = {}
        self.target: dict[Key, str] = {}
        self.objects: dict[Key, dict[str, Any]] = {}
        self.decided_at: dict[Key, float] = {}
        self.modified: dict[Key, int] = defaultdict(int)  # MODIFIED events seen per session
        self.active: dict[tuple[str, str], set[str]] = defaultdict(set)
        self.violations: list[str] = []
        self.waiting: set[Key] = set()  # keys not decided yet, for until_decided()
        self.events = 0
        self.rv = ""
        self.error: str | None = None
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, since: str | None = None) -> SessionWatch:
        """Follow from ``since`` (default: now, from a one-item listing's resourceVersion)."""
        if since is None:
            page = await self.client.ok("GET", self.path, params={"limit": "1"})
            since = str(page["metadata"]["resourceVersion"])
        self.rv = since
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0.05)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            params = {"resourceVersion": self.rv, "timeoutSeconds": "3600", "allowWatchBookmarks": "true"}
            try:
                async for event in self.client.watch(self.path, params):
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    if kind == "ERROR":
                        self.error = f"watch error: {obj.get('code')} {obj.get('reason')} {obj.get('message')}"
                        self._changed.set()
                        return
                    self.rv = str((obj.get("metadata") or {}).get("resourceVersion") or self.rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._on(kind, obj)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a dropped connection: resume from the last version seen
                self.error = None
                await asyncio.sleep(0.2)
                _ = exc

    def _on(self, kind: str, obj: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.events += 1
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        target = (obj.get("spec") or {}).get("target", "")
        phase = None if kind == "DELETED" else (obj.get("status") or {}).get("phase")
        before = self.phase.get(key)
        if kind == "MODIFIED":
            self.modified[key] += 1
        self.target[key] = target
        if kind == "DELETED":
            self.phase.pop(key, None)
            self.objects.pop(key, None)
        else:
            self.phase[key] = phase
            if self.keep_objects:
                self.objects[key] = obj
        if phase and phase != "Pending" and key not in self.decided_at:
            self.decided_at[key] = now
            self.waiting.discard(key)
        group = self.active[(key[0], target)]
        if before == "Active" and phase != "Active":
            group.discard(key[1])
        if phase == "Active":
            group.add(key[1])
            if len(group) > 1:
                self.violations.append(
                    f"target {target!r} in {key[0]} shows {len(group)} Active sessions at resourceVersion "
                    f"{meta.get('resourceVersion')}: {', '.join(sorted(group)[:5])}"
                )
        self._changed.set()

    async def until(
        self, condition: Callable[[], bool], timeout: float, abort: Callable[[], str | None] | None = None
    ) -> bool:
        """Wait until ``condition()`` holds (checked after each batch of events, and at least
        every second); False on timeout. ``abort()`` returning a reason (say, the operator
        exited) raises at once instead of waiting out the timeout."""
        deadline = time.perf_counter() + timeout
        while not condition():
            if self.error:
                raise RuntimeError(self.error)
            reason = abort() if abort is not None else None
            if reason:
                raise RuntimeError(reason)
            left = deadline - time.perf_counter()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True

    def expect(self, keys: list[Key]) -> None:
        """Add keys for :meth:`until_decided` (those already decided are not waited for)."""
        self.waiting.update(k for k in keys if k not in self.decided_at)

    async def until_decided(self, timeout: float, abort: Callable[[], str | None] | None = None) -> bool:
        return await self.until(lambda: not self.waiting, timeout, abort)
