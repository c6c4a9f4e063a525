"""Session lifecycle through the real operator: desired state, activity, idle and max
duration, archive and retention, with durations of seconds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from session_operator.model import parse_time
from support import sessions as s
from support.watcher import InvariantWatcher

pytestmark = pytest.mark.usefixtures("operator")

ACTIVITY = "session-operator.io/last-activity"


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def wait_phase(kube: Any, namespace: str, name: str, phase: str, within: float = 20) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        obj = await s.get(kube, namespace, name)
        return obj if s.phase(obj) == phase else None

    result: dict[str, Any] = await s.eventually(reached, within=within, interval=0.05, what=f"{name} {phase}")
    return result


async def test_idle_timeout_abandons_and_promotes_the_queue(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "idle", "workspace/a", idleTimeout="2s")
    await s.phases_when_settled(kube, namespace, ["idle"])
    await s.create(kube, namespace, "next", "workspace/a", onConflict="Queue")
    items = await s.phases_when_settled(kube, namespace, ["next"])
    deadline = parse_time(items["idle"]["status"]["idleDeadline"])
    assert deadline == parse_time(items["idle"]["status"]["activeSince"]) + timedelta(seconds=2)
    async with InvariantWatcher(kube, namespace) as watcher:
        abandoned = await wait_phase(kube, namespace, "idle", "Abandoned")
        seen_at = datetime.now(UTC)
        promoted = await wait_phase(kube, namespace, "next", "Active")
    watcher.check()
    assert deadline is not None and seen_at - deadline < timedelta(seconds=2)  # second-resolution stamps
    ready = s.condition(abandoned, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "IdleTimeout")
    assert "spec.idleTimeout" in ready["message"]
    assert abandoned["status"]["endedAt"]
    assert s.condition(promoted, "Ready")["reason"] == "Promoted"
    await s.wait_event(kube, namespace, "idle", ("Normal", "Abandoned"))


async def test_activity_extends_the_idle_deadline_without_a_new_generation(kube: Any, namespace: str) -> None:
    # A timeout far longer than anything the test waits for, so a busy machine cannot
    # make the session go idle before the activity lands.
    await s.create(kube, namespace, "busy", "workspace/b", idleTimeout="60s")
    items = await s.phases_when_settled(kube, namespace, ["busy"])
    first_deadline = parse_time(items["busy"]["status"]["idleDeadline"])
    assert first_deadline is not None
    await asyncio.sleep(1.1)  # so that the new activity is a later second
    now = datetime.now(UTC)
    obj = await s.annotate(kube, namespace, "busy", {ACTIVITY: stamp(now)})
    assert obj["metadata"]["generation"] == 1  # activity is not a spec change

    async def extended() -> dict[str, Any] | None:
        current = await s.get(kube, namespace, "busy")
        assert current is not None
        deadline = parse_time(current["status"].get("idleDeadline"))
        return current if deadline is not None and deadline > first_deadline else None

    current = await s.eventually(extended, within=10, what="idle deadline extended")
    assert current["status"]["lastActivityTime"] == stamp(now)
    assert parse_time(current["status"]["idleDeadline"]) == parse_time(stamp(now)) + timedelta(seconds=60)
    assert s.phase(current) == "Active"
    assert current["status"]["observedGeneration"] == 1
    # An older time does not move it back; a future one counts as now.
    await s.annotate(kube, namespace, "busy", {ACTIVITY: stamp(now - timedelta(hours=1))})
    await s.annotate(kube, namespace, "busy", {ACTIVITY: stamp(now + timedelta(hours=5))})
    # (Pinned to the moment it is first seen, it may change nothing at one-second
    # resolution, so there is no write to wait for: whatever the status shows, it is
    # never in the future.)
    current = await s.get(kube, namespace, "busy")
    assert current is not None
    last = parse_time(current["status"]["lastActivityTime"])
    assert last is not None and now - timedelta(seconds=1) <= last <= datetime.now(UTC)
    # ... and so the session still goes idle soon after a shorter timeout, not in five hours.
    await s.patch_spec(kube, namespace, "busy", idleTimeout="2s")
    abandoned = await wait_phase(kube, namespace, "busy", "Abandoned", within=20)
    assert s.condition(abandoned, "Ready")["reason"] == "IdleTimeout"


async def test_max_duration_abandons_whatever_the_activity(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "long", "workspace/c", maxDuration="3s", idleTimeout="1h")
    await s.phases_when_settled(kube, namespace, ["long"])
    for _ in range(3):
        await asyncio.sleep(0.8)
        await s.annotate(kube, namespace, "long", {ACTIVITY: stamp(datetime.now(UTC))})
    abandoned = await wait_phase(kube, namespace, "long", "Abandoned")
    assert s.condition(abandoned, "Ready")["reason"] == "MaxDurationExceeded"
    assert "spec.maxDuration" in s.condition(abandoned, "Ready")["message"]


async def test_archive_after_then_delete_after(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "done", "workspace/d", archiveAfter="2s", deleteAfter="2s")
    await s.phases_when_settled(kube, namespace, ["done"])
    await s.patch_spec(kube, namespace, "done", state="Completed")
    completed = await wait_phase(kube, namespace, "done", "Completed", within=10)
    assert s.condition(completed, "Ready")["reason"] == "Completed"
    ended = parse_time(completed["status"]["endedAt"])
    archived = await wait_phase(kube, namespace, "done", "Archived", within=10)
    cond = s.condition(archived, "Archived")
    assert (cond["status"], cond["reason"]) == ("True", "Retention")
    assert s.condition(archived, "Ready")["reason"] == "Archived"
    assert archived["status"]["endedAt"] == completed["status"]["endedAt"]
    archived_at = parse_time(archived["status"]["archivedAt"])
    assert ended is not None and archived_at is not None and archived_at - ended >= timedelta(seconds=2)
    await s.wait_event(kube, namespace, "done", ("Normal", "Archived"))

    async def deleted() -> bool:
        return await s.get(kube, namespace, "done") is None

    await s.eventually(deleted, within=10, what="deleted after deleteAfter")


async def test_archive_after_zero_archives_at_once(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "holder", "workspace/e")
    await s.phases_when_settled(kube, namespace, ["holder"])
    await s.create(kube, namespace, "late", "workspace/e", archiveAfter="0s")
    archived = await wait_phase(kube, namespace, "late", "Archived")
    assert s.condition(archived, "Archived")["reason"] == "Retention"
    assert archived["status"]["holder"]["name"] == "holder"  # it was rejected first


async def test_archived_on_request_releases_and_promotes(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "a", "workspace/f")
    await s.phases_when_settled(kube, namespace, ["a"])
    await s.create(kube, namespace, "b", "workspace/f", onConflict="Queue")
    await s.phases_when_settled(kube, namespace, ["b"])
    await s.patch_spec(kube, namespace, "a", state="Archived")
    archived = await wait_phase(kube, namespace, "a", "Archived")
    assert s.condition(archived, "Archived")["reason"] == "Requested"
    assert archived["status"]["archivedAt"]
    await wait_phase(kube, namespace, "b", "Active")


async def test_inactive_then_active_again_is_reevaluated(kube: Any, namespace: str) -> None:
    await s.create(kube, namespace, "a", "workspace/g")
    await s.phases_when_settled(kube, namespace, ["a"])
    await s.patch_spec(kube, namespace, "a", state="Inactive")
    inactive = await wait_phase(kube, namespace, "a", "Inactive")
    assert s.condition(inactive, "Ready")["reason"] == "Inactive"

    async def released() -> bool:  # demoted first, then the claim goes
        return await s.claim(kube, namespace, "workspace/g") is None

    await s.eventually(released, within=10, what="the claim released")
    await s.create(kube, namespace, "b", "workspace/g")
    await wait_phase(kube, namespace, "b", "Active")
    await s.patch_spec(kube, namespace, "a", state="Active", onConflict="Queue")
    queued = await wait_phase(kube, namespace, "a", "Queued")
    assert queued["status"]["holder"]["name"] == "b"
    await s.patch_spec(kube, namespace, "a", onConflict="Replace")
    await wait_phase(kube, namespace, "a", "Active")
    replaced = await wait_phase(kube, namespace, "b", "Replaced")
    assert replaced["status"]["replacedBy"] == "a"


async def test_lifecycle_transitions_take_no_periodic_polling(kube: Any, namespace: str, cluster: Any) -> None:
    """Time is only acted on when something is due, and then at once: the operator's own
    stamps show the session abandoned within a second or so of its idle deadline (no
    periodic sweep), however long the test itself takes to look."""
    await s.create(kube, namespace, "soon", "workspace/h", idleTimeout="2s")
    abandoned = await wait_phase(kube, namespace, "soon", "Abandoned", within=20)
    status = abandoned["status"]
    deadline = parse_time(status["activeSince"]) + timedelta(seconds=2)
    ended = parse_time(status["endedAt"])
    assert deadline is not None and ended is not None
    # Stamps have one-second resolution: "at its deadline" is within two seconds of it.
    assert timedelta(0) <= ended - deadline <= timedelta(seconds=2), status
