"""A small extra: the arbiter deciding one target group of N sessions, in process, against
merely sorting the same N sessions into queue order (what any decision must at least do)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .report import Row, secs, times

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def _body(i: int, *, queued: bool) -> dict[str, Any]:
    from session_operator.model import format_time

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


def _best_of(fn: Callable[[], Any], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def decide_case(n: int) -> tuple[dict[str, float], list[Row]]:
    from session_operator.arbiter import decide
    from session_operator.model import Claim, SessionView

    views = [SessionView.from_body(_body(i, queued=i > 0)) for i in range(n)]
    claim = Claim(name="c", holder="s0", holder_uid="uid-0", resource_version="1")
    undecided = [SessionView.from_body({**_body(n + i, queued=False), "status": {}}) for i in range(50)]
    floor = _best_of(lambda: sorted(views + undecided, key=lambda v: v.order_key), 20)
    steady = _best_of(lambda: decide(views, claim, T0), 20)
    burst = _best_of(lambda: decide(views + undecided, claim, T0), 20)
    result = {"sessions": n, "floor_s": floor, "steady_s": steady, "burst_s": burst}
    label = f"decide (in process, n={n:,})"
    rows = [
        Row(label, "arbiter on a holder and its queue, nothing new", secs(steady), f"sorting them: {secs(floor)}",
            times(steady / floor), "–", None),
        Row(label, "the same with 50 undecided arrivals", secs(burst), f"sorting them: {secs(floor)}",
            times(burst / floor), "–", None),
    ]
    return result, rows
