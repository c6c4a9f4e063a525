"""Bursts (N new sessions over N targets, or N on one target with a queue) and isolated
sessions, each against a floor where the client makes the operator's writes itself.

The operator is measured first; then it is stopped and the floor runs on the same server,
in a namespace of its own, with the same client concurrency, the same watch, and a
status of the same shape and size as the operator's (shapes.Templates).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from .cluster import POLICIES, BenchClient, EmulatorServer, Server, leases_path, sessions_path
from .process import Operator, process_cpu_seconds
from .report import Row, percentile, rate, secs, times
from .run import Run, client_for, workers
from .shapes import MERGE_PATCH, Templates, claim_body, guarded_status, session_body
from .watch import SessionWatch

QUEUE_TARGET = "queue/one"
OWNERS = 100  # governed bursts: sessions of this many owners, round robin


def governing_policy(name: str, namespace: str, n: int) -> dict[str, Any]:
    """A SessionPolicy that selects every session of the case and sets every rule, with
    caps no session reaches: the cost of governance, not of its refusals."""
    return {
        "apiVersion": "session-operator.io/v1alpha1", "kind": "SessionPolicy", "metadata": {"name": name},
        "spec": {
            "namespaces": [namespace], "allowedOnConflict": ["Reject", "Queue"], "priority": {"min": -10, "max": 10},
            "idleTimeout": {"default": "30m", "max": "24h"}, "maxDuration": {"default": "8h", "max": "24h"},
            "perOwner": {"maxActive": n, "maxQueued": n}, "protectionWindow": "1m",
        },
    }


def _name(i: int) -> str:
    return f"s-{i:05d}"


def _target(i: int, queue: bool) -> str:
    return QUEUE_TARGET if queue else f"burst/{i:05d}"


async def _measure(
    client: BenchClient, namespace: str, n: int, concurrency: int, timeout: float,
    one: Callable[[int, dict[int, float]], Awaitable[None]], server_pid: int | None,
    abort: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Run ``one`` for every i at ``concurrency``, and time decisions on a watch opened before."""
    watch = await SessionWatch(client, namespace).start()
    server_cpu = process_cpu_seconds(server_pid)
    keys = [(namespace, _name(i)) for i in range(n)]
    watch.expect(keys)
    sent: dict[int, float] = {}
    started = time.perf_counter()
    deadline = started + timeout
    try:
        created, errors = await workers(n, concurrency, deadline, lambda i: one(i, sent))
        sending = time.perf_counter() - started
        complete = await watch.until_decided(max(0.0, deadline - time.perf_counter()), abort)
        server_cpu = process_cpu_seconds(server_pid) - server_cpu
        await asyncio.sleep(0.3)  # trailing events still count for watch safety
    finally:
        await watch.stop()
    decided = [watch.decided_at[k] for k in keys if k in watch.decided_at]
    latencies = [watch.decided_at[k] - sent[i] for i, k in enumerate(keys) if k in watch.decided_at and i in sent]
    first = min(sent.values()) if sent else started
    duration = (max(decided) - first) if decided else None
    return {
        "sessions": n,
        "created": created,
        "decided": len(decided),
        "complete": complete,
        "timeout_s": timeout,
        "send_s": sending,
        "duration_s": duration,
        "throughput_per_s": (len(decided) / duration) if duration else None,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "max_s": max(latencies) if latencies else None,
        "phases": dict(Counter(watch.phase.get(k) or "none" for k in keys)),
        "violations": len(watch.violations),
        "violation_examples": watch.violations[:5],
        "errors": errors,
        "watch_events": watch.events,
        "emulator_cpu_s": server_cpu if server_pid is not None else None,
    }


async def _operator_side(
    run: Run, client: BenchClient, server: Server, namespace: str, n: int, queue: bool, label: str,
    governed: bool = False,
) -> dict[str, Any]:
    path = sessions_path(namespace)
    spec = {"onConflict": "Queue"} if queue else {"onConflict": "Reject"}
    if governed:
        await client.ok("POST", POLICIES, json=governing_policy(f"bench-{namespace}", namespace, n))
    server_pid = server.pid() if isinstance(server, EmulatorServer) else None
    operator = Operator(server.kubeconfig, run.log_dir, name=f"operator-{label}").start()
    try:
        ready = await operator.wait_ready(timeout=60)
        await asyncio.sleep(0.5)  # its start-up resync is over
        cpu0 = operator.cpu_seconds()

        async def one(i: int, sent: dict[int, float]) -> None:
            owned = {"owner": {"username": f"user-{i % OWNERS}", "groups": ["system:authenticated"]}}
            body = session_body(_name(i), _target(i, queue), **spec, **(owned if governed else {}))
            sent[i] = time.perf_counter()
            await client.ok("POST", path, json=body)

        result = await _measure(client, namespace, n, run.sizes.concurrency, 60 + 0.2 * n, one, server_pid,
                                operator.exited)
        result["operator_cpu_s"] = operator.cpu_seconds() - cpu0
        result["operator_rss_bytes"] = operator.rss_bytes()
        result["ready_s"] = ready
    finally:
        operator.stop()
    return result


