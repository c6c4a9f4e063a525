"""Back within seconds of the API server: the API server's process is killed, stays
away, and comes back on the same address; the operator decides again within a few
seconds of it answering, however long it was gone (its retries wait at most about 2 s
while the server cannot be reached, instead of a backoff grown through the outage).

Runs its own API emulator process (a real cluster's API server cannot be killed from
here); the state is in memory, so the server comes back empty, as after a restore.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from support import sessions as s
from support.kubeclient import KubeClient
from support.operator_process import OperatorProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
OUTAGE = 12.0  # seconds: long enough for an uncapped backoff to grow past 6 s
BOUND = 6.0  # seconds from the server answering to the first decision (measured: about 2 s)


class ApiServer:
    """The emulator as a process of its own, on a fixed port, with a fixed token."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.kubeconfig = workdir / "kubeconfig"
        self.log = workdir / "emulator.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "emulator"), os.environ.get("PYTHONPATH", "")])}
        crds = [arg for path in sorted((ROOT / "crds").glob("*.yaml")) for arg in ("--crd", str(path))]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kube_emulator", "--host", "127.0.0.1", "--port", str(self.port),
                 "--token", "outage-test", "--kubeconfig", str(self.kubeconfig), *crds],
                stdout=subprocess.PIPE, stderr=log, env=env,
            )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert line.startswith("ready "), f"the emulator did not start: {line!r}"

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture
def api_server(cluster: Any, tmp_path: Path) -> Any:
    if not cluster.is_emulator:
        pytest.skip("kills its own API server process: emulator only")
    server = ApiServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


async def decided(kubeconfig: Path, name: str, within: float) -> float:
    client = KubeClient(kubeconfig)
    try:
        await client.request("POST", "/api/v1/namespaces", json={"metadata": {"name": "outage"}})
        await s.create(client, "outage", name, f"repo/{name}")
        started = time.monotonic()
        await s.phases_when_settled(client, "outage", [name], within=within)
        return time.monotonic() - started
    finally:
        await client.close()


async def test_decisions_resume_within_seconds_of_the_api_server(api_server: ApiServer, tmp_path: Path) -> None:
    operator = OperatorProcess(api_server.kubeconfig, tmp_path, name="outage").start()
    try:
        await decided(api_server.kubeconfig, "before", within=30)
        api_server.kill()
        await asyncio.sleep(OUTAGE)  # the outage itself: nothing to wait for but time
        api_server.start()
        back = time.monotonic()
        await decided(api_server.kubeconfig, "after", within=60)
        took = time.monotonic() - back
        print(f"first decision {took:.2f}s after the API server answered again, after a {OUTAGE:.0f}s outage")
        assert took < BOUND, operator.logs()[-3000:]
    finally:
        assert operator.stop() == 0, operator.logs()[-3000:]
