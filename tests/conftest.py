"""Shared fixtures: a Kubernetes API to test against.

By default the in-repo API emulator (``kube_emulator``, in ``emulator/``) runs over TLS in a
background thread for the whole session. When ``SESSION_OPERATOR_TEST_KUBECONFIG`` names
a kubeconfig, the same tests use that cluster instead, and tests marked ``faults``
(which need the emulator's fault injection) are skipped.

Fixtures:
    cluster    (session) .kubeconfig: Path, .url: str, .emulator: control handle or None,
               .is_emulator: bool
    kube       (function) raw async client bound to the cluster (tests/support/kubeclient.py);
               namespaces it created are deleted at teardown
    namespace  (function) a fresh namespace name
    emulator   (function) the emulator's control handle; skips on a real cluster
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from support.apiserver import TRANSITION_RULES_SINCE, server_minor
from support.kubeclient import KubeClient, KubeConfig

KUBECONFIG_ENV = "SESSION_OPERATOR_TEST_KUBECONFIG"


@dataclass
class Cluster:
    kubeconfig: Path
    url: str
    emulator: Any  # kube_emulator.EmulatorControl, or None on a real cluster
    is_emulator: bool
    transition_rules: bool = True  # CEL rules with oldSelf compile here (support.apiserver)


def _real_kubeconfig() -> Path | None:
    value = os.environ.get(KUBECONFIG_ENV, "").strip()
    return Path(value) if value else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    real = _real_kubeconfig()
    if real is None:
        return
    skip = pytest.mark.skip(reason=f"needs the API emulator's fault injection ({KUBECONFIG_ENV} is set)")
    no_rules = pytest.mark.skip(reason="API server before 1.25: CEL transition rules (oldSelf) do not compile")
    old_server: bool | None = None
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)
        if "transition_rules" in item.keywords:
            if old_server is None:
                old_server = server_minor(real) < TRANSITION_RULES_SINCE
            if old_server:
                item.add_marker(no_rules)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    real = _real_kubeconfig()
    if real is not None:
        yield Cluster(
            kubeconfig=real, url=KubeConfig(real).server, emulator=None, is_emulator=False,
            transition_rules=server_minor(real) >= TRANSITION_RULES_SINCE,
        )
        return
    from kube_emulator import EmulatorThread

    thread = EmulatorThread(tls=True, watch_history=5000)
    thread.start()
    try:
        kubeconfig = thread.write_kubeconfig(tmp_path_factory.mktemp("emulator") / "kubeconfig")
        yield Cluster(kubeconfig=kubeconfig, url=thread.url, emulator=thread.control, is_emulator=True)
    finally:
        thread.stop()


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[KubeClient]:
    client = KubeClient(cluster.kubeconfig)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def namespace(kube: KubeClient) -> str:
    return await kube.create_namespace("test")


@pytest.fixture
def emulator(cluster: Cluster) -> Any:
    """The emulator's control handle (faults, request counts); skips on a real cluster."""
    if cluster.emulator is None:
        pytest.skip(f"needs the API emulator ({KUBECONFIG_ENV} is set)")
    cluster.emulator.clear_faults()
    yield cluster.emulator
    cluster.emulator.clear_faults()
