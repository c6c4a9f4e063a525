"""``make bench``: speed and memory as ratios against floors measured in the same run.

Absolute times depend on the machine; a ratio against a floor measured alongside does
not (much), so the numbers can be compared between runs and machines:

* decide: the arbiter on one target group of N sessions (a holder and a queue), against
  the floor of merely sorting the same N sessions into queue order.
* end-to-end: N sessions over N targets created against the API emulator, until the
  operator process has decided all of them, against the floor of the same client doing
  the minimum itself (create, then one status write each) on the same emulator.
* memory: the index's records for N sessions, against the raw JSON bodies they come from.

Results go to stdout and to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "tests")]

from session_operator.arbiter import decide  # noqa: E402
from session_operator.model import SessionView, format_time  # noqa: E402

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def session_body(i: int, *, queued: bool) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if queued:
        status = {"phase": "Queued", "observedGeneration": 1, "queuePosition": i, "holder": {"name": "s0"}}
    elif i == 0:
        status = {"phase": "Active", "observedGeneration": 1, "activeSince": format_time(T0)}
    return {
        "metadata": {"namespace": "bench", "name": f"s{i}", "uid": f"uid-{i}", "resourceVersion": str(i + 1),
                     "generation": 1, "creationTimestamp": format_time(T0 + timedelta(seconds=i))},
        "spec": {"target": "repo/bench", "onConflict": "Queue", "priority": i % 7, "profile": "p"},
        "status": status,
    }


def best_of(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_decide(n: int) -> dict[str, float]:
    from session_operator.model import Claim

    views = [SessionView.from_body(session_body(i, queued=i > 0)) for i in range(n)]
    claim = Claim(name="c", holder="s0", holder_uid="uid-0", resource_version="1")
    undecided = [SessionView.from_body({**session_body(n + i, queued=False), "status": {}}) for i in range(50)]
    floor = best_of(lambda: sorted(views + undecided, key=lambda v: v.order_key), 20)
    steady = best_of(lambda: decide(views, claim, T0), 20)
    burst = best_of(lambda: decide(views + undecided, claim, T0), 20)
    return {"sessions": n, "floor_s": floor, "steady_s": steady, "burst_s": burst,
            "steady_ratio": steady / floor, "burst_ratio": burst / floor}


def bench_memory(n: int) -> dict[str, float]:
    bodies = [session_body(i, queued=i > 0) for i in range(n)]
    raw = len(json.dumps(bodies).encode())
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    views = [SessionView.from_body(b) for b in bodies]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(views) == n
    return {"sessions": n, "raw_json_bytes": raw, "index_bytes": used, "ratio": used / raw,
            "bytes_per_session": used / n}


async def bench_end_to_end(n: int) -> dict[str, float]:
    from kube_emulator import EmulatorThread
    from support.operator_process import OperatorProcess

    results: dict[str, float] = {"sessions": n}
    with EmulatorThread() as emulator:
        workdir = ROOT / "bench" / "results"
        workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = emulator.write_kubeconfig(workdir / "kubeconfig")
        emulator.control.apply_crd(ROOT / "crds" / "sessions.session-operator.io.yaml")
        from session_operator.kube import Kube

        kube = await Kube.connect(str(kubeconfig))
        base = "/apis/session-operator.io/v1alpha1/namespaces/{ns}/sessions"
        for ns in ("floor", "operator"):
            await kube.request("POST", "/api/v1/namespaces",
                               body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})

        def body(i: int) -> dict[str, Any]:
            return {"apiVersion": "session-operator.io/v1alpha1", "kind": "Session",
                    "metadata": {"name": f"s{i}"}, "spec": {"target": f"repo/{i}"}}

        sem = asyncio.Semaphore(50)

        async def floor_one(i: int) -> None:
            async with sem:
                created = await kube.request("POST", base.format(ns="floor"), body=body(i))
                await kube.patch_session_status("floor", f"s{i}", {"phase": "Active", "observedGeneration": 1},
                                                created["metadata"]["resourceVersion"])

        started = time.perf_counter()
        await asyncio.gather(*(floor_one(i) for i in range(n)))
        results["floor_s"] = time.perf_counter() - started

        operator = OperatorProcess(kubeconfig, workdir, name="bench-operator")
        operator.start()
        try:
            async def create_one(i: int) -> None:
                async with sem:
                    await kube.request("POST", base.format(ns="operator"), body=body(i))

            started = time.perf_counter()
            await asyncio.gather(*(create_one(i) for i in range(n)))
            while True:
                listing = await kube.request("GET", base.format(ns="operator"))
                if sum(1 for o in listing["items"] if (o.get("status") or {}).get("phase") == "Active") == n:
                    break
                await asyncio.sleep(0.1)
            results["operator_s"] = time.perf_counter() - started
        finally:
            operator.stop()
            await kube.close()
    results["ratio"] = results["operator_s"] / results["floor_s"]
    results["sessions_per_s"] = n / results["operator_s"]
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--sessions", type=int, default=1000, help="sessions per measurement")
    parser.add_argument("--skip-end-to-end", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    report["decide"] = bench_decide(args.sessions)
    report["memory"] = bench_memory(args.sessions)
    if not args.skip_end_to_end:
        report["end_to_end"] = asyncio.run(bench_end_to_end(min(args.sessions, 500)))
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2))
    d, m = report["decide"], report["memory"]
    print(f"decide   {d['sessions']} sessions: steady {d['steady_ratio']:.1f}x, burst of 50 {d['burst_ratio']:.1f}x "
          f"the floor (sorting them: {d['floor_s'] * 1e3:.2f} ms)")
    print(f"memory   {m['sessions']} sessions: {m['ratio']:.2f}x the raw JSON ({m['bytes_per_session']:.0f} B each)")
    if "end_to_end" in report:
        e = report["end_to_end"]
        print(f"end2end  {e['sessions']} sessions: {e['ratio']:.1f}x the floor "
              f"({e['sessions_per_s']:.0f} sessions/s; floor {e['floor_s']:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
