"""``make bench``: issue 7's figures, each beside a floor measured in the same run.

Runs against the API emulator (``python -m kube_emulator --tls``, a process of its own,
fresh for every case) or, when ``SESSION_OPERATOR_TEST_KUBECONFIG`` names a kubeconfig,
against that cluster (in namespaces of its own, deleted afterwards; no other operator may
be deciding sessions there). The operator is the real ``session-operator run
--no-leader-elect`` process, started afresh for every case. Everything is on loopback (or
the given cluster); every load loop stops by itself at its count or its time limit.

Prints one Markdown table and writes it, with the server (``/version`` gitVersion, or
"emulator"), the machine and the date, to ``bench/results/latest.md``; every figure
behind it goes to ``bench/results/latest.json``; process logs to ``bench/results/logs/``.

The table
---------
case              what ran, and its size (``n``)
measure           what is measured
session-operator  the figure for the operator process
floor (same run)  the same work done without the operator, on the same server in the same
                  run, so that the ratio, not the absolute time, carries across machines:
                  startup: a paged LIST (``limit=500``) of the same sessions and claims;
                  bursts and isolated: the benchmark's client making the operator's writes
                  itself (session create, claim Lease create, status merge patch guarded by
                  ``metadata.resourceVersion``, a status of the operator's own shape and
                  size), at the same concurrency, seen on the same kind of watch;
                  requests: the writes a decision needs plus the Events the contract asks;
                  decide: sorting the same sessions into queue order
ratio             operator ÷ floor (times, throughput, requests); for p99, p99 ÷ (3 × the
                  floor burst's duration); for memory, (RSS − RSS on an empty cluster) ÷ n
goal              issue 7's goal for that ratio ("–": none, reported for information)
met               yes / **no** against the goal; "–" where there is no goal

Cases (``--only``, comma-separated)
-----------------------------------
startup       n sessions (``--sizes``; default 10,000) and their claims over 100 namespaces:
              half decided (Active holders with claims, Queued, Rejected), half created
              while the operator was down; then the operator starts. Time to /readyz 200,
              until a session created just after the start is decided, until all are;
              RSS once done, against an operator on the empty server (bytes per session).
              Emulator: loaded with its bulk-load control; a real cluster: through the
              API (sizes above 10,000 are emulator only).
burst-1000    n new sessions over n targets (onConflict Reject), 20 concurrent creates;
burst-5000    decided per second (first create → last decision seen on a watch opened
              before) and create → decided seen, p50 / p99.
burst-governed  burst-1000 with a SessionPolicy selecting every session and setting
              every rule (caps no session reaches), sessions of 100 owners: the same
              measures, and its ratio against burst-1000's (governance's cost).
queue-1000    n new sessions on one target with onConflict Queue; the same measures.
isolated      create → Active seen, one at a time (200 after 20 warm-up): p50, p99.
requests      API requests per decision made by the operator's user agent, as the
              emulator counts them (emulator only): new, Reject, Queue, promotion,
              Replace, activity, idle abandonment.
queue-truth   1,000 sessions wait on one target; the holder changes 100 times (complete
              the holder, the head is promoted, repeat). The operator's status writes
              (emulator only) until every waiting session shows the true holder and
              position, against the least exact statuses need; the time from the last
              change until then, against the documented bound ceil(stale / rate).
watch-safety  no run of its own: the watches of all cases above check that no target
              ever shows two Active sessions at once; the row sums what they saw.
              Alone, it runs burst-1000 and queue-1000.
decide        (extra, in process) the arbiter on one target group against sorting it.

``--quick`` runs every case at a few hundred sessions (a smoke run, a few minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator"), str(ROOT / "tests")]

from .cluster import RealCluster, real_kubeconfig  # noqa: E402
from .report import Row, machine, table, write  # noqa: E402
from .run import Run, Sizes  # noqa: E402

CASES = ["startup", "burst-1000", "burst-governed", "burst-5000", "queue-1000", "isolated", "requests", "queue-truth",
         "watch-safety", "decide"]
WATCHED = {"startup", "burst-1000", "burst-governed", "burst-5000", "queue-1000", "isolated", "requests", "queue-truth"}
EMULATOR_ONLY_ABOVE = 10_000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every case")
    parser.add_argument("--only", default="", metavar="CASE[,CASE]", help=f"run only these ({', '.join(CASES)})")
    parser.add_argument("--sizes", default="", metavar="N[,N]",
                        help="session counts for the startup case (e.g. 1000,10000,100000)")
    parser.add_argument("--keep-going", action="store_true", help="after a case fails, run the others")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where results go")
    args = parser.parse_args(argv)
    args.cases = [c.strip() for c in args.only.split(",") if c.strip()] or list(CASES)
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    try:
        args.size_list = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes comma-separated integers")
    if any(n < 8 for n in args.size_list):
        parser.error("--sizes: at least 8 sessions")
    return args


async def run_case(run: Run, case: str) -> None:
    from . import apicalls, bursts, queuetruth, startup
    from .decide import decide_case

    sizes = run.sizes
    if case == "startup":
        for n in sizes.startup:
            print(f"-- startup, n={n:,}", flush=True)
            await startup.startup(run, n)
        startup.growth_row(run)
    elif case == "burst-1000":
        await bursts.burst(run, case, sizes.burst_small, queue=False)
    elif case == "burst-governed":
        await bursts.burst(run, case, sizes.burst_small, queue=False, governed=True)
    elif case == "burst-5000":
        await bursts.burst(run, case, sizes.burst_large, queue=False)
    elif case == "queue-1000":
        await bursts.burst(run, case, sizes.queue, queue=True)
    elif case == "isolated":
        await bursts.isolated(run)
    elif case == "requests":
        await apicalls.requests_case(run)
    elif case == "queue-truth":
        await queuetruth.queue_truth(run, sizes.queue_truth_waiting, sizes.queue_truth_changes)
    elif case == "decide":
        result, rows = decide_case(sizes.decide)
        run.results["decide"] = result
        run.rows.extend(rows)
    elif case == "watch-safety":
        watched = {k: v for k, v in run.violations.items()}
        total = sum(watched.values())
        run.results["watch-safety"] = watched
        run.rows.append(Row(
            "watch-safety", "moments a target showed two Active sessions, in every watched case",
            f"{total} (" + ", ".join(f"{k} {v}" for k, v in watched.items()) + ")" if watched else "no case watched",
            "–", "–", "0", total == 0 if watched else None,
        ))


async def main_async(args: argparse.Namespace) -> int:
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.size_list:
        sizes.startup = args.size_list
    cases = list(args.cases)
    if cases == ["watch-safety"]:
        cases = ["burst-1000", "queue-1000", "watch-safety"]
    elif "watch-safety" in cases:  # it sums the others: last
        cases = [c for c in cases if c != "watch-safety"] + ["watch-safety"]
    out = Path(args.out)
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True, exist_ok=True)
    kubeconfig = real_kubeconfig()
    real = RealCluster(kubeconfig) if kubeconfig is not None else None
    run = Run(sizes=sizes, workdir=out, real=real)
    if real is not None:
        await real.prepare()
        too_big = [n for n in sizes.startup if n > EMULATOR_ONLY_ABOVE]
        if too_big:
            sizes.startup = [n for n in sizes.startup if n <= EMULATOR_ONLY_ABOVE]
            run.note(f"startup: sizes {too_big} are emulator only, skipped on a real cluster")
    server_name = real.name if real is not None else "emulator"
    info = machine()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    print(f"session-operator benchmark on {server_name}, {info['cores']} cores, {date}", flush=True)
    durations: dict[str, float] = {}
    errors: dict[str, str] = {}
    for case in cases:
        print(f"== {case}", flush=True)
        started = time.perf_counter()
        try:
            await run_case(run, case)
        except Exception as exc:
            errors[case] = traceback.format_exc()
            run.rows.append(Row(case, "failed", f"{type(exc).__name__}: {str(exc)[:200]}", met=False))
            print(errors[case], file=sys.stderr, flush=True)
            if not args.keep_going:
                run.note(f"stopped after {case} failed (--keep-going runs the rest)")
                break
        finally:
            durations[case] = round(time.perf_counter() - started, 1)
            print(f"   ({durations[case]:.0f} s)", flush=True)
    report: dict[str, Any] = {
        "server": server_name,
        "machine": info,
        "date": date,
        "args": " ".join(sys.argv[1:]),
        "sizes": vars(sizes),
        "status_templates": run.templates.source if run.templates else None,
        "case_seconds": durations,
        "results": run.results,
        "errors": errors,
    }
    json_path, md_path = write(out, report, run.rows, run.notes)
    print()
    print(table(run.rows))
    if run.notes:
        print()
        for note in run.notes:
            print(f"- {note}")
    print(f"\n{json_path}\n{md_path}")
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