async def _floor_side(
    run: Run, client: BenchClient, server: Server, namespace: str, n: int, queue: bool, templates: Templates
) -> dict[str, Any]:
    """The client makes the operator's writes itself: create, claim create (the first only,
    for a queue), and a status merge patch guarded by the session's resourceVersion."""
    server_pid = server.pid() if isinstance(server, EmulatorServer) else None
    path = sessions_path(namespace)
    holder: dict[str, str] = {}
    holder_known = asyncio.Event()

    async def one(i: int, sent: dict[int, float]) -> None:
        name, target = _name(i), _target(i, queue)
        body = session_body(name, target, onConflict="Queue" if queue else "Reject")
        sent[i] = time.perf_counter()
        created = await client.ok("POST", path, json=body)
        uid, rv = created["metadata"]["uid"], created["metadata"]["resourceVersion"]
        if not queue or i == 0:
            await client.ok("POST", leases_path(namespace), json=claim_body(target, name, uid))
            status = templates.active_status(name, target)
            holder.update(name=name, uid=uid)
            holder_known.set()
        else:
            await asyncio.wait_for(holder_known.wait(), 60)
            status = templates.queued_status(name, target, holder["name"], holder["uid"], position=i)
        await client.ok("PATCH", sessions_path(namespace, name, "status"), json=guarded_status(status, rv),
                        content_type=MERGE_PATCH)

    return await _measure(client, namespace, n, run.sizes.concurrency, 60 + 0.2 * n, one, server_pid)


async def burst(run: Run, case: str, n: int, queue: bool, governed: bool = False) -> None:
    async with run.server(case) as server, client_for(server) as client:
        templates = await run.ensure_templates(server)
        namespace = await server.new_namespace(client, case)
        print(f"  operator: {n} sessions{' on one target' if queue else ''}, concurrency {run.sizes.concurrency}"
              f"{f', {OWNERS} owners, a SessionPolicy selecting every one' if governed else ''}", flush=True)
        op = await _operator_side(run, client, server, namespace, n, queue, case, governed)
        if governed:
            await client.request("DELETE", f"{POLICIES}/bench-{namespace}")
        floor_ns = await server.new_namespace(client, f"{case}-floor")
        print("  floor: the client writes claim and status itself", flush=True)
        floor = await _floor_side(run, client, server, floor_ns, n, queue, templates)
    run.results[case] = {"operator": op, "floor": floor}
    run.violations[case] = op["violations"]
    label = f"{case} (n={n:,})"
    wanted = "1 Active, the rest Queued" if queue else "all Active"
    good_phases = (op["phases"].get("Active") == 1 and op["phases"].get("Queued") == n - 1) if queue \
        else op["phases"].get("Active") == n
    if not good_phases:
        run.note(f"{case}: expected {wanted}, the watch shows {op['phases']}")
    if op["errors"] or floor["errors"]:
        run.note(f"{case}: client errors: operator side {op['errors'][:2]}, floor {floor['errors'][:2]}")
    if not op["complete"]:
        value = f"timed out: {op['decided']:,} of {n:,} decided in {op['timeout_s']:.0f} s"
        run.rows.append(Row(label, "decided per second", value, rate(floor["throughput_per_s"]), "–",
                            "≥ 0.5 (aim 0.6)", False))
        return
    ratio = (op["throughput_per_s"] / floor["throughput_per_s"]) if floor["throughput_per_s"] else None
    run.rows.append(Row(
        label, "decided per second (first create → last decision seen)",
        rate(op["throughput_per_s"]), rate(floor["throughput_per_s"]),
        "–" if ratio is None else f"{ratio:.2f}", "≥ 0.5 (aim 0.6)", None if ratio is None else ratio >= 0.5,
    ))
    bound = 3 * floor["duration_s"] if floor["duration_s"] else None
    p99_ratio = (op["p99_s"] / bound) if bound and op["p99_s"] is not None else None
    run.rows.append(Row(
        label, "create → decided seen, p50 / p99",
        f"{secs(op['p50_s'])} / {secs(op['p99_s'])}",
        f"3 × {secs(floor['duration_s'])} = {secs(bound)} (its p50 / p99 {secs(floor['p50_s'])} / "
        f"{secs(floor['p99_s'])})",
        "–" if p99_ratio is None else times(p99_ratio, 2), "p99 ≤ 3 × floor duration",
        None if p99_ratio is None else p99_ratio <= 1,
    ))
    _cpu_row(run, label, op, floor)
    plain = run.results.get("burst-1000")
    if governed and plain and plain["floor"].get("throughput_per_s") and plain["operator"].get("throughput_per_s"):
        before = plain["operator"]["throughput_per_s"] / plain["floor"]["throughput_per_s"]
        change = ratio / before if ratio is not None else None
        run.rows.append(Row(
            label, "its ratio ÷ burst-1000's ratio (governance's cost)",
            f"{ratio:.2f}" if ratio is not None else "–", f"{before:.2f}",
            "–" if change is None else f"{change:.2f}", "≈ 1 (within noise, ≥ 0.9)",
            None if change is None else change >= 0.9,
        ))


