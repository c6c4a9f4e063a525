"""API requests per decision, counted by the emulator for the operator's user agent.

For each kind of decision, repetitions in targets of their own, in batches: set the
batch up (not counted), wait until the operator is quiet, take the emulator's counts, act,
wait for the outcome on the watch and for the operator to be quiet again, take the counts
again; the difference, summed over batches and divided by the repetitions, is what one
decision costs. The floor is what the decision has to write: the state change itself,
plus the one Event per transition that the contract asks for.

Emulator only: a real API server does not count requests per client for us.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .cluster import BenchClient, Server, sessions_path
from .process import AGENT_PREFIX, Operator
from .report import Row
from .run import Run, client_for
from .shapes import MERGE_PATCH, session_body
from .watch import SessionWatch

ACTIVITY = "session-operator.io/last-activity"


@dataclass
class Scenario:
    key: str
    title: str
    minimum: int
    minimum_text: str


SCENARIOS = [
    Scenario("free", "new session, free target → Active", 3, "claim create + status + 1 Event"),
    Scenario("reject", "new session, busy target → Rejected", 2, "status + 1 Event"),
    Scenario("queue", "new session, busy target → Queued", 2, "status + 1 Event"),
    Scenario("promotion", "holder Completed → queue head Active", 4,
             "2 statuses + claim update + 1 Event"),
    Scenario("replace", "onConflict Replace → new Active, old Replaced", 5,
             "2 statuses + claim update + 2 Events"),
    Scenario("activity", "last-activity annotation → status.lastActivityTime", 1, "status"),
    Scenario("idle", "idleTimeout 2s passes → Abandoned", 3, "status + claim delete + 1 Event"),
]


class Counts:
    """The emulator's request counts, per client."""

    def __init__(self, server: Server) -> None:
        self.control = server.control

    async def snapshot(self) -> dict[str, Counter[str]]:
        counts = await asyncio.to_thread(self.control.request_counts)
        return {agent: Counter(by_key) for agent, by_key in counts["byAgent"].items()}

    @staticmethod
    def operator(snapshot: dict[str, Counter[str]]) -> Counter[str]:
        total: Counter[str] = Counter()
        for agent, by_key in snapshot.items():
            if agent.startswith(AGENT_PREFIX):
                total.update(by_key)
        return total

    async def quiet(self, still: float = 0.75, limit: float = 15.0) -> Counter[str]:
        """Wait until the operator has made no request for ``still`` seconds (at most ``limit``)."""
        deadline = time.perf_counter() + limit
        last = self.operator(await self.snapshot())
        quiet_since = time.perf_counter()
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.25)
            now = self.operator(await self.snapshot())
            if now != last:
                last, quiet_since = now, time.perf_counter()
            elif time.perf_counter() - quiet_since >= still:
                break
        return last


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _scenario(
    client: BenchClient, server: Server, counts: Counts, scenario: Scenario, reps: int,
    abort: Callable[[], str | None],
) -> dict[str, Any]:
    namespace = await server.new_namespace(client, f"req-{scenario.key}")
    watch = await SessionWatch(client, namespace, keep_objects=True).start()
    path = sessions_path(namespace)
    total: Counter[str] = Counter()
    everyone: Counter[str] = Counter()
    done = 0
    problems: list[str] = []
    batch_size = min(10, reps)

    def phase(name: str) -> str | None:
        return watch.phase.get((namespace, name))

    async def wait(cond: Callable[[], bool], what: str, timeout: float = 30) -> None:
        if not await watch.until(cond, timeout, abort):
            raise TimeoutError(f"{scenario.key}: {what} not seen within {timeout:.0f}s")

    async def create(name: str, target: str, **spec: Any) -> None:
        await client.ok("POST", path, json=session_body(name, target, **spec))

    async def each(names: list[str], fn: Callable[[str], Awaitable[None]]) -> None:
        await asyncio.gather(*(fn(n) for n in names))

    async def one_batch(ks: range) -> None:
        nonlocal done
        holders = [f"h-{k:03d}" for k in ks]
        others = [f"o-{k:03d}" for k in ks]
        targets = {h: f"{scenario.key}/{k:03d}" for k, h in zip(ks, holders, strict=True)}
        pair = dict(zip(holders, others, strict=True))
        # ---- set up (not counted)
        if scenario.key in ("reject", "queue", "promotion", "replace", "activity", "idle"):
            spec: dict[str, Any] = {}
            if scenario.key == "activity":
                spec = {"idleTimeout": "1h"}
            if scenario.key == "idle":
                spec = {"idleTimeout": "2s"}
            await each(holders, lambda h: create(h, targets[h], **spec))
            await wait(lambda: all(phase(h) == "Active" for h in holders), "holders Active")
        if scenario.key == "promotion":
            await each(holders, lambda h: create(pair[h], targets[h], onConflict="Queue"))
            await wait(lambda: all(phase(pair[h]) == "Queued" for h in holders), "queued")
        if scenario.key == "activity":
            await asyncio.sleep(1.1)  # a later second than the activation's
        if scenario.key == "idle":
            before = await counts.quiet(still=0.3, limit=1.0)
            early = [h for h in holders if phase(h) != "Active"]
            if early:
                problems.append(f"{len(early)} abandoned before counting started")
        else:
            before = await counts.quiet()
        snap_before = await counts.snapshot()
        # ---- act, and wait for the outcome
        if scenario.key == "free":
            await each(holders, lambda h: create(h, targets[h]))
            await wait(lambda: all(phase(h) == "Active" for h in holders), "Active")
        elif scenario.key in ("reject", "queue"):
            policy, outcome = ("Reject", "Rejected") if scenario.key == "reject" else ("Queue", "Queued")
            await each(holders, lambda h: create(pair[h], targets[h], onConflict=policy))
            await wait(lambda: all(phase(pair[h]) == outcome for h in holders), outcome)
        elif scenario.key == "promotion":

            async def complete(h: str) -> None:
                await client.ok("PATCH", sessions_path(namespace, h), json={"spec": {"state": "Completed"}},
                                content_type=MERGE_PATCH)

            await each(holders, complete)
            await wait(lambda: all(phase(pair[h]) == "Active" and phase(h) == "Completed" for h in holders),
                       "promotions")
        elif scenario.key == "replace":
            await each(holders, lambda h: create(pair[h], targets[h], onConflict="Replace"))
            await wait(lambda: all(phase(pair[h]) == "Active" and phase(h) == "Replaced" for h in holders),
                       "replacements")
        elif scenario.key == "activity":
            stamp = _stamp()

            async def annotate(h: str) -> None:
                await client.ok("PATCH", sessions_path(namespace, h),
                                json={"metadata": {"annotations": {ACTIVITY: stamp}}}, content_type=MERGE_PATCH)

            await each(holders, annotate)

            def recorded() -> bool:
                return all(((watch.objects.get((namespace, h)) or {}).get("status") or {})
                           .get("lastActivityTime") == stamp for h in holders)

            await wait(recorded, "activity recorded")
        elif scenario.key == "idle":
            await wait(lambda: all(phase(h) == "Abandoned" for h in holders), "Abandoned", timeout=30)
        after = await counts.quiet()
        snap_after = await counts.snapshot()
        total.update(after - before)
        for agent, by_key in snap_after.items():
            for key, value in (by_key - snap_before.get(agent, Counter())).items():
                everyone[f"{agent} {key}"] += value
        done += len(holders)

    try:
        for batch in range(0, reps, batch_size):
            await one_batch(range(batch, min(reps, batch + batch_size)))
    finally:
        await watch.stop()
    per = {key: value / done for key, value in sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))} if done else {}
    return {
        "decisions": done,
        "per_decision": per,
        "total_per_decision": sum(per.values()),
        "all_agents_total": dict(everyone),
        "problems": problems,
        "violations": len(watch.violations),
    }


