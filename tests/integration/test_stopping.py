"""SIGTERM stops the operator promptly in every state it can be in, and a leader
releases its Lease on the way out; a missing CRD is named in the log and /readyz.

The states: no Session CRD on the server, no API server at all, leading, standby.
(Stopping mid-burst and mid-relist are in test_recovery.py and test_operations.py.)
Bounds here are generous, for a busy machine; each test prints what it measured.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import sessions as s
from support.kubeclient import KubeClient
from support.operator_process import OperatorProcess, free_port

MISSING = "this cluster does not serve sessions.session-operator.io (the Session CRD is not installed)"
CRDS = sorted((Path(__file__).resolve().parents[2] / "crds").glob("*.yaml"))
BOUND = 5.0  # seconds from SIGTERM to exit, for a busy machine; measured values are printed (0.2 to 1.6 s)


def stopped_within(process: OperatorProcess) -> float:
    started = time.monotonic()
    code = process.stop(timeout=30)
    took = time.monotonic() - started
    print(f"{process.name}: exit {code} {took:.2f}s after SIGTERM")
    assert code == 0, process.logs()[-3000:]
    assert took < BOUND, f"took {took:.1f}s to stop:\n{process.logs()[-3000:]}"
    return took


async def until(check: Any, what: str, within: float = 30.0) -> None:
    await s.eventually(lambda: asyncio.to_thread(check), within=within, what=what)


@pytest.fixture
def bare_emulator(tmp_path: Path) -> Any:
    """An API server of its own, with no CRD installed; its kubeconfig."""
    from kube_emulator import EmulatorThread

    thread = EmulatorThread(tls=True)
    thread.start()
    try:
        yield thread.write_kubeconfig(tmp_path / "kubeconfig")
    finally:
        thread.stop()


async def test_without_the_crd_it_says_so_recovers_and_stops(bare_emulator: Any, tmp_path: Path) -> None:
    kubeconfig = bare_emulator
    process = OperatorProcess(kubeconfig, tmp_path, name="no-crd").start(wait=False)
    try:
        await until(lambda: MISSING in process.logs(), "the log naming the missing CRD")
        status, text = process._get(process.health_port, "/readyz")
        assert status == 503 and MISSING in text, (status, text)
        assert "kubectl apply --server-side -f charts/session-operator/crds/" in text
    finally:
        stopped_within(process)
    # Started again, it recovers by itself once the CRD appears.
    process.start(wait=False)
    try:
        await until(lambda: MISSING in process.logs().rpartition("===== start")[2], "the missing CRD named again")
        client = KubeClient(kubeconfig)
        try:
            for path in CRDS:
                await client.apply_crd(path)
        finally:
            await client.close()
        await until(process.ready, "ready once the CRD is installed", within=60)
    finally:
        stopped_within(process)


async def test_without_an_api_server_it_stops(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    port = free_port()  # nobody listens there
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "u"}}],
    }))
    for leader_elect in (False, True):
        process = OperatorProcess(kubeconfig, tmp_path, name=f"unreachable-{leader_elect}", leader_elect=leader_elect)
        process.start(wait=False)
        await until(lambda p=process: "Failed" in p.logs() or "Could not" in p.logs(), "a failed request")
        stopped_within(process)


async def test_a_leader_releases_its_lease_and_a_standby_stops(
    kube: Any, operator_factory: Any
) -> None:
    leader = operator_factory("leader-a", leader_elect=True).start(wait=False)
    await until(leader.ready, "the first replica leading")
    standby = operator_factory("standby-b", leader_elect=True).start(wait=False)
    await until(lambda: "Waiting for leader lease" in standby.logs(), "the second replica waiting")
    stopped_within(standby)
    stopped_within(leader)
    assert "Released leader lease" in leader.logs()
    status, lease = await kube.request(
        "GET", "/apis/coordination.k8s.io/v1/namespaces/default/leases/session-operator-leader"
    )
    assert status == 200 and not lease["spec"].get("holderIdentity"), lease