def _cpu_row(run: Run, label: str, op: dict[str, Any], floor: dict[str, Any]) -> None:
    """Where the time goes: CPU per decision of the operator process, and of the emulator
    (with the operator, and for the floor's writes)."""
    n = op["sessions"]
    value = f"operator {secs(op['operator_cpu_s'] / n)}"
    floor_text = "–"
    if op.get("emulator_cpu_s") is not None:
        value += f", emulator {secs(op['emulator_cpu_s'] / n)}"
        floor_text = f"emulator {secs(floor['emulator_cpu_s'] / n)}"
    run.rows.append(Row(label, "CPU per decision", value, floor_text, "–", "–", None))


async def isolated(run: Run) -> None:
    warmup, samples = run.sizes.isolated_warmup, run.sizes.isolated_samples
    async with run.server("isolated") as server, client_for(server) as client:
        templates = await run.ensure_templates(server)
        namespace = await server.new_namespace(client, "isolated")
        operator = Operator(server.kubeconfig, run.log_dir, name="operator-isolated").start()
        try:
            await operator.wait_ready(timeout=60)
            await asyncio.sleep(0.5)
            op = await _one_at_a_time(client, namespace, warmup, samples, None, operator.exited)
        finally:
            operator.stop()
        floor_ns = await server.new_namespace(client, "isolated-floor")
        floor = await _one_at_a_time(client, floor_ns, warmup, samples, templates)
    run.results["isolated"] = {"operator": op, "floor": floor}
    run.violations["isolated"] = op["violations"]
    label = f"isolated ({samples} after {warmup} warm-up)"
    if op["missed"]:
        run.note(f"isolated: {op['missed']} sessions not Active within 30 s each")
    ratio = op["p50_s"] / floor["p50_s"] if op["p50_s"] and floor["p50_s"] else None
    run.rows.append(Row(label, "create → Active seen, p50", secs(op["p50_s"]), secs(floor["p50_s"]),
                        times(ratio), "≤ 2×", None if ratio is None else ratio <= 2))
    ratio99 = op["p99_s"] / floor["p99_s"] if op["p99_s"] and floor["p99_s"] else None
    run.rows.append(Row(label, "create → Active seen, p99", secs(op["p99_s"]), secs(floor["p99_s"]),
                        times(ratio99), "–", None))


async def _one_at_a_time(
    client: BenchClient, namespace: str, warmup: int, samples: int, templates: Templates | None,
    abort: Callable[[], str | None] | None = None,
) -> dict[str, Any]:
    """Create → Active, one session at a time; by the operator, or (with templates) by the
    client itself: create, claim create, guarded status patch, then seen on the watch."""
    watch = await SessionWatch(client, namespace).start()
    path = sessions_path(namespace)
    latencies: list[float] = []
    missed = 0
    deadline = time.perf_counter() + 60 + 2.0 * (warmup + samples)
    try:
        for i in range(warmup + samples):
            if time.perf_counter() > deadline:
                missed += warmup + samples - i
                break
            name, target = f"i-{i:04d}", f"isolated/{i:04d}"
            key = (namespace, name)
            started = time.perf_counter()
            created = await client.ok("POST", path, json=session_body(name, target))
            if templates is not None:
                uid, rv = created["metadata"]["uid"], created["metadata"]["resourceVersion"]
                await client.ok("POST", leases_path(namespace), json=claim_body(target, name, uid))
                await client.ok("PATCH", sessions_path(namespace, name, "status"),
                                json=guarded_status(templates.active_status(name, target), rv),
                                content_type=MERGE_PATCH)
            if not await watch.until(lambda key=key: watch.phase.get(key) == "Active", 30, abort):  # type: ignore[misc]
                missed += 1
                continue
            if i >= warmup:
                latencies.append(watch.decided_at[key] - started)
    finally:
        await watch.stop()
    return {
        "samples": len(latencies),
        "missed": missed,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "mean_s": sum(latencies) / len(latencies) if latencies else None,
        "violations": len(watch.violations),
    }
