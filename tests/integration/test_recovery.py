"""Crashes and restarts: the operator killed mid-burst converges without a double Active,
and whatever happened while it was down (deletions, passed deadlines) is caught up."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from session_operator.model import LEGACY_FINALIZER
from support import sessions as s
from support.watcher import InvariantWatcher


async def test_sigkill_mid_burst_then_restart_converges(kube: Any, namespace: str, operator_factory: Any) -> None:
    operator = operator_factory("crashy").start()
    targets = [f"repo/{i}" for i in range(10)]
    names = [f"s{i:02d}" for i in range(60)]
    policies = ["Reject", "Queue", "Replace"]
    async with InvariantWatcher(kube, namespace) as watcher:
        creates = [
            s.create(kube, namespace, n, targets[i % len(targets)], onConflict=policies[i % 3])
            for i, n in enumerate(names)
        ]
        burst = asyncio.gather(*creates)
        await asyncio.sleep(0.15)  # in the middle of the burst
        operator.kill()
        await burst
        operator.start()
        items = await s.phases_when_settled(kube, namespace, names, within=90)
        await asyncio.sleep(1)
    watcher.check()
    for target in targets:
        group = [o for o in items.values() if o["spec"]["target"] == target]
        active = [o["metadata"]["name"] for o in group if s.phase(o) == "Active"]
        assert len(active) == 1, (target, active)
        claim = await s.claim(kube, namespace, target)
        assert claim is not None and claim["spec"]["holderIdentity"] == active[0]


async def test_holder_deleted_while_down_is_released_and_queue_promoted(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator = operator_factory("restarts").start()
    await s.create(kube, namespace, "holder", "device/9")
    await s.phases_when_settled(kube, namespace, ["holder"])
    await s.create(kube, namespace, "next", "device/9", onConflict="Queue")
    await s.phases_when_settled(kube, namespace, ["next"])
    operator.stop()
    await s.delete(kube, namespace, "holder")
    # No finalizer holds it: it is gone at once; its claim tells the returning operator.
    assert await s.get(kube, namespace, "holder") is None
    claim = await s.claim(kube, namespace, "device/9")
    assert claim is not None and claim["spec"]["holderIdentity"] == "holder"
    operator.start()

    async def promoted() -> bool:
        return s.phase(await s.get(kube, namespace, "next")) == "Active"

    await s.eventually(promoted, within=20, what="queue head promoted after restart")
    claim = await s.claim(kube, namespace, "device/9")
    assert claim is not None and claim["spec"]["holderIdentity"] == "next"


async def test_finalizer_of_an_earlier_version_is_removed_and_its_deletion_completes(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    """Earlier versions put a finalizer on holding and waiting sessions: upgrading must
    not leave them stuck, nor a deleted holder Terminating for ever."""
    operator = operator_factory("upgrade").start()
    await s.create(kube, namespace, "holder", "device/10")
    await s.phases_when_settled(kube, namespace, ["holder"])
    await s.create(kube, namespace, "first", "device/10", onConflict="Queue")
    await s.create(kube, namespace, "second", "device/10", onConflict="Queue")
    await s.phases_when_settled(kube, namespace, ["first", "second"])
    operator.stop()
    for name in ("holder", "first", "second"):
        status, _ = await kube.request(
            "PATCH", f"/apis/session-operator.io/v1alpha1/namespaces/{namespace}/sessions/{name}",
            json={"metadata": {"finalizers": [LEGACY_FINALIZER]}}, content_type="application/merge-patch+json",
        )
        assert status == 200
    await s.delete(kube, namespace, "holder")
    held = await s.get(kube, namespace, "holder")
    assert held is not None and held["metadata"].get("deletionTimestamp")
    operator.start()

    async def settled() -> bool:
        gone = await s.get(kube, namespace, "holder") is None
        items = [await s.get(kube, namespace, name) for name in ("first", "second")]
        tidy = all(item is not None and not item["metadata"].get("finalizers") for item in items)
        return gone and tidy and s.phase(items[0]) == "Active"

    await s.eventually(settled, within=20, what="legacy finalizers removed, holder deleted, first promoted")
    claim = await s.claim(kube, namespace, "device/10")
    assert claim is not None and claim["spec"]["holderIdentity"] == "first"


async def test_deadline_passed_while_down_acted_on_at_return(
    kube: Any, namespace: str, operator_factory: Any
) -> None:
    operator = operator_factory("deadlines").start()
    await s.create(kube, namespace, "idle", "workspace/z", idleTimeout="2s")
    await s.create(kube, namespace, "waiting", "workspace/z", onConflict="Queue")
    items = await s.phases_when_settled(kube, namespace, ["idle", "waiting"])
    assert s.phase(items["idle"]) == "Active"
    operator.stop()
    await asyncio.sleep(3)  # the idle deadline passes while nobody watches
    operator.start(wait=False)
    ready_at = abandoned_at = None
    deadline = time.monotonic() + 60
    while (ready_at is None or abandoned_at is None) and time.monotonic() < deadline:
        if ready_at is None and operator.ready():
            ready_at = time.monotonic()
        if abandoned_at is None and s.phase(await s.get(kube, namespace, "idle")) == "Abandoned":
            abandoned_at = time.monotonic()
        await asyncio.sleep(0.02)
    assert ready_at is not None and abandoned_at is not None, operator.logs()[-3000:]
    # Acted on as soon as it is back (its first resync), not at some later sweep.
    assert abandoned_at - ready_at < 5.0, (ready_at, abandoned_at)
    items = await s.phases_when_settled(kube, namespace, ["idle", "waiting"])
    assert s.condition(items["idle"], "Ready")["reason"] == "IdleTimeout"

    async def promoted() -> bool:  # the holder is demoted first, then the claim moves
        return s.phase(await s.get(kube, namespace, "waiting")) == "Active"

    await s.eventually(promoted, within=10, what="the queue head promoted")