async def requests_case(run: Run) -> None:
    if run.real is not None:
        run.rows.append(Row("requests per decision", "(all)", "skipped: needs the emulator's request counts",
                            "–", "–", "–", None))
        run.note("requests: skipped on a real cluster (the emulator counts requests per user agent)")
        return
    reps = run.sizes.requests_reps
    results: dict[str, Any] = {}
    async with run.server("requests") as server, client_for(server) as client:
        counts = Counts(server)
        await asyncio.to_thread(server.control.reset_request_counts)
        operator = Operator(server.kubeconfig, run.log_dir, name="operator-requests").start()
        try:
            await operator.wait_ready(timeout=60)
            await counts.quiet()
            for scenario in SCENARIOS:
                print(f"  {scenario.key}: {reps} repetitions", flush=True)
                try:
                    results[scenario.key] = await _scenario(client, server, counts, scenario, reps, operator.exited)
                except Exception as exc:
                    results[scenario.key] = {"error": repr(exc)}
        finally:
            operator.stop()
    run.results["requests"] = results
    run.violations["requests"] = sum(r.get("violations", 0) for r in results.values())
    for scenario in SCENARIOS:
        r = results.get(scenario.key) or {}
        label = f"requests per decision ({reps} each)"
        if "error" in r:
            run.rows.append(Row(label, scenario.title, f"failed: {r['error'][:120]}", "–", "–", "–", False))
            continue
        parts = ", ".join(f"{k} {v:.2f}".rstrip("0").rstrip(".") for k, v in r["per_decision"].items() if v >= 0.01)
        total = r["total_per_decision"]
        run.rows.append(Row(label, scenario.title, f"{total:.2f} ({parts})",
                            f"{scenario.minimum} ({scenario.minimum_text})",
                            f"{total / scenario.minimum:.2f}×", "–", None))
        if r["problems"]:
            run.note(f"requests {scenario.key}: {'; '.join(r['problems'])}")
