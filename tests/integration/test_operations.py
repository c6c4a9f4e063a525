"""Running it: metrics, several operators at once, leader failover, API faults, scale."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from support import sessions as s
from support.watcher import InvariantWatcher


def operator_requests(snapshot: dict[str, Any]) -> dict[str, int]:
    """Requests the operator made (not the test's own), long-running watches left out."""
    counts: dict[str, int] = {}
    for agent, by_key in snapshot["byAgent"].items():
        if agent.startswith(("session-operator/", "kopf/")):
            for key, count in by_key.items():
                if not key.startswith("watch"):
                    counts[key] = counts.get(key, 0) + count
    return counts


@pytest.mark.usefixtures("operator")
async def test_metrics_describe_what_happened(kube: Any, namespace: str, operator: Any) -> None:
    await s.create(kube, namespace, "a", "repo/m")
    await s.phases_when_settled(kube, namespace, ["a"])
    await s.create(kube, namespace, "b", "repo/m", onConflict="Queue")
    await s.create(kube, namespace, "c", "repo/m")
    await s.phases_when_settled(kube, namespace, ["b", "c"])
    await s.create(kube, namespace, "d", "repo/m", onConflict="Replace", profile="new")
    await s.phases_when_settled(kube, namespace, ["d"])
    text = operator.metrics()
    assert f'session_operator_sessions{{namespace="{namespace}",phase="Active"}} 1.0' in text
    assert f'session_operator_sessions{{namespace="{namespace}",phase="Queued"}} 1.0' in text
    assert f'session_operator_sessions{{namespace="{namespace}",phase="Rejected"}} 1.0' in text
    assert f'session_operator_sessions{{namespace="{namespace}",phase="Replaced"}} 1.0' in text
    for outcome in ("Acquired", "Queued", "TargetBusy", "ReplacedPrevious", "Replaced"):
        assert operator.metric("session_operator_decisions_total", outcome=outcome) >= 1, outcome
    assert operator.metric("session_operator_replacements_total", reason="Replaced") >= 1
    assert operator.metric("session_operator_decision_latency_seconds_count") >= 4
    assert operator.metric("session_operator_reconcile_duration_seconds_count") >= 4
    assert operator.metric("session_operator_events_posted_total", reason="Activated") >= 1
    assert "session_operator_claim_write_conflicts_total" in text
    assert operator.metric("session_operator_leader") == 1.0


async def test_two_operators_at_once_never_two_active(kube: Any, namespace: str, operator_factory: Any) -> None:
    """Rule 1 does not depend on leader election: two operators acting together."""
    first = operator_factory("twin-a").start()
    second = operator_factory("twin-b").start()
    names = [f"s{i:02d}" for i in range(40)]
    async with InvariantWatcher(kube, namespace) as watcher:
        await asyncio.gather(*(
            s.create(kube, namespace, n, f"repo/{i % 4}", onConflict=("Replace", "Queue", "Reject")[i % 3])
            for i, n in enumerate(names)
        ))
        items = await s.phases_when_settled(kube, namespace, names, within=60)
        for i in range(4):
            active = [n for n, o in items.items() if o["spec"]["target"] == f"repo/{i}" and s.phase(o) == "Active"]
            if active:
                await s.patch_spec(kube, namespace, active[0], state="Completed")
        await asyncio.sleep(2)
    watcher.check()
    conflicts = first.metric("session_operator_claim_write_conflicts_total", object="claim") + second.metric(
        "session_operator_claim_write_conflicts_total", object="claim"
    ) + first.metric("session_operator_claim_write_conflicts_total", object="session") + second.metric(
        "session_operator_claim_write_conflicts_total", object="session"
    )
    items = await s.all_sessions(kube, namespace)
    for i in range(4):
        active = [n for n, o in items.items() if o["spec"]["target"] == f"repo/{i}" and s.phase(o) == "Active"]
        assert len(active) <= 1, active
    assert conflicts >= 0  # reported, whatever the interleaving was


async def test_leader_failover_keeps_deciding(kube: Any, namespace: str, operator_factory: Any) -> None:
    leader = operator_factory("leader-a", leader_elect=True).start()
    standby = operator_factory("leader-b", leader_elect=True).start(wait=False)
    await asyncio.sleep(1)
    assert standby.metric("session_operator_leader") == 0.0  # a ready standby
    await s.create(kube, namespace, "before", "repo/f")
    await s.phases_when_settled(kube, namespace, ["before"])
    leader.kill()  # no release: the standby must wait for the Lease to expire (4s here)
    started = time.monotonic()
    await s.create(kube, namespace, "after", "repo/f", onConflict="Queue")
    await s.patch_spec(kube, namespace, "before", state="Completed")

    async def promoted() -> bool:
        return s.phase(await s.get(kube, namespace, "after")) == "Active"

    await s.eventually(promoted, within=30, what="the standby to take over and promote")
    assert standby.metric("session_operator_leader") == 1.0
    assert time.monotonic() - started < 20


@pytest.mark.faults
async def test_retention_deletion_survives_api_errors(
    kube: Any, namespace: str, operator_factory: Any, emulator: Any
) -> None:
    operator_factory("retention").start()
    names = [f"old-{i}" for i in range(12)]
    await asyncio.gather(*(
        s.create(kube, namespace, n, f"repo/r{i}", state="Completed", archiveAfter="0s", deleteAfter="2s")
        for i, n in enumerate(names)
    ))
    await s.phases_when_settled(kube, namespace, names)
    emulator.fail_next(count=5, status=500, method="DELETE", path=r"/sessions/")

    async def all_gone() -> bool:
        return not (await s.all_sessions(kube, namespace))

    await s.eventually(all_gone, within=30, what="retention deletions despite five 500s")


@pytest.mark.faults
async def test_quiet_sweep_over_thousands_costs_no_api_calls(
    kube: Any, namespace: str, operator_factory: Any, emulator: Any
) -> None:
    """5,000 sessions with far deadlines: while nothing is due the operator makes no API
    call at all; a due deadline among them is still handled within a second."""
    operator = operator_factory("quiet", args=("--workers", "16")).start()
    names = [f"s{i:04d}" for i in range(5000)]
    for start in range(0, len(names), 250):
        await asyncio.gather(*(
            s.create(kube, namespace, n, f"repo/{i % 100}", idleTimeout="24h")
            for i, n in enumerate(names[start:start + 250], start=start)
        ))

    async def all_decided() -> bool:
        items = await s.all_sessions(kube, namespace)
        return len(items) == len(names) and all(s.decided(o) for o in items.values())

    await s.eventually(all_decided, within=240, interval=1.0, what="5,000 sessions decided")

    async def operator_idle() -> bool:  # its last Events posted, its last writes done
        emulator.reset_request_counts()
        await asyncio.sleep(1)
        return not operator_requests(emulator.request_counts())

    await s.eventually(operator_idle, within=120, interval=0, what="the operator to finish its work")
    emulator.reset_request_counts()
    await asyncio.sleep(3)
    quiet = operator_requests(emulator.request_counts())
    assert quiet == {}, quiet
    assert operator.metric("session_operator_deadlines_pending") >= 100

    await s.create(kube, namespace, "due", "repo/due", idleTimeout="1s")
    await s.phases_when_settled(kube, namespace, ["due"])
    deadline_seen = time.monotonic() + 1.0  # idleDeadline is one second after activation

    async def abandoned() -> bool:
        return s.phase(await s.get(kube, namespace, "due")) == "Abandoned"

    await s.eventually(abandoned, within=10, interval=0.05, what="the due session abandoned")
    assert time.monotonic() - deadline_seen < 1.5


async def test_json_logs_name_the_session(kube: Any, namespace: str, operator_factory: Any) -> None:
    import json

    operator = operator_factory("json-logs", args=("--log-format", "json")).start()
    await s.create(kube, namespace, "logged", "repo/logs")
    await s.phases_when_settled(kube, namespace, ["logged"])
    await asyncio.sleep(0.3)
    lines = [line for line in operator.logs().splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records, operator.logs()[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    activated = [r for r in records if r["message"].startswith(f"Activated session {namespace}/logged")]
    assert activated, [r["message"] for r in records]
    assert activated[0]["namespace"] == namespace
    assert activated[0]["name"] == "logged"
    assert activated[0]["target"] == "repo/logs"
