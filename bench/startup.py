"""Start-up at size: N sessions (half decided, half new while the operator was down) over
100 namespaces; the operator starts; how long until ready, until a session created just
after the start is decided, and until every undecided session is; and its memory.

Floor: a paged LIST (``limit=500``) of the same sessions and claims from the same server,
which any controller must do before it can decide anything.

What is loaded (names sort so that decided sessions come first in their queues):

* decided half: groups of four on one target: a holder (Active, with its claim), two
  Queued (positions 1 and 2) and one Rejected, statuses as the operator writes them;
* undecided half, no status: every other one on a free target (→ Active), the rest on a
  held target, alternately ``Queue`` (→ Queued) and ``Reject`` (→ Rejected).

On the emulator, everything is loaded with its bulk-load control (stored as the API
requests would store it); on a real cluster, through the API with bounded concurrency.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from .cluster import CLAIM_SELECTOR, LEASES, SESSIONS, BenchClient, Server, leases_path, sessions_path
from .process import AGENT_PREFIX, Operator
from .report import Row, mib, secs, times
from .run import Run, client_for, workers
from .shapes import MERGE_PATCH, Templates, calibrate, claim_body, guarded_status, session_body
from .watch import SessionWatch

NAMESPACES = 100
BULK_BATCH_BYTES = 6 * 2**20  # the emulator takes up to 16 MiB a request
EXPECTED = {"free": "Active", "Queue": "Queued", "Reject": "Rejected"}


@dataclass
class Planned:
    namespace: str
    name: str
    target: str
    on_conflict: str
    role: str  # holder | queued | rejected (decided), or free | held (undecided)
    holder: str = ""
    position: int = 0

    @property
    def decided(self) -> bool:
        return self.role in ("holder", "queued", "rejected")

    @property
    def expected(self) -> str:
        return "Active" if self.role in ("holder", "free") else EXPECTED[self.on_conflict]


def plan(n: int, namespaces: list[str]) -> list[Planned]:
    out: list[Planned] = []
    decided = n // 2
    groups: list[tuple[str, str]] = []  # (namespace, target) of held targets
    i = 0
    while i < decided:
        namespace, target = namespaces[len(groups) % len(namespaces)], f"held/{len(groups):06d}"
        holder = f"d-{i:06d}"
        out.append(Planned(namespace, holder, target, "Reject", "holder"))
        i += 1
        for position, (role, policy) in enumerate((("queued", "Queue"), ("queued", "Queue"), ("rejected", "Reject"))):
            if i >= decided:
                break
            out.append(Planned(namespace, f"d-{i:06d}", target, policy, role, holder,
                               position + 1 if role == "queued" else 0))
            i += 1
        groups.append((namespace, target))
    for j in range(n - decided):
        if j % 2 == 0 or not groups:
            out.append(Planned(namespaces[j % len(namespaces)], f"u-{j:06d}", f"free/{j:06d}", "Reject", "free"))
        else:
            namespace, target = groups[(j // 2) % len(groups)]
            policy = "Queue" if (j // 2) % 2 == 0 else "Reject"
            out.append(Planned(namespace, f"u-{j:06d}", target, policy, "held"))
    return out


def _status(p: Planned, templates: Templates, uids: dict[tuple[str, str], str]) -> dict[str, Any]:
    if p.role == "holder":
        return templates.active_status(p.name, p.target)
    holder_uid = uids[(p.namespace, p.holder)]
    if p.role == "queued":
        return templates.queued_status(p.name, p.target, p.holder, holder_uid, p.position)
    return templates.rejected_status(p.name, p.target, p.holder, holder_uid)


async def _bulk(control: Any, items: list[dict[str, Any]], refs: bool) -> list[list[str]]:
    """Send items to the emulator's bulk-load control in batches under its size limit."""
    out: list[list[str]] = []
    batch: list[dict[str, Any]] = []
    size = 0

    async def flush() -> None:
        nonlocal batch, size
        if not batch:
            return
        result = await asyncio.to_thread(control.bulk_load, batch, refs)
        if "error" in result:
            failed = batch[result["error"]["index"]]
            raise RuntimeError(f"bulk load failed at {failed['path']}: {result['error']['status']}")
        out.extend(result.get("refs") or [])
        batch, size = [], 0

    for item in items:
        item_size = len(json.dumps(item, separators=(",", ":")))
        if batch and size + item_size > BULK_BATCH_BYTES:
            await flush()
        batch.append(item)
        size += item_size
    await flush()
    return out


