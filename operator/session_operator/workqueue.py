"""A keyed work queue: each key is worked on by one worker at a time, duplicates coalesce.

Like client-go's workqueue: adding a key that is already waiting does nothing; adding a
key that is being worked on marks it dirty, and it runs again once the current run ends,
so the last change is never lost and no key is reconciled twice at once. Failed keys
come back after an exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
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
        process: Callable[[K], Awaitable[None]],
        *,
        workers: int,
        base_backoff: float = 0.05,
        max_backoff: float = 30.0,
    ) -> None:
        self._process = process
        self._workers = workers
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._waiting: set[K] = set()
        self._running: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff

    def add(self, key: K) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._waiting:
            return
        self._waiting.add(key)
        if key not in self._running:
            self._queue.put_nowait(key)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        if key in self._timers or key in self._waiting:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        tasks = [asyncio.create_task(self._worker(), name=f"reconcile-worker-{i}") for i in range(self._workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._waiting.discard(key)
            self._running.add(key)
            try:
                await self._process(key)
            except asyncio.CancelledError:
                raise
            except RetryLater as e:
                self._retry(key, e.delay, str(e))
            except Exception as e:  # a bug must not stop the operator: log, back off, retry
                log.exception("Failed to reconcile %s; retrying", key)
                self._retry(key, None, repr(e))
            else:
                self._failures.pop(key, None)
            finally:
                self._running.discard(key)
                if key in self._waiting:
                    self._queue.put_nowait(key)

    def _retry(self, key: K, delay: float | None, why: str) -> None:
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        if delay is None:
            delay = min(self._max_backoff, self._base_backoff * (2 ** (failures - 1)))
        log.info("Retrying %s in %.2fs: %s", key, delay, why)
        self.add_after(key, delay)
