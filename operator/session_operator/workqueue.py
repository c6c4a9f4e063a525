"""One keyed, delaying work queue: reconciles now, retries later, deadlines at their time.

Like client-go's workqueue: each key is worked on by one worker at a time; adding a key
that is already waiting does nothing; adding a key that is being worked on marks it
dirty, so it runs again once the current run ends and the last change is never lost.

Time is part of the same queue, in one heap of (when, key), so there is one mechanism
for everything that must happen later:

* ``add_at`` / ``add_after``: run the key then, or earlier if it is already due earlier
  (a failed key backs off exponentially through this);
* the key's next deadline: what its latest successful run returned (seconds since the
  epoch, computed from the whole target group). It replaces whatever time the key had;
  ``None`` clears it.

Keys with nothing due cost nothing: no timer, no wake-up. Due keys are handed to the
workers in bounded batches, so a thousand deadlines falling due at once do not starve
new work.

Two lanes: ``add`` (a change just seen, a deadline, a retry) and ``add_resync`` (the
full resync a new leader makes of every target it knows). Workers always take from the
first lane before the second, so a session created while ten thousand targets are being
resynced is decided at once, not after them; a key waiting in the resync lane that
changes meanwhile moves to the first.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class RetryLater(Exception):
    """Raised by a worker to have its key tried again after ``delay`` seconds."""

    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class WorkQueue(Generic[K]):
    def __init__(
        self,
        process: Callable[[K], Awaitable[float | None]],
        *,
        workers: int,
        base_backoff: float = 0.05,
        max_backoff: float = 30.0,
        due_batch: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._process = process
        self._workers = workers
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        self._due_batch = due_batch
        self._clock = clock
        self._ready: deque[K] = deque()
        self._resync: deque[K] = deque()
        self._ready_event = asyncio.Event()
        self._waiting: dict[K, bool] = {}  # key -> in the resync lane; or dirty while running
        self._running: set[K] = set()
        self._failures: dict[K, int] = {}
        self._heap: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}  # the live time per key; older heap entries are stale
        self._seq = itertools.count()
        self._timer_wake = asyncio.Event()

    # --- adding ----------------------------------------------------------------------------

    def add(self, key: K) -> None:
        resync = self._waiting.get(key)
        if resync is False:
            return
        self._waiting[key] = False
        if key not in self._running:
            self._ready.append(key)  # (a copy left in the resync lane is skipped there)
            self._ready_event.set()

    def add_resync(self, key: K) -> None:
        """Like ``add``, in the second lane: after every change seen meanwhile."""
        if key in self._waiting:
            return
        self._waiting[key] = True
        if key not in self._running:
            self._resync.append(key)
            self._ready_event.set()

    def add_at(self, key: K, when: float) -> None:
        """Run ``key`` at ``when`` (seconds since the epoch), or earlier if already due earlier."""
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._set_due(key, when)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
        else:
            self.add_at(key, self._clock() + delay)

    def reschedule(self, key: K, when: float | None) -> None:
        """``key``'s next deadline, replacing any time it had; None: nothing due."""
        if when is None:
            self._due.pop(key, None)
        elif self._due.get(key) != when:
            self._set_due(key, when)

    def _set_due(self, key: K, when: float) -> None:
        self._due[key] = when
        heapq.heappush(self._heap, (when, next(self._seq), key))
        if self._heap[0][2] == key:
            self._timer_wake.set()  # a new earliest time: re-arm the timer
        if len(self._heap) > 4 * len(self._due) + 1024:  # compact stale entries
            self._heap = [entry for entry in self._heap if self._due.get(entry[2]) == entry[0]]
            heapq.heapify(self._heap)

    # --- reading ---------------------------------------------------------------------------

    @property
    def deadlines(self) -> int:
        """Keys with a time set (deadlines and pending retries)."""
        return len(self._due)

    def due_at(self, key: K) -> float | None:
        return self._due.get(key)

    @property
    def depth(self) -> int:
        """Keys waiting for a worker."""
        return len(self._waiting) - sum(1 for key in self._running if key in self._waiting)

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._running

    def pop_due(self, now: float) -> list[K]:
        """Keys whose time has come, at most one batch; they leave the heap."""
        out: list[K] = []
        heap = self._heap
        while heap and len(out) < self._due_batch:
            when, _, key = heap[0]
            if self._due.get(key) != when:
                heapq.heappop(heap)
                continue
            if when > now:
                break
            heapq.heappop(heap)
            del self._due[key]
            out.append(key)
        return out

    def _next_time(self) -> float | None:
        heap = self._heap
        while heap and self._due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the workers and the timer until cancelled."""
        tasks = [asyncio.create_task(self._worker(), name=f"reconcile-worker-{i}") for i in range(self._workers)]
        tasks.append(asyncio.create_task(self._timer(), name="reconcile-timer"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _timer(self) -> None:
        while True:
            self._timer_wake.clear()
            upcoming = self._next_time()
            if upcoming is None:
                await self._timer_wake.wait()
                continue
            delay = upcoming - self._clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._timer_wake.wait(), timeout=delay)
                    continue  # something earlier was scheduled
                except TimeoutError:
                    pass
            due = self.pop_due(self._clock())
            for key in due:
                self.add(key)
            if due:
                await asyncio.sleep(0)  # bounded batches: let the workers run between them

    async def _next(self) -> K:
        while True:
            if self._ready:
                return self._ready.popleft()
            while self._resync:
                key = self._resync.popleft()
                if self._waiting.get(key) is True and key not in self._running:
                    return key  # otherwise it moved to the first lane, or runs already
            self._ready_event.clear()
            await self._ready_event.wait()

    async def _worker(self) -> None:
        while True:
            key = await self._next()
            self._waiting.pop(key, None)
            self._running.add(key)
            try:
                next_due = await self._process(key)
            except asyncio.CancelledError:
                raise
            except RetryLater as e:
                self._retry(key, e.delay, str(e))
            except Exception as e:  # a bug must not stop the operator: log, back off, retry
                log.exception("Failed to reconcile %s; retrying", key)
                self._retry(key, None, repr(e))
            else:
                self._failures.pop(key, None)
                self.reschedule(key, next_due)
            finally:
                self._running.discard(key)
                resync = self._waiting.get(key)
                if resync is not None:
                    (self._resync if resync else self._ready).append(key)
                    self._ready_event.set()

    def _retry(self, key: K, delay: float | None, why: str) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        if delay is None:
            delay = min(self._max_backoff, self._base_backoff * (2 ** (failures - 1)))
        log.info("Retrying %s in %.2fs: %s", key, delay, why)
        self.add_after(key, delay)