async def load_emulator(server: Server, planned: list[Planned], templates: Templates) -> None:
    refs = await _bulk(server.control, [
        {"path": sessions_path(p.namespace), "body": session_body(p.name, p.target, onConflict=p.on_conflict)}
        for p in planned
    ], refs=True)
    uids = {(ns, name): uid for ns, name, uid, _ in refs}
    versions = {(ns, name): rv for ns, name, _, rv in refs}
    decided = [p for p in planned if p.decided]
    items: list[dict[str, Any]] = [
        {"path": leases_path(p.namespace), "body": claim_body(p.target, p.name, uids[(p.namespace, p.name)])}
        for p in decided if p.role == "holder"
    ]
    items += [
        {"op": "status", "path": sessions_path(p.namespace, p.name), "status": _status(p, templates, uids),
         "resourceVersion": versions[(p.namespace, p.name)]}
        for p in decided
    ]
    await _bulk(server.control, items, refs=False)


async def load_api(client: BenchClient, planned: list[Planned], templates: Templates, timeout: float) -> None:
    """Through the API, as the operator would have: per held target the holder (create,
    claim, guarded status), then the rest of its group (create, guarded status); and the
    undecided ones (create only). Bounded concurrency."""
    groups: list[list[Planned]] = []
    for p in planned:
        if p.role == "holder":
            groups.append([p])
        elif p.decided:
            groups[-1].append(p)
    undecided = [p for p in planned if not p.decided]
    uids: dict[tuple[str, str], str] = {}

    async def write(p: Planned) -> None:
        created = await client.ok("POST", sessions_path(p.namespace),
                                  json=session_body(p.name, p.target, onConflict=p.on_conflict))
        uids[(p.namespace, p.name)] = created["metadata"]["uid"]
        if p.role == "holder":
            claim = claim_body(p.target, p.name, created["metadata"]["uid"])
            await client.ok("POST", leases_path(p.namespace), json=claim)
        if p.decided:
            await client.ok("PATCH", sessions_path(p.namespace, p.name, "status"),
                            json=guarded_status(_status(p, templates, uids), created["metadata"]["resourceVersion"]),
                            content_type=MERGE_PATCH)

    async def group(i: int) -> None:
        for p in groups[i]:
            await write(p)

    deadline = time.perf_counter() + timeout
    done, errors = await workers(len(groups), 50, deadline, group)
    if errors or done < len(groups):
        raise RuntimeError(f"loading decided sessions: {done} of {len(groups)} groups; {errors}")
    done, errors = await workers(len(undecided), 50, deadline, lambda i: write(undecided[i]))
    if errors or done < len(undecided):
        raise RuntimeError(f"loading undecided sessions: {done} of {len(undecided)}; {errors}")


async def list_floor(client: BenchClient) -> tuple[float, int, int, str]:
    """A paged LIST of all sessions and of the claims (label selector), at once, as the
    operator's two informers do; returns seconds, counts and the sessions' resourceVersion."""
    started = time.perf_counter()
    (sessions, rv), (claims, _) = await asyncio.gather(
        client.list_all(SESSIONS), client.list_all(LEASES, {"labelSelector": CLAIM_SELECTOR})
    )
    return time.perf_counter() - started, sessions, claims, rv


