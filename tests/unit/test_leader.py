"""Leader election: the pure time decisions, and the elector against an in-memory Lease API.

The fake below behaves like the API server on what the elector relies on: create fails
with 409 if the Lease exists, a PUT fails with 409 unless it carries the stored
resourceVersion, and every write bumps one global resourceVersion counter. Its errors are
the real ``kube`` error types.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from session_operator import leader
from session_operator.kube import ApiError, Conflict, NotFound
from session_operator.leader import (
    LeaderElector,
    LeaderRecord,
    LeadershipLost,
    can_acquire,
    check_timings,
    is_expired,
    is_held_by,
    lease_duration_seconds,
    lease_namespace,
    next_spec,
    released_spec,
    renew_deadline_passed,
    run_leading,
)
from session_operator.settings import Settings

NS, NAME = "default", "session-operator-leader"
MICRO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def fast_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"lease_duration": 0.5, "renew_deadline": 0.3, "retry_period": 0.05}
    values.update(overrides)
    return Settings(**values)


class FakeLeases:
    """In-memory coordination.k8s.io Leases with resourceVersion checks and fault switches."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 100
        self.down = False  # every call fails with a 503
        self.hang = False  # every call waits forever (a dead connection)
        self.latency = 0.0  # seconds each call takes to reach the server
        self.last_write_sent = 0.0  # monotonic time a successful write was sent
        self.writes: list[dict[str, Any]] = []
        self.before_write: Any = None  # hook: called before a create/replace is applied

    async def _gate(self) -> None:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.hang:
            await asyncio.Event().wait()
        if self.down:
            raise ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")

    def _store(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.rv += 1
        stored = copy.deepcopy(dict(body))
        stored.setdefault("metadata", {}).update(
            {"name": name, "namespace": namespace, "resourceVersion": str(self.rv)}
        )
        self.objects[(namespace, name)] = stored
        return copy.deepcopy(stored)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        await self._gate()
        if (namespace, name) not in self.objects:
            raise NotFound(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        return copy.deepcopy(self.objects[(namespace, name)])

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        sent = time.monotonic()
        await self._gate()
        if self.before_write:
            self.before_write()
        name = body["metadata"]["name"]
        if (namespace, name) in self.objects:
            raise Conflict(409, "AlreadyExists", f'leases.coordination.k8s.io "{name}" already exists')
        self.writes.append(copy.deepcopy(dict(body)))
        self.last_write_sent = sent
        return self._store(namespace, name, body)

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        sent = time.monotonic()
        await self._gate()
        if self.before_write:
            self.before_write()
        current = self.objects.get((namespace, name))
        if current is None:
            raise NotFound(404, "NotFound", f'leases.coordination.k8s.io "{name}" not found')
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "the object has been modified; please apply your changes")
        self.writes.append(copy.deepcopy(dict(body)))
        self.last_write_sent = sent
        return self._store(namespace, name, body)

    # Test helpers: what another replica would write.
    def put_holder(self, holder: str, *, duration: int = 1, transitions: int = 0) -> None:
        stamp = "2026-11-21T10:00:00.000000Z"
        spec = {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        }
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}, "spec": spec}
        existing = self.objects.get((NS, NAME))
        if existing:
            body["metadata"] = dict(existing["metadata"])
        self._store(NS, NAME, body)

    def renew_other(self) -> None:
        spec = self.objects[(NS, NAME)]["spec"]
        spec["renewTime"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self._store(NS, NAME, self.objects[(NS, NAME)])

    def spec(self) -> dict[str, Any]:
        return self.objects[(NS, NAME)]["spec"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def other_writes_first(leases: FakeLeases) -> None:
    """Another replica writes itself in just before our next write reaches the server."""

    def hook() -> None:
        leases.before_write = None
        leases.put_holder("other")

    leases.before_write = hook


def elector_for(leases: FakeLeases, identity: str = "me", **kwargs: Any) -> LeaderElector:
    settings = kwargs.pop("settings", None) or fast_settings()
    return LeaderElector(settings, leases, identity=identity, namespace=NS, **kwargs)


# Pure decisions ---------------------------------------------------------------------------


def test_expiry_uses_the_records_duration_and_the_local_observation_time() -> None:
    record = LeaderRecord(holder="other", lease_duration_seconds=15)
    assert not is_expired(record, observed_at=100.0, now=114.9, default_duration=5)
    assert not is_expired(record, observed_at=100.0, now=115.0, default_duration=5)
    assert is_expired(record, observed_at=100.0, now=115.1, default_duration=5)
    # No duration in the record: ours is used.
    bare = LeaderRecord(holder="other")
    assert not is_expired(bare, observed_at=100.0, now=104.0, default_duration=5)
    assert is_expired(bare, observed_at=100.0, now=105.5, default_duration=5)


def test_renew_time_of_the_record_is_not_used_for_expiry() -> None:
    # A renewTime far in the past (another machine's clock) does not make it expired.
    record = LeaderRecord(holder="other", lease_duration_seconds=15, renew_time="2000-01-01T00:00:00.000000Z")
    assert not can_acquire(record, "me", observed_at=100.0, now=101.0, default_duration=15)


def test_ours_free_or_expired_may_be_acquired_others_may_not() -> None:
    fresh_other = LeaderRecord(holder="other", lease_duration_seconds=15)
    assert is_held_by(LeaderRecord(holder="me"), "me")
    assert not is_held_by(fresh_other, "me")
    assert not is_held_by(LeaderRecord(holder=""), "")
    assert can_acquire(LeaderRecord(holder="me", lease_duration_seconds=15), "me", 100.0, 101.0, 15)
    assert can_acquire(LeaderRecord(holder="", lease_duration_seconds=1), "me", 100.0, 100.0, 15)
    assert not can_acquire(fresh_other, "me", 100.0, 101.0, 15)
    assert can_acquire(fresh_other, "me", 100.0, 116.0, 15)


def test_creation_starts_transitions_at_zero() -> None:
    spec = next_spec(None, "me", 15, T0)
    assert spec == {
        "holderIdentity": "me",
        "leaseDurationSeconds": 15,
        "acquireTime": "2026-11-21T10:00:00.000000Z",
        "renewTime": "2026-11-21T10:00:00.000000Z",
        "leaseTransitions": 0,
    }


def test_takeover_increments_transitions_and_sets_acquire_time() -> None:
    old = LeaderRecord("other", 15, "2026-11-21T09:00:00.000000Z", "2026-11-21T09:59:00.000000Z", 4)
    spec = next_spec(old, "me", 15, T0 + timedelta(microseconds=1234))
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 5
    assert spec["acquireTime"] == spec["renewTime"] == "2026-11-21T10:00:00.001234Z"


def test_takeover_of_a_released_lease_counts_as_a_transition() -> None:
    released = LeaderRecord("", 1, "x", "x", 2)
    assert next_spec(released, "me", 15, T0)["leaseTransitions"] == 3


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    ours = LeaderRecord("me", 15, "2026-11-21T09:00:00.000000Z", "2026-11-21T09:59:58.000000Z", 4)
    spec = next_spec(ours, "me", 15, T0)
    assert spec["leaseTransitions"] == 4
    assert spec["acquireTime"] == "2026-11-21T09:00:00.000000Z"
    assert spec["renewTime"] == "2026-11-21T10:00:00.000000Z"


def test_times_are_micro_times_and_durations_whole_seconds_rounded_up() -> None:
    spec = next_spec(None, "me", 0.3, datetime.now(UTC))
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    assert spec["leaseDurationSeconds"] == 1
    assert lease_duration_seconds(15) == 15
    assert lease_duration_seconds(15.2) == 16


def test_release_clears_the_holder_and_keeps_transitions() -> None:
    spec = released_spec(LeaderRecord("me", 15, "a", "b", 7), T0)
    assert spec["holderIdentity"] == ""
    assert spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 7


def test_renew_deadline_passed() -> None:
    assert not renew_deadline_passed(last_renew=100.0, now=109.9, renew_deadline=10)
    assert not renew_deadline_passed(last_renew=100.0, now=110.0, renew_deadline=10)
    assert renew_deadline_passed(last_renew=100.0, now=110.01, renew_deadline=10)


def test_timings_follow_client_go_rules() -> None:
    assert check_timings(15, 10, 2) is None
    assert "lease_duration" in (check_timings(10, 10, 2) or "")
    assert "retry_period" in (check_timings(15, 2, 2) or "")


def test_lease_namespace_rules(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    sa_file = tmp_path / "namespace"
    sa_file.write_text("operators\n")
    assert lease_namespace(Settings(leader_election_namespace="ops"), service_account_file=sa_file) == "ops"
    assert lease_namespace(Settings(), service_account_file=sa_file, environ={"POD_NAMESPACE": "x"}) == "operators"
    assert lease_namespace(Settings(), service_account_file=missing, environ={"POD_NAMESPACE": "x"}) == "x"
    assert lease_namespace(Settings(), service_account_file=missing, environ={}) == "default"


def test_identity_defaults_to_hostname_pid_and_a_random_suffix() -> None:
    elector = LeaderElector(fast_settings(), FakeLeases(), namespace=NS)
    assert re.match(r"^.+_\d+_[0-9a-f]{6}$", elector.identity)
    assert LeaderElector(fast_settings(), FakeLeases(), namespace=NS).identity != elector.identity
    assert LeaderElector(fast_settings(identity="pod-a"), FakeLeases(), namespace=NS).identity == "pod-a"


# The elector against the fake API -----------------------------------------------------------


async def test_acquires_an_absent_lease_by_creating_it() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    await asyncio.wait_for(elector.acquire(), 1)
    assert elector.is_leader
    spec = leases.spec()
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 0
    assert spec["leaseDurationSeconds"] == 1
    assert MICRO_TIME.match(spec["acquireTime"]) and MICRO_TIME.match(spec["renewTime"])
    # Its own labels, not the claims' (the claim watch selects on managed-by).
    assert leases.objects[(NS, NAME)]["metadata"]["labels"] == leader.LEADER_LABELS


async def test_losing_the_create_race_means_not_leading() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    # Another replica creates the Lease between our read (404) and our create.
    other_writes_first(leases)
    assert await elector.try_acquire_or_renew() is False
    assert not elector.is_leader
    assert leases.spec()["holderIdentity"] == "other"
    # Next round it reads the winner and leaves it alone.
    assert await elector.try_acquire_or_renew() is False
    assert elector.holder == "other"
    assert leases.writes == []


async def test_losing_the_update_race_on_a_free_lease_means_not_leading() -> None:
    leases = FakeLeases()
    leases.put_holder("")  # released: anyone may take it
    elector = elector_for(leases)
    other_writes_first(leases)
    assert await elector.try_acquire_or_renew() is False  # our PUT carried a stale resourceVersion
    assert leases.spec()["holderIdentity"] == "other"
    assert await elector.try_acquire_or_renew() is False
    assert leases.spec()["holderIdentity"] == "other"


async def test_does_not_steal_an_unexpired_lease() -> None:
    leases = FakeLeases()
    leases.put_holder("other", duration=15)
    elector = elector_for(leases)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(elector.acquire(), 0.3)
    assert not elector.is_leader
    assert leases.spec()["holderIdentity"] == "other"
    assert leases.writes == []
    assert elector.healthy()  # a standby that reads the Lease fine


async def test_takes_over_an_expired_lease_judged_by_the_local_clock() -> None:
    clock = FakeClock()
    leases = FakeLeases()
    leases.put_holder("other", duration=1, transitions=3)
    elector = elector_for(leases, clock=clock)
    assert await elector.try_acquire_or_renew() is False  # first seen now
    clock.now += 0.6
    assert await elector.try_acquire_or_renew() is False
    clock.now += 0.5  # 1.1 s since the record was first seen unchanged
    assert await elector.try_acquire_or_renew() is True
    spec = leases.spec()
    assert spec["holderIdentity"] == "me"
    assert spec["leaseTransitions"] == 4
    assert spec["acquireTime"] != "2026-11-21T10:00:00.000000Z"


async def test_a_renewing_holder_is_never_expired() -> None:
    clock = FakeClock()
    leases = FakeLeases()
    leases.put_holder("other", duration=1)
    elector = elector_for(leases, clock=clock)
    for _ in range(5):  # 0.8 s steps: each read sees a changed record, so the clock restarts
        assert await elector.try_acquire_or_renew() is False
        clock.now += 0.8
        leases.renew_other()
    assert leases.spec()["holderIdentity"] == "other"


async def test_renewals_are_puts_on_the_written_resource_version() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    await elector.acquire()
    first = copy.deepcopy(leases.spec())
    await asyncio.sleep(0.01)
    assert await elector.try_acquire_or_renew() is True
    renewed = leases.spec()
    assert renewed["acquireTime"] == first["acquireTime"]
    assert renewed["leaseTransitions"] == first["leaseTransitions"]
    assert renewed["renewTime"] > first["renewTime"]
    assert [w["metadata"].get("resourceVersion") for w in leases.writes] == [None, "101"]


async def test_stops_acting_when_renewals_fail_beyond_the_renew_deadline() -> None:
    # A retry period that does not divide the deadline: the loss must not wait for the next retry.
    settings = fast_settings(lease_duration=1.0, renew_deadline=0.3, retry_period=0.2)
    leases = FakeLeases()
    elector = elector_for(leases, settings=settings)
    await elector.acquire()
    last_write = time.monotonic()
    leases.down = True
    with pytest.raises(LeadershipLost, match="no successful renewal"):
        await asyncio.wait_for(elector.hold(), 2)
    lost_after = time.monotonic() - last_write
    assert lost_after >= settings.renew_deadline - 0.02
    assert lost_after < settings.renew_deadline + 0.05  # at the deadline, not at the next retry (0.4)
    assert not elector.is_leader


async def test_the_deadline_counts_from_when_the_last_renewal_was_sent() -> None:
    # The server may store a write any time after it was sent, and others time the Lease
    # from when they see it: so our deadline must run from the send, not the answer.
    settings = fast_settings(lease_duration=1.0, renew_deadline=0.4, retry_period=0.1)
    leases = FakeLeases()
    leases.latency = 0.15
    elector = elector_for(leases, settings=settings)
    await elector.acquire()
    leases.down = True
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(elector.hold(), 2)
    since_sent = time.monotonic() - leases.last_write_sent
    assert since_sent < settings.renew_deadline + 0.05  # + latency (0.15) if timed from the answer
    assert since_sent < settings.lease_duration


async def test_stops_acting_in_time_even_when_the_api_hangs() -> None:
    settings = fast_settings()
    leases = FakeLeases()
    elector = elector_for(leases, settings=settings)
    await elector.acquire()
    last_write = time.monotonic()
    leases.hang = True
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(elector.hold(), 2)
    assert time.monotonic() - last_write < settings.renew_deadline + 0.1


async def test_keeps_leading_through_a_short_outage() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    await elector.acquire()
    holding = asyncio.ensure_future(elector.hold())
    leases.down = True
    await asyncio.sleep(0.15)  # shorter than renew_deadline (0.3)
    leases.down = False
    await asyncio.sleep(0.4)  # beyond the deadline counted from before the outage
    assert not holding.done()
    assert elector.is_leader
    holding.cancel()


async def test_loses_at_once_when_the_lease_is_taken_by_another() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    await elector.acquire()
    leases.put_holder("usurper", duration=15)
    started = time.monotonic()
    with pytest.raises(LeadershipLost, match="usurper"):
        await asyncio.wait_for(elector.hold(), 2)
    assert time.monotonic() - started < 0.2  # the next renewal, not the renew deadline


async def test_a_lease_from_an_earlier_version_loses_the_claims_label_at_the_first_write() -> None:
    leases = FakeLeases()
    leases.objects[(NS, NAME)] = {
        "metadata": {"name": NAME, "namespace": NS, "resourceVersion": "7",
                     "labels": {"app.kubernetes.io/managed-by": "session-operator", "team": "x"}},
        "spec": {"holderIdentity": "", "leaseDurationSeconds": 1},
    }
    elector = elector_for(leases)
    await asyncio.wait_for(elector.acquire(), 1)
    assert leases.objects[(NS, NAME)]["metadata"]["labels"] == {**leader.LEADER_LABELS, "team": "x"}


async def test_release_lets_a_standby_take_over_without_waiting_for_expiry() -> None:
    leases = FakeLeases()
    first = elector_for(leases, identity="first")
    second = elector_for(leases, identity="second")
    await first.acquire()
    assert await second.try_acquire_or_renew() is False
    assert await first.release() is True
    assert leases.spec()["holderIdentity"] == ""
    assert not first.is_leader
    started = time.monotonic()
    await asyncio.wait_for(second.acquire(), 1)
    assert time.monotonic() - started < 0.2  # well under the 1 s lease duration
    assert leases.spec()["holderIdentity"] == "second"
    assert leases.spec()["leaseTransitions"] == 1


async def test_a_crashed_leader_is_replaced_after_the_lease_expires() -> None:
    leases = FakeLeases()
    first = elector_for(leases, identity="first")
    second = elector_for(leases, identity="second")
    await first.acquire()  # then "crashes": no renewals, no release
    started = time.monotonic()
    await asyncio.wait_for(second.acquire(), 3)
    waited = time.monotonic() - started
    assert 1.0 <= waited < 1.5  # leaseDurationSeconds is 1 (0.5 s rounded up)
    assert leases.spec()["holderIdentity"] == "second"
    assert leases.spec()["leaseTransitions"] == 1


async def test_release_does_nothing_when_not_leading() -> None:
    leases = FakeLeases()
    leases.put_holder("other", duration=15)
    elector = elector_for(leases)
    await elector.try_acquire_or_renew()
    assert await elector.release() is False
    assert leases.spec()["holderIdentity"] == "other"


# Election around the work ---------------------------------------------------------------------


async def test_run_leading_runs_the_work_and_releases_on_stop() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    stop = asyncio.Event()
    seen: list[str] = []

    async def work() -> None:
        seen.append("started")
        assert elector.is_leader
        await stop.wait()
        seen.append("stopped")

    running = asyncio.ensure_future(run_leading(elector, work, stop=stop))
    await asyncio.sleep(0.2)
    assert seen == ["started"]
    stop.set()
    await asyncio.wait_for(running, 1)
    assert seen == ["started", "stopped"]
    assert leases.spec()["holderIdentity"] == ""
    assert not elector.is_leader


async def test_run_leading_cancels_the_work_when_leadership_is_lost() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def work() -> None:
        try:
            await asyncio.Event().wait()  # ignores stop: must be cancelled
        except asyncio.CancelledError:
            cancelled.set()
            raise

    running = asyncio.ensure_future(run_leading(elector, work, stop=stop))
    await asyncio.sleep(0.1)
    leases.down = True
    failed_at = time.monotonic()
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(running, 2)
    assert cancelled.is_set()
    assert stop.is_set()
    assert time.monotonic() - failed_at < 0.5


async def test_run_leading_returns_without_work_when_stopped_as_a_standby() -> None:
    leases = FakeLeases()
    leases.put_holder("other", duration=15)
    elector = elector_for(leases)
    stop = asyncio.Event()
    started: list[bool] = []

    async def work() -> None:
        started.append(True)

    running = asyncio.ensure_future(run_leading(elector, work, stop=stop))
    await asyncio.sleep(0.15)
    stop.set()
    await asyncio.wait_for(running, 1)
    assert started == []
    assert leases.spec()["holderIdentity"] == "other"


async def test_run_leading_releases_and_reraises_when_the_work_fails() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)

    async def work() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(run_leading(elector, work, stop=asyncio.Event()), 1)
    assert leases.spec()["holderIdentity"] == ""


async def test_run_leading_keeps_renewing_while_the_work_winds_down() -> None:
    leases = FakeLeases()
    elector = elector_for(leases)
    stop = asyncio.Event()

    async def work() -> None:
        await stop.wait()
        await asyncio.sleep(0.5)  # longer than renew_deadline: renewals must go on meanwhile
        assert elector.is_leader

    running = asyncio.ensure_future(run_leading(elector, work, stop=stop))
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(running, 2)
    assert leases.spec()["holderIdentity"] == ""


def test_module_does_not_import_kube() -> None:
    # Import-linter contract: leader must not pull in kubernetes_asyncio (through kube).
    source = Path(leader.__file__).read_text()
    assert "from .kube" not in source and "import kube" not in source
