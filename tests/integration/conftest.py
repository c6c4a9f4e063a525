"""Integration fixtures: the Session CRD installed once, and the real operator process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from session_operator.kube import Conflict, Kube, NotFound
from session_operator.model import LEGACY_FINALIZER as FINALIZER
from support.apiserver import without_transition_rules
from support.operator_process import OperatorProcess

CRDS = Path(__file__).resolve().parents[2] / "crds"
CRD_PATH = CRDS / "sessions.session-operator.io.yaml"
POLICY_CRD_PATH = CRDS / "sessionpolicies.session-operator.io.yaml"


async def _install_crds(kubeconfig: Path, transition_rules: bool) -> None:
    kube = await Kube.connect(str(kubeconfig))
    try:
        for crd_path, plural in ((CRD_PATH, "sessions"), (POLICY_CRD_PATH, "sessionpolicies")):
            crd = yaml.safe_load(crd_path.read_text())
            if not transition_rules:
                crd = without_transition_rules(crd)
            path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
            try:
                await kube.request("POST", path, body=crd)
            except Conflict:
                current = await kube.request("GET", f"{path}/{crd['metadata']['name']}")
                crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                await kube.request("PUT", f"{path}/{crd['metadata']['name']}", body=crd)
            for _ in range(200):
                try:
                    await kube.request("GET", f"/apis/session-operator.io/v1alpha1/{plural}", query={"limit": "1"})
                    break
                except NotFound:
                    await asyncio.sleep(0.05)
            else:
                raise RuntimeError(f"the CRD {crd['metadata']['name']} was not served in time")
    finally:
        await kube.close()


@pytest.fixture(scope="session")
def session_crd(cluster: Any) -> Path:
    asyncio.run(_install_crds(cluster.kubeconfig, cluster.transition_rules))
    return CRD_PATH


@pytest.fixture(scope="session")
def shared_operator(
    cluster: Any, session_crd: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster.kubeconfig, tmp_path_factory.mktemp("operator"), name="shared")
    yield process
    if process.running():
        code = process.stop()
        assert code == 0, f"the operator exited with {code}:\n{process.logs()[-3000:]}"


@pytest.fixture
def operator(shared_operator: OperatorProcess) -> OperatorProcess:
    """One operator for the tests that only need one running (each test has its own
    namespace); started on first use, and again after a test that needed it gone."""
    if not shared_operator.running():
        shared_operator.start()
    return shared_operator


@pytest.fixture
def operator_factory(shared_operator: OperatorProcess, tmp_path: Path) -> Iterator[Any]:
    """Operators of a test's own (to kill, restart, or run two at once). The shared one
    is stopped first, so that nothing but these acts during the test."""
    if shared_operator.running():
        code = shared_operator.stop()
        assert code == 0, f"the operator exited with {code}:\n{shared_operator.logs()[-3000:]}"
    started: list[OperatorProcess] = []

    def make(name: str = "own", **kwargs: Any) -> OperatorProcess:
        process = OperatorProcess(shared_operator.kubeconfig, tmp_path, name=name, **kwargs)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture(autouse=True)
async def _namespaces_can_go(kube: Any) -> Any:
    """At teardown, take our finalizer off sessions the test left behind, so that its
    namespaces are deleted even when no operator runs any more (on a real cluster they
    would otherwise stay Terminating). Torn down after the test's operators stop and
    before the namespaces are deleted."""
    yield
    for namespace in list(kube.created_namespaces):
        status, listing = await kube.request(
            "GET", f"/apis/session-operator.io/v1alpha1/namespaces/{namespace}/sessions"
        )
        if status != 200:
            continue
        for item in listing.get("items", []):
            finalizers = item["metadata"].get("finalizers") or []
            if FINALIZER in finalizers:
                await kube.request(
                    "PATCH",
                    f"/apis/session-operator.io/v1alpha1/namespaces/{namespace}/sessions/{item['metadata']['name']}",
                    json={"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER] or None}},
                    content_type="application/merge-patch+json",
                )
