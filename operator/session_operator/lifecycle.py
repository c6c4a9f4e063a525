"""The one sweep behind every time-based transition: idle, max duration, archive, delete.

No per-object timers: each reconcile reports its target group's next due time, and the
sweep keeps those in a heap keyed by due time. It sleeps until the earliest one, then
hands the due targets to the reconcile queue (in bounded batches), where the arbiter —
given the current time — makes the transition. Targets with nothing due cost nothing:
no API call, no wake-up. The heap is rebuilt on start, because every target is
reconciled once when the operator's caches fill, so a restart loses no deadline and a
deadline that passed while the operator was down is acted on as soon as it is back.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Hashable
from datetime import UTC, datetime

from . import metrics

log = logging.getLogger(__name__)


class Sweep:
    def __init__(self, enqueue: Callable[[Hashable], None], *, batch_size: int = 50) -> None:
        self._enqueue = enqueue
        self._batch_size = batch_size
        self._heap: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}  # the live entry per key; older heap entries are stale
        self._counter = 0
        self._wake = asyncio.Event()

    def schedule(self, key: Hashable, due: datetime | None) -> None:
        """Record ``key``'s next due time (None: nothing due). Cheap; called after every reconcile."""
        if due is None:
            if self._due.pop(key, None) is not None:
                metrics.DEADLINES_PENDING.set(len(self._due))
            return
        when = due.timestamp()
        if self._due.get(key) == when:
            return
        self._due[key] = when
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, key))
        metrics.DEADLINES_PENDING.set(len(self._due))
        if self._heap[0][2] == key:
            self._wake.set()  # a new earliest deadline: re-arm the sleep
        # Stale heap entries are skipped when popped; compact if they pile up.
        if len(self._heap) > 4 * len(self._due) + 1024:
            self._heap = [(w, c, k) for (w, c, k) in self._heap if self._due.get(k) == w]
            heapq.heapify(self._heap)

    def next_due(self) -> float | None:
        while self._heap and self._due.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Hashable]:
        """The keys whose time has come, at most one batch; they leave the heap."""
        out: list[Hashable] = []
        while self._heap and len(out) < self._batch_size:
            when, _, key = self._heap[0]
            if self._due.get(key) != when:
                heapq.heappop(self._heap)
                continue
            if when > now:
                break
            heapq.heappop(self._heap)
            del self._due[key]
            out.append(key)
        metrics.DEADLINES_PENDING.set(len(self._due))
        return out

    async def run(self) -> None:
        while True:
            self._wake.clear()
            upcoming = self.next_due()
            if upcoming is None:
                await self._wake.wait()
                continue
            delay = upcoming - datetime.now(UTC).timestamp()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                    continue  # something earlier was scheduled
                except TimeoutError:
                    pass
            started = time.monotonic()
            due = self.pop_due(datetime.now(UTC).timestamp())
            for key in due:
                self._enqueue(key)
            metrics.SWEEP_DURATION.observe(time.monotonic() - started)
            if due:
                log.debug("Sweep handed %d due target(s) to the reconcile queue", len(due))
                await asyncio.sleep(0)  # bounded batches: let the workers run between them
