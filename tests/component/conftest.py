"""Component-tier fixtures: an API emulator and the operator's parts, all in the test's loop.

    server      a fresh ``kube_emulator.Emulator`` with the Session CRD, in this loop
    client      a raw client for the test's own requests (support/kubeclient.py), as kubectl
    kube        the operator's ``kube.Kube``, connected through the emulator's kubeconfig
    operator    factory: ``await operator(namespaces=..., <any Settings field>=..., start=True)`` ->
                ``support.inloop.InLoopOperator``; stopped and checked at teardown
    namespace   a fresh namespace
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from kube_emulator import Emulator
from session_operator.kube import Kube
from support.inloop import InLoopOperator
from support.kubeclient import KubeClient

CRDS = Path(__file__).resolve().parents[2] / "crds"
CRD_PATHS = [CRDS / "sessions.session-operator.io.yaml", CRDS / "sessionpolicies.session-operator.io.yaml"]

OperatorFactory = Callable[..., Awaitable[InLoopOperator]]


@pytest.fixture
async def server() -> AsyncIterator[Emulator]:
    # Bookmarks every 50 ms let a watcher tell when it has seen everything up to a version.
    emulator = Emulator(crds=CRD_PATHS, bookmark_interval=0.05)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
def kubeconfig(server: Emulator, tmp_path: Path) -> Path:
    return server.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
async def client(kubeconfig: Path) -> AsyncIterator[KubeClient]:
    raw = KubeClient(kubeconfig)
    try:
        yield raw
    finally:
        raw.created_namespaces.clear()  # the emulator goes with the test
        await raw.close()


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[Kube]:
    connected = await Kube.connect(str(kubeconfig))
    try:
        yield connected
    finally:
        await connected.close()


@pytest.fixture
async def namespace(client: KubeClient) -> str:
    return await client.create_namespace("c")


@pytest.fixture
async def operator(kube: Kube) -> AsyncIterator[OperatorFactory]:
    made: list[InLoopOperator] = []

    async def make(*, start: bool = True, **kwargs: Any) -> InLoopOperator:
        op = InLoopOperator(kube, **kwargs)
        made.append(op)
        if start:
            await op.start()
        return op

    try:
        yield make
    finally:
        for op in made:
            await op.stop()
    for op in made:
        op.check()