async def startup(run: Run, n: int) -> dict[str, Any]:
    label = f"startup-{n}"
    result: dict[str, Any] = {"sessions": n}
    async with run.server(label) as server, client_for(server) as client:
        empty = await calibrate(server, run.log_dir)
        if run.templates is None:
            run.templates = empty.templates
        templates = run.templates
        result.update(ready_empty_s=empty.ready_s, rss_empty_bytes=empty.rss_bytes)
        namespaces = [await server.new_namespace(client, f"start-{i:02d}") for i in range(NAMESPACES)]
        planned = plan(n, namespaces)
        print(f"  loading {n:,} sessions over {NAMESPACES} namespaces "
              f"({'bulk-load control' if server.is_emulator else 'API'})", flush=True)
        started = time.perf_counter()
        if server.is_emulator:
            await load_emulator(server, planned, templates)
        else:
            await load_api(client, planned, templates, timeout=600 + 0.1 * n)
        result["load_s"] = time.perf_counter() - started
        floors = [await list_floor(client) for _ in range(2)]
        floor_s, listed_sessions, listed_claims, rv = min(floors)
        result.update(floor_list_s=floor_s, listed_sessions=listed_sessions, listed_claims=listed_claims,
                      floor_list_all_s=[f[0] for f in floors])
        print(f"  floor: LIST {listed_sessions:,} sessions and {listed_claims:,} claims in {secs(floor_s)}", flush=True)

        watch = await SessionWatch(client).start(since=rv)
        undecided = [p for p in planned if not p.decided]
        watch.expect([(p.namespace, p.name) for p in undecided])
        probe = (namespaces[0], "probe-after-start")
        watch.expect([probe])
        if server.control is not None:
            await asyncio.to_thread(server.control.reset_request_counts)
        ready_timeout, all_timeout = 60 + 0.005 * n, 120 + 0.03 * n
        operator = Operator(server.kubeconfig, run.log_dir, name=f"operator-{label}").start()
        try:
            t0 = operator.started_at
            ready_task = asyncio.create_task(operator.wait_ready(timeout=ready_timeout))
            await client.ok("POST", sessions_path(probe[0]), json=session_body(probe[1], "probe/free"))
            result["probe_created_after_s"] = time.perf_counter() - t0
            complete = await watch.until_decided(all_timeout, operator.exited)
            try:
                result["ready_s"] = await ready_task
            except Exception as exc:
                result["ready_error"] = repr(exc)
            result["complete"] = complete
            result["timeout_s"] = all_timeout
            if probe in watch.decided_at:
                result["probe_decided_s"] = watch.decided_at[probe] - t0
            times_decided = [watch.decided_at[(p.namespace, p.name)] for p in undecided
                             if (p.namespace, p.name) in watch.decided_at]
            result["undecided"] = len(undecided) + 1
            result["decided"] = len(times_decided) + (probe in watch.decided_at)
            if complete:
                result["all_decided_s"] = max([*times_decided, watch.decided_at[probe]]) - t0
            await asyncio.sleep(1.0)
            result["rss_bytes"] = operator.rss_bytes()
            result["operator_cpu_s"] = operator.cpu_seconds()
            result["rss_per_session_bytes"] = (result["rss_bytes"] - empty.rss_bytes) / n
        finally:
            operator.stop()
            await watch.stop()
        wrong = [p for p in planned if watch.phase.get((p.namespace, p.name), None) not in (None, p.expected)
                 or ((not p.decided) and watch.phase.get((p.namespace, p.name)) is None)]
        result["wrong_phase"] = len(wrong)
        result["wrong_examples"] = [f"{p.namespace}/{p.name}: {watch.phase.get((p.namespace, p.name))}, "
                                    f"expected {p.expected}" for p in wrong[:5]]
        result["decided_rewritten_at_start"] = sum(1 for p in planned if p.decided
                                                   and watch.modified.get((p.namespace, p.name)))
        result["violations"] = len(watch.violations)
        if server.control is not None:
            counts = await asyncio.to_thread(server.control.request_counts)
            mine: dict[str, int] = {}
            for agent, by_key in counts["byAgent"].items():
                if agent.startswith(AGENT_PREFIX):
                    for key, value in by_key.items():
                        mine[key] = mine.get(key, 0) + value
            result["operator_requests"] = dict(sorted(mine.items(), key=lambda kv: -kv[1]))
    run.results.setdefault("startup", {})[str(n)] = result
    run.violations[label] = result["violations"]
    _rows(run, n, result)
    return result


def _rows(run: Run, n: int, r: dict[str, Any]) -> None:
    label = f"startup (n={n:,})"
    floor = r["floor_list_s"]
    floor_text = f"LIST {r['listed_sessions']:,} sessions + {r['listed_claims']:,} claims: {secs(floor)}"

    def timed(measure: str, value: float | None, missing: str) -> None:
        if value is None:
            run.rows.append(Row(label, measure, missing, floor_text, "–", "≤ 3×", False))
            return
        ratio = value / floor
        run.rows.append(Row(label, measure, secs(value), floor_text, times(ratio), "≤ 3×", ratio <= 3))

    timed(f"start → /readyz 200 (empty cluster: {secs(r['ready_empty_s'])})", r.get("ready_s"),
          f"not ready: {r.get('ready_error', '?')}")
    timed("start → a session created just after the start is decided", r.get("probe_decided_s"), "not decided")
    timed(f"start → all {r['undecided']:,} undecided decided", r.get("all_decided_s"),
          f"timed out: {r.get('decided', 0):,} of {r['undecided']:,} in {r['timeout_s']:.0f} s")
    run.rows.append(Row(
        label, "memory (RSS) once all are decided", mib(r.get("rss_bytes")),
        f"empty cluster: {mib(r['rss_empty_bytes'])}",
        f"{r['rss_per_session_bytes'] / 1024:.1f} KiB/session" if "rss_per_session_bytes" in r else "–", "–", None,
    ))
    if r["wrong_phase"]:
        run.note(f"startup n={n}: {r['wrong_phase']} sessions not in the expected phase, e.g. {r['wrong_examples']}")
    if r["decided_rewritten_at_start"]:
        run.note(f"startup n={n}: {r['decided_rewritten_at_start']:,} of the {n // 2:,} already decided sessions "
                 "were written again at start")


def growth_row(run: Run) -> None:
    """With several sizes: how start time and memory grow."""
    results = run.results.get("startup") or {}
    if len(results) < 2:
        return
    sizes = sorted(results, key=int)
    arrow = " → ".join
    run.rows.append(Row(
        "startup growth", f"{arrow(f'{int(s):,}' for s in sizes)} sessions: all decided; RSS per session",
        arrow(secs(results[s].get("all_decided_s")) for s in sizes) + "; "
        + arrow(f"{results[s].get('rss_per_session_bytes', 0) / 1024:.1f} KiB" for s in sizes),
        "LIST " + arrow(secs(results[s]["floor_list_s"]) for s in sizes),
        arrow(times((results[s].get("all_decided_s") or 0) / results[s]["floor_list_s"]) for s in sizes),
        "flat", None,
    ))
