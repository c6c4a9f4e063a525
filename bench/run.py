"""What every case shares: sizes, the server to use, the status templates, and the output."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .cluster import BenchClient, RealCluster, Server, server_for
from .report import Row
from .shapes import Templates, builtin_templates, calibrate

T = TypeVar("T")


@dataclass
class Sizes:
    startup: list[int]
    burst_small: int
    burst_large: int
    queue: int
    isolated_warmup: int
    isolated_samples: int
    requests_reps: int
    decide: int
    queue_truth_waiting: int = 1000
    queue_truth_changes: int = 100
    concurrency: int = 20

    @classmethod
    def full(cls) -> Sizes:
        return cls(startup=[10_000], burst_small=1000, burst_large=5000, queue=1000, isolated_warmup=20,
                   isolated_samples=200, requests_reps=50, decide=1000)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(startup=[400], burst_small=100, burst_large=300, queue=100, isolated_warmup=5,
                   isolated_samples=30, requests_reps=10, decide=1000, queue_truth_waiting=200,
                   queue_truth_changes=20)


@dataclass
class Run:
    sizes: Sizes
    workdir: Path
    real: RealCluster | None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=dict)  # case -> two-Active moments seen
    templates: Templates | None = None

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def server(self, label: str) -> contextlib.AbstractAsyncContextManager[Server]:
        return server_for(label, self.log_dir, self.real)

    async def ensure_templates(self, server: Server) -> Templates:
        """The operator's status shapes, learnt once per run (see shapes.calibrate)."""
        if self.templates is None:
            try:
                self.templates = (await calibrate(server, self.log_dir)).templates
            except Exception as exc:  # measure anyway, and say so
                self.templates = builtin_templates(repr(exc))
                self.notes.append(f"status templates: built-in copy used, calibration failed: {exc!r}")
        return self.templates

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)


@contextlib.asynccontextmanager
async def client_for(server: Server) -> AsyncIterator[BenchClient]:
    client = server.client()
    try:
        yield client
    finally:
        await client.close()


async def workers(
    count: int, concurrency: int, deadline: float, one: Callable[[int], Awaitable[None]]
) -> tuple[int, list[str]]:
    """Run ``one(i)`` for i in 0..count-1 with ``concurrency`` tasks, in order of i; stops by
    itself at ``count`` or at ``deadline`` (perf_counter time). Returns how many ran, and the
    first few errors (a failed item does not stop the others)."""
    next_index = 0
    done = 0
    errors: list[str] = []

    async def worker() -> None:
        nonlocal next_index, done
        while next_index < count and time.perf_counter() < deadline:
            i = next_index
            next_index += 1
            try:
                await one(i)
                done += 1
            except Exception as exc:
                if len(errors) < 5:
                    errors.append(f"#{i}: {exc!r}"[:300])

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    return done, errors
