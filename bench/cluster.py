"""The API server a case runs against, and the benchmark's own client.

* ``EmulatorServer``: ``python -m kube_emulator --tls`` in a process of its own (so its
  CPU is not the benchmark's), on loopback, with its control handle over HTTP
  (``/_emulator/...``). Each case starts a fresh one, so no case sees another's objects.
* ``RealCluster``: the cluster named by ``SESSION_OPERATOR_TEST_KUBECONFIG``. Cases run
  in namespaces of their own, deleted (and waited for) when the case ends.

Both are used as ``async with server_for(case) as server: ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from support.apiserver import TRANSITION_RULES_SINCE, without_transition_rules
from support.kubeclient import KubeClient

ROOT = Path(__file__).resolve().parents[1]
CRD_PATH = ROOT / "crds" / "sessions.session-operator.io.yaml"
POLICY_CRD_PATH = ROOT / "crds" / "sessionpolicies.session-operator.io.yaml"
POLICIES = "/apis/session-operator.io/v1alpha1/sessionpolicies"
KUBECONFIG_ENV = "SESSION_OPERATOR_TEST_KUBECONFIG"
USER_AGENT = "session-operator-bench/1"
SESSIONS = "/apis/session-operator.io/v1alpha1/sessions"
LEASES = "/apis/coordination.k8s.io/v1/leases"
CLAIM_SELECTOR = "app.kubernetes.io/managed-by=session-operator"


def sessions_path(namespace: str, name: str = "", sub: str = "") -> str:
    path = f"/apis/session-operator.io/v1alpha1/namespaces/{namespace}/sessions"
    if name:
        path += f"/{name}"
    return f"{path}/{sub}" if sub else path


def leases_path(namespace: str, name: str = "") -> str:
    path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{path}/{name}" if name else path


class BenchClient(KubeClient):
    """The tests' raw client, under the benchmark's own user agent (so that the emulator's
    request counts tell its requests from the operator's), with room for many connections."""

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": f"{USER_AGENT} (bench)", "Accept": "application/json"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context(), limit=200)
            self._session = aiohttp.ClientSession(headers=headers, connector=connector)
        return self._session

    async def ok(self, method: str, path: str, *, want: tuple[int, ...] = (200, 201), **kwargs: Any) -> dict[str, Any]:
        """One request that must succeed; raises with the server's answer otherwise."""
        status, body = await self.request(method, path, **kwargs)
        if status not in want:
            raise RuntimeError(f"{method} {path}: {status} {str(body)[:400]}")
        return body

    async def new_namespace(self, prefix: str) -> str:
        name = f"bench-{prefix}-{secrets.token_hex(3)}"[:63]
        await self.ok("POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace",
                                                          "metadata": {"name": name}})
        return name

    async def list_all(self, path: str, params: dict[str, str] | None = None, limit: int = 500) -> tuple[int, str]:
        """A paged LIST (``limit``, ``continue``), as an informer fills its cache; returns
        the number of items and the listing's resourceVersion."""
        count, token = 0, ""
        while True:
            query = {**(params or {}), "limit": str(limit)}
            if token:
                query["continue"] = token
            page = await self.ok("GET", path, params=query)
            count += len(page.get("items") or ())
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return count, str((page.get("metadata") or {}).get("resourceVersion") or "")


class Server:
    """What a case needs of an API server."""

    kubeconfig: Path
    is_emulator: bool = False
    control: Any = None  # kube_emulator.HttpEmulatorControl on the emulator
    name: str = ""

    def __init__(self) -> None:
        self.namespaces: list[str] = []

    def client(self) -> BenchClient:
        return BenchClient(self.kubeconfig)

    async def new_namespace(self, client: BenchClient, prefix: str) -> str:
        name = await client.new_namespace(prefix)
        self.namespaces.append(name)
        return name


class EmulatorServer(Server):
    is_emulator = True

    def __init__(self, workdir: Path, label: str, watch_history: int = 10_000) -> None:
        super().__init__()
        self.workdir = workdir
        self.label = label
        self.kubeconfig = workdir / f"kubeconfig-{label}"
        self.log_path = workdir / f"emulator-{label}.log"
        self.watch_history = watch_history
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.name = "emulator"

    async def start(self) -> EmulatorServer:
        from kube_emulator import HttpEmulatorControl

        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "emulator"), env.get("PYTHONPATH", "")])
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kube_emulator", "--host", "127.0.0.1", "--port", "0", "--tls",
             "--kubeconfig", str(self.kubeconfig), "--crd", str(CRD_PATH), "--crd", str(POLICY_CRD_PATH),
             "--watch-history", str(self.watch_history)],
            stdout=subprocess.PIPE, stderr=log, env=env,
        )  # fmt: skip
        log.close()
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 60)).decode().strip()
        if not line.startswith("ready "):
            raise RuntimeError(f"the emulator did not start: {line!r} (see {self.log_path})")
        self.url = line.split(" ", 1)[1]
        from support.kubeclient import KubeConfig

        self.control = HttpEmulatorControl(self.url, KubeConfig(self.kubeconfig).ca_data)
        return self

    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, 10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


class RealCluster(Server):
    def __init__(self, kubeconfig: Path) -> None:
        super().__init__()
        self.kubeconfig = kubeconfig

    async def prepare(self) -> None:
        client = self.client()
        try:
            version = await client.ok("GET", "/version")
            self.name = str(version.get("gitVersion") or "unknown")
            minor = int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()) or 0)
            for path in (CRD_PATH, POLICY_CRD_PATH):
                crd = yaml.safe_load(path.read_text())
                if minor < TRANSITION_RULES_SINCE:  # oldSelf rules do not compile before 1.25
                    crd = without_transition_rules(crd)
                await client.apply_crd(crd)
        finally:
            await client.close()

    async def cleanup(self, timeout: float = 180.0) -> list[str]:
        """Delete this case's namespaces and wait until they are gone; returns those still there."""
        if not self.namespaces:
            return []
        client = self.client()
        try:
            for name in self.namespaces:
                await client.request("DELETE", f"/api/v1/namespaces/{name}")
            deadline = time.monotonic() + timeout
            left = list(self.namespaces)
            while left and time.monotonic() < deadline:
                still = []
                for name in left:
                    status, _ = await client.request("GET", f"/api/v1/namespaces/{name}")
                    if status != 404:
                        still.append(name)
                left = still
                if left:
                    await asyncio.sleep(1.0)
            self.namespaces = []
            return left
        finally:
            await client.close()


def real_kubeconfig() -> Path | None:
    value = os.environ.get(KUBECONFIG_ENV, "").strip()
    return Path(value) if value else None


@contextlib.asynccontextmanager
async def server_for(label: str, workdir: Path, real: RealCluster | None) -> AsyncIterator[Server]:
    """A fresh emulator for this case, or the real cluster (its namespaces removed afterwards)."""
    if real is not None:
        try:
            yield real
        finally:
            left = await real.cleanup()
            if left:
                print(f"  note: namespaces still terminating after the case: {', '.join(left)}", flush=True)
        return
    server = EmulatorServer(workdir, label)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
