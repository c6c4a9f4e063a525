"""queue-truth: what it costs that waiting sessions never keep naming a holder that left.

On one target, ``n`` sessions wait (onConflict Queue) behind a holder; then the holder
changes ``changes`` times: complete the holder, wait until the head of the queue shows
Active, repeat. The emulator counts the status writes (``patch sessions/status``) of the
operator's user agent from the first change until every waiting session shows the true
holder and its exact position; the benchmark times that from the last change. The
operator runs with its default ``--queue-refresh-rate`` (R = 20 writes a second per
target).

The floor is what exact statuses need at the least: per change, the leaving holder, the
promoted head and the new head; then every session still waiting written once. For
scale, an operator that rewrote every waiting session at every change would write the
sum of the queue's lengths. The documented bound on the time: ceil(stale / R) seconds
after the last change (stale: waiting sessions that are not the head).

Counts need the emulator; on a real cluster only the time is measured.
"""

from __future__ import annotations

import math
import time
from typing import Any

from .apicalls import Counts
from .cluster import sessions_path
from .process import Operator
from .report import Row, secs
from .run import Run, client_for, workers
from .shapes import MERGE_PATCH, session_body
from .watch import SessionWatch

TARGET = "bench/queue-truth"
RATE = 20  # the operator's default --queue-refresh-rate
STATUS_WRITES = "patch sessions/status"


def _order(obj: dict[str, Any]) -> tuple[int, str, str]:
    meta = obj.get("metadata") or {}
    return (-int((obj.get("spec") or {}).get("priority") or 0), meta.get("creationTimestamp", ""), meta.get("name", ""))


async def queue_truth(run: Run, waiting: int, changes: int) -> None:
    async with run.server("queue-truth") as server, client_for(server) as client:
        counts = Counts(server) if run.real is None else None
        operator = Operator(server.kubeconfig, run.log_dir, name="operator-queue-truth").start()
        try:
            await operator.wait_ready(timeout=60)
            namespace = await server.new_namespace(client, "queue-truth")
            watch = await SessionWatch(client, namespace, keep_objects=True).start()
            try:
                result = await _measure(client, watch, counts, namespace, waiting, changes, operator.exited)
            finally:
                await watch.stop()
        finally:
            operator.stop()
    run.results["queue-truth"] = result
    run.violations["queue-truth"] = result["violations"]
    label = f"queue-truth ({waiting:,} waiting, {changes} holder changes)"
    writes, floor, naive = result["status_writes"], result["floor"], result["naive"]
    if writes is None:
        run.rows.append(Row(label, "status writes by the operator", "skipped: needs the emulator's request counts"))
    else:
        run.rows.append(Row(
            label,
            f"status writes by the operator, first change to all true (rewriting every waiting session at "
            f"every change: {naive:,})",
            f"{writes:,} ({result['writes_during_changes']:,} during the changes)",
            f"{floor:,} (per change: holder, promoted, new head; then each still waiting once)",
            f"{writes / floor:.2f}×", "–", None,
        ))
    bound = result["bound_seconds"]
    took = result["converged_seconds"]
    run.rows.append(Row(
        label,
        f"time from the last change until every waiting session shows the true holder and position "
        f"(R = {RATE}/s per target)",
        secs(took) if took is not None else "not within the limit",
        f"{bound} s (ceil({result['stale_after_last_change']:,} stale / {RATE}))",
        f"{took / bound:.2f}×" if took is not None and bound else "–",
        "≤ bound + 2 s",
        took is not None and took <= bound + 2,
    ))


async def _measure(
    client: Any, watch: SessionWatch, counts: Counts | None, namespace: str, waiting: int, changes: int,
    abort: Any,
) -> dict[str, Any]:
    path = sessions_path(namespace)

    def phase(name: str) -> str | None:
        return watch.phase.get((namespace, name))

    def queue() -> list[dict[str, Any]]:
        return sorted((o for (ns, _), o in watch.objects.items()
                       if ns == namespace and (o.get("status") or {}).get("phase") == "Queued"), key=_order)

    def true_everywhere(holder: str) -> bool:
        return all(
            ((o["status"].get("holder") or {}).get("name"), o["status"].get("queuePosition")) == (holder, position)
            for position, o in enumerate(queue(), start=1)
        )

    async def wait(condition: Any, what: str, within: float) -> None:
        if not await watch.until(condition, within, abort):
            raise TimeoutError(f"queue-truth: {what} not seen within {within:.0f}s")

    await client.ok("POST", path, json=session_body("holder", TARGET))
    await wait(lambda: phase("holder") == "Active", "the holder Active", 30)
    names = [f"w-{i:04d}" for i in range(waiting)]

    async def create(i: int) -> None:
        await client.ok("POST", path, json=session_body(names[i], TARGET, onConflict="Queue"))

    done, errors = await workers(waiting, 20, time.perf_counter() + 300, create)
    if done != waiting:
        raise RuntimeError(f"queue-truth: created {done} of {waiting}: {errors}")
    await wait(lambda: sum(1 for n in names if phase(n) == "Queued") == waiting, "every session Queued", 120)
    await wait(lambda: true_everywhere("holder"), "the first queue true", 120)
    before = await counts.quiet() if counts is not None else None

    holder = "holder"
    promotion_seconds: list[float] = []
    last_change = time.perf_counter()
    for _ in range(changes):
        head = queue()[0]["metadata"]["name"]
        last_change = time.perf_counter()
        await client.ok("PATCH", sessions_path(namespace, holder), json={"spec": {"state": "Completed"}},
                        content_type=MERGE_PATCH)
        await wait(lambda head=head: phase(head) == "Active", f"{head} promoted", 30)
        promotion_seconds.append(time.perf_counter() - last_change)
        holder = head
    during = counts.operator(await counts.snapshot()) if counts is not None else None
    stale = max(0, len(queue()) - 1)
    bound = math.ceil(stale / RATE)
    converged: float | None = None
    if await watch.until(lambda: true_everywhere(holder), bound * 3 + 60, abort):
        converged = time.perf_counter() - last_change
    after = await counts.quiet() if counts is not None else None
    remaining = waiting - changes
    floor = 3 * changes + remaining
    naive = sum(waiting - i for i in range(changes))
    writes = (after - before)[STATUS_WRITES] if after is not None and before is not None else None
    return {
        "waiting": waiting,
        "changes": changes,
        "rate": RATE,
        "status_writes": writes,
        "writes_during_changes": (during - before)[STATUS_WRITES] if during is not None and before is not None
        else None,
        "operator_requests": dict(after - before) if after is not None and before is not None else None,
        "floor": floor,
        "naive": naive,
        "stale_after_last_change": stale,
        "bound_seconds": bound,
        "converged_seconds": converged,
        "promotion_p50_seconds": sorted(promotion_seconds)[len(promotion_seconds) // 2] if promotion_seconds else None,
        "final_holder": holder,
        "still_wrong": 0 if converged is not None else sum(
            1 for position, o in enumerate(queue(), start=1)
            if ((o["status"].get("holder") or {}).get("name"), o["status"].get("queuePosition")) != (holder, position)
        ),
        "violations": len(watch.violations),
    }
