"""The work queue (``workqueue.WorkQueue``): one worker per key, coalescing, times.

Time is a fake clock the test moves. The queue's timer sleeps for the (fake) time left
until the next key is due, so due times here are milliseconds ahead: after the test
moves the clock, the timer looks again within that long. Tests wait for what they
expect (an event set by the work function, a condition polled on the loop), never for a
guessed amount of wall-clock time; "did not run yet" is judged after the timer has read
the clock again, i.e. after it had its chance.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from session_operator.workqueue import RetryLater, WorkQueue

TICK = 0.001  # how far ahead a "future" due time is: the timer re-reads the clock this often


class FakeClock:
    """Seconds since the epoch, moved by the test; counts reads so a test can wait until
    the queue's timer has looked at the time again."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.reads = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        self.reads += 1
        for waiter in [w for w in self._waiters if w[0] <= self.reads]:
            self._waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def read_again(self, times: int = 2) -> None:
        """Until the clock has been read ``times`` more times."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self.reads + times, future))
        await asyncio.wait_for(future, 5)


async def until(condition: Callable[[], bool], what: str = "", within: float = 5.0) -> None:
    """Wait, yielding to the loop, until ``condition()`` holds. A poll: the queue's own
    state (idle, due times) has no notification to wait on."""
    try:
        async with asyncio.timeout(within):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.0005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or condition}") from None


class Recorder:
    """A work function: records calls, can hold a key at a gate, answers from a script."""

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.count: Counter[Any] = Counter()
        self.running: Counter[Any] = Counter()
        self.max_running: Counter[Any] = Counter()
        self.gates: dict[Any, asyncio.Event] = {}
        self.started: dict[Any, asyncio.Event] = {}
        self.answers: dict[Any, list[Any]] = {}  # per key: a float/None to return, or an exception
        self.depth_seen: list[int] = []
        self.queue: WorkQueue[Any] | None = None

    def event(self, key: Any) -> asyncio.Event:
        return self.started.setdefault(key, asyncio.Event())

    async def __call__(self, key: Any) -> float | None:
        self.calls.append(key)
        self.count[key] += 1
        self.running[key] += 1
        self.max_running[key] = max(self.max_running[key], self.running[key])
        if self.queue is not None:
            self.depth_seen.append(self.queue.depth)
        self.event(key).set()
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            answers = self.answers.get(key)
            answer = answers.pop(0) if answers else None
            if isinstance(answer, BaseException):
                raise answer
            return answer
        finally:
            self.running[key] -= 1

    async def ran(self, key: Any, times: int) -> None:
        await until(lambda: self.count[key] >= times, f"{key!r} to run {times} times")


@contextlib.asynccontextmanager
async def running(queue: WorkQueue[Any]) -> AsyncIterator[WorkQueue[Any]]:
    task = asyncio.create_task(queue.run())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make(
    recorder: Recorder, clock: FakeClock | None = None, **kwargs: Any
) -> tuple[WorkQueue[Any], FakeClock]:
    clock = clock or FakeClock()
    kwargs.setdefault("workers", 4)
    queue: WorkQueue[Any] = WorkQueue(recorder, clock=clock, **kwargs)
    recorder.queue = queue
    return queue, clock


async def settled(queue: WorkQueue[Any]) -> None:
    await until(lambda: queue.idle, "the queue to be idle")


# --- one worker per key, coalescing ----------------------------------------------------


async def test_duplicates_coalesce_while_waiting() -> None:
    recorder = Recorder()
    queue, _ = make(recorder)
    for _ in range(3):
        queue.add("a")
    queue.add("b")
    assert queue.depth == 2
    assert not queue.idle
    async with running(queue):
        await recorder.ran("a", 1)
        await recorder.ran("b", 1)
        await settled(queue)
    # Idle with nothing due: nothing can run any more, so the counts are final.
    assert queue.deadlines == 0
    assert recorder.count == Counter({"a": 1, "b": 1})


async def test_one_worker_per_key_and_a_key_added_while_running_runs_again_after() -> None:
    recorder = Recorder()
    recorder.gates["a"] = gate = asyncio.Event()
    queue, _ = make(recorder, workers=4)
    async with running(queue):
        queue.add("a")
        await recorder.event("a").wait()
        recorder.started["a"] = asyncio.Event()  # to see the second run start
        queue.add("a")  # marked dirty, not handed to another worker
        queue.add("a")  # coalesces with the one above
        assert queue.depth == 0
        # Other keys still get the free workers meanwhile.
        queue.add("b")
        await recorder.ran("b", 1)
        assert recorder.count["a"] == 1
        assert not queue.idle
        gate.set()
        await recorder.event("a").wait()
        await settled(queue)
    assert recorder.count["a"] == 2  # the last change is never lost, and runs once
    assert recorder.max_running["a"] == 1


async def test_many_keys_run_at_once_up_to_the_workers() -> None:
    recorder = Recorder()
    gate = asyncio.Event()
    for key in range(5):
        recorder.gates[key] = gate
    queue, _ = make(recorder, workers=3)
    async with running(queue):
        for key in range(5):
            queue.add(key)
        await until(lambda: sum(recorder.running.values()) == 3, "three keys to run at once")
        assert queue.depth == 2
        gate.set()
        await settled(queue)
    assert recorder.count == Counter({key: 1 for key in range(5)})


async def test_depth_and_idle() -> None:
    recorder = Recorder()
    queue, clock = make(recorder)
    assert queue.idle and queue.depth == 0 and queue.deadlines == 0
    queue.add("a")
    queue.add_at("later", clock.now + 3600)
    assert queue.depth == 1 and not queue.idle and queue.deadlines == 1
    async with running(queue):
        await recorder.ran("a", 1)
        await settled(queue)
        assert queue.depth == 0 and queue.deadlines == 1
        assert queue.due_at("later") == clock.now + 3600
    assert "later" not in recorder.count


# --- times -------------------------------------------------------------------------------


def test_add_at_keeps_the_earlier_of_two_times() -> None:
    queue, clock = make(Recorder())
    t = clock.now
    queue.add_at("a", t + 10)
    queue.add_at("a", t + 20)  # later: the earlier stays
    assert queue.due_at("a") == t + 10
    queue.add_at("a", t + 5)  # earlier: replaces the pending later one
    assert queue.due_at("a") == t + 5
    assert queue.deadlines == 1
    assert queue.pop_due(t + 4) == []
    assert queue.pop_due(t + 5) == ["a"]
    # The replaced entries are gone with it: nothing more falls due later.
    assert queue.pop_due(t + 100) == []
    assert queue.deadlines == 0


def test_reschedule_replaces_the_time_and_none_clears_it() -> None:
    queue, clock = make(Recorder())
    t = clock.now
    queue.add_at("a", t + 5)
    queue.reschedule("a", t + 30)  # later: replaces all the same
    assert queue.due_at("a") == t + 30
    assert queue.pop_due(t + 10) == []
    queue.reschedule("a", None)
    assert queue.due_at("a") is None and queue.deadlines == 0
    assert queue.pop_due(t + 100) == []


def test_add_after_is_relative_to_the_clock_and_zero_means_now() -> None:
    queue, clock = make(Recorder())
    queue.add_after("a", 2.5)
    assert queue.due_at("a") == clock.now + 2.5
    assert queue.depth == 0
    queue.add_after("b", 0)
    assert queue.depth == 1 and queue.due_at("b") is None


def test_due_keys_come_in_time_order_and_in_batches() -> None:
    queue, clock = make(Recorder(), due_batch=50)
    t = clock.now
    for i in range(120):
        queue.add_at(i, t + i / 1000)
    queue.add_at("future", t + 3600)
    batches = []
    while batch := queue.pop_due(t + 1):
        batches.append(batch)
    assert [len(b) for b in batches] == [50, 50, 20]
    assert [key for batch in batches for key in batch] == list(range(120))
    assert queue.deadlines == 1 and queue.due_at("future") == t + 3600


async def test_the_timer_hands_due_keys_over_in_batches() -> None:
    recorder = Recorder()
    queue, clock = make(recorder, workers=1, due_batch=10)
    for i in range(35):
        queue.add_at(i, clock.now)
    async with running(queue):
        await until(lambda: len(recorder.calls) == 35, "every due key to run")
        await settled(queue)
    assert sorted(recorder.calls) == list(range(35))
    # The first key ran before the timer had handed over everything that was due.
    assert recorder.depth_seen[0] < 10


async def test_a_due_time_runs_the_key_when_the_clock_reaches_it() -> None:
    recorder = Recorder()
    queue, clock = make(recorder)
    queue.add_at("a", clock.now + TICK)
    async with running(queue):
        await clock.read_again(4)  # the timer looked at the time (twice) and waited
        assert recorder.count["a"] == 0
        clock.advance(TICK)
        await recorder.ran("a", 1)
        await settled(queue)
    assert queue.deadlines == 0


async def test_an_earlier_time_wakes_the_timer() -> None:
    recorder = Recorder()
    queue, clock = make(recorder)
    queue.add_at("a", clock.now + 3600)  # the timer would sleep for an hour
    async with running(queue):
        await clock.read_again(1)
        queue.add_at("a", clock.now)  # replaces it, and is due now
        await recorder.ran("a", 1)
        await settled(queue)
    assert queue.deadlines == 0


async def test_the_returned_next_due_time_replaces_any_pending_time() -> None:
    recorder = Recorder()
    recorder.gates["a"] = gate = asyncio.Event()
    queue, clock = make(recorder)
    due = clock.now + 3600
    recorder.answers["a"] = [due]
    async with running(queue):
        queue.add("a")
        await recorder.event("a").wait()
        queue.add_at("a", clock.now + 60)  # pending while it runs
        gate.set()
        await settled(queue)
        assert queue.due_at("a") == due  # what the run returned wins, even later
        assert recorder.count["a"] == 1


async def test_a_returned_none_clears_a_pending_time() -> None:
    recorder = Recorder()
    recorder.gates["a"] = gate = asyncio.Event()
    queue, clock = make(recorder)
    recorder.answers["a"] = [None]
    async with running(queue):
        queue.add("a")
        await recorder.event("a").wait()
        queue.add_at("a", clock.now + 60)
        gate.set()
        await settled(queue)
        assert queue.due_at("a") is None and queue.deadlines == 0


async def test_a_returned_time_runs_the_key_again_then() -> None:
    recorder = Recorder()
    queue, clock = make(recorder)
    recorder.answers["a"] = [clock.now + TICK, None]
    async with running(queue):
        queue.add("a")
        await recorder.ran("a", 1)
        await settled(queue)
        assert queue.due_at("a") == clock.now + TICK
        await clock.read_again(4)
        assert recorder.count["a"] == 1
        clock.advance(TICK)
        await recorder.ran("a", 2)
        await settled(queue)
    assert queue.deadlines == 0
    assert recorder.count["a"] == 2


# --- failures ----------------------------------------------------------------------------


async def fail_and_check_backoff(
    recorder: Recorder, queue: WorkQueue[Any], clock: FakeClock, key: Any, expected: list[float], *, start: int = 0
) -> None:
    """Runs ``start + 1``, ``start + 2``, ... fail; after each, the key is due ``expected[i]``
    later (on the fake clock), and the clock is moved there."""
    for i, delay in enumerate(expected):
        await recorder.ran(key, start + i + 1)
        await until(lambda: recorder.running[key] == 0 and queue.due_at(key) is not None, "the retry's time")
        assert queue.due_at(key) == pytest.approx(clock.now + delay), f"backoff after failure {start + i + 1}"
        clock.advance(delay)


async def test_failures_back_off_exponentially_up_to_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    queue, clock = make(recorder, base_backoff=0.001, max_backoff=0.006)
    recorder.answers["a"] = [ValueError("boom")] * 5 + [None]
    async with running(queue):
        queue.add("a")
        await fail_and_check_backoff(recorder, queue, clock, "a", [0.001, 0.002, 0.004, 0.006, 0.006])
        await recorder.ran("a", 6)
        await settled(queue)
        assert queue.due_at("a") is None
    assert "Failed to reconcile a" in caplog.text  # a bug is logged, not swallowed


async def test_retry_later_is_honoured_and_success_resets_the_backoff() -> None:
    recorder = Recorder()
    queue, clock = make(recorder, base_backoff=0.001, max_backoff=10.0)
    recorder.answers["a"] = [
        ValueError("first"),
        ValueError("second"),
        None,  # success: failures forgotten
        RetryLater("busy", delay=0.003),  # its own delay, not the backoff's
        ValueError("again"),
        None,
    ]
    async with running(queue):
        queue.add("a")
        await fail_and_check_backoff(recorder, queue, clock, "a", [0.001, 0.002])
        await recorder.ran("a", 3)
        await settled(queue)
        assert queue.due_at("a") is None
        queue.add("a")
        # RetryLater counts as a failure: the next plain failure backs off twice the base.
        await fail_and_check_backoff(recorder, queue, clock, "a", [0.003, 0.002], start=3)
        await recorder.ran("a", 6)
        await settled(queue)


async def test_retry_later_without_a_delay_backs_off() -> None:
    recorder = Recorder()
    queue, clock = make(recorder, base_backoff=0.001)
    recorder.answers["a"] = [RetryLater("conflict"), None]
    async with running(queue):
        queue.add("a")
        await fail_and_check_backoff(recorder, queue, clock, "a", [0.001])
        await recorder.ran("a", 2)
        await settled(queue)


async def test_a_failure_keeps_an_earlier_pending_time() -> None:
    recorder = Recorder()
    recorder.gates["a"] = gate = asyncio.Event()
    queue, clock = make(recorder, base_backoff=5.0)
    recorder.answers["a"] = [ValueError("boom")]
    async with running(queue):
        queue.add("a")
        await recorder.event("a").wait()
        queue.add_at("a", clock.now + 1)  # due before the backoff would end
        gate.set()
        await until(lambda: recorder.running["a"] == 0, "the failed run to end")
        assert queue.due_at("a") == clock.now + 1
