"""The chart installed on a real cluster: `make kind-up && make e2e`.

Needs ``SESSION_OPERATOR_TEST_KUBECONFIG`` (a cluster) and ``SESSION_OPERATOR_E2E_IMAGE``
(the operator's image, already loaded into the cluster's nodes: `make kind-load`);
skipped otherwise. The chart is installed with Helm's own library (no helm binary), in
namespaced mode: the operator it installs watches only ``WATCHED``, so it never touches
the namespaces that the contract and integration tiers create next, where those tiers
run operators of their own.

The release namespace enforces the restricted Pod Security Standard, so a pod that
did not meet it would not even be created.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest

from support.chart import CHART_DIR, render
from support.kubeclient import KubeClient
from support.rbac_grants import CLUSTER, grants

KUBECONFIG = os.environ.get("SESSION_OPERATOR_TEST_KUBECONFIG", "").strip()
IMAGE = os.environ.get("SESSION_OPERATOR_E2E_IMAGE", "").strip()
RELEASE = "session-operator"
RELEASE_NS = "session-operator-e2e"
WATCHED = "session-operator-e2e-sessions"
UNWATCHED = "session-operator-e2e-elsewhere"
SESSIONS = "/apis/session-operator.io/v1alpha1"

pytestmark = pytest.mark.skipif(
    not (KUBECONFIG and IMAGE), reason="needs SESSION_OPERATOR_TEST_KUBECONFIG and SESSION_OPERATOR_E2E_IMAGE"
)


def values() -> dict[str, Any]:
    repository, _, tag = IMAGE.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "watchNamespaces": [WATCHED],
        "operator": {"logFormat": "text", "defaultArchiveAfter": "1h"},
    }


async def _prepare_namespaces() -> None:
    kube = KubeClient(Path(KUBECONFIG))
    try:
        for name, labels in (
            (RELEASE_NS, {"pod-security.kubernetes.io/enforce": "restricted"}),
            (WATCHED, {}),
            (UNWATCHED, {}),
        ):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
            status, answer = await kube.request("POST", "/api/v1/namespaces", json=body)
            assert status in (201, 409), (status, answer)
    finally:
        await kube.close()


@pytest.fixture(scope="module")
def installed() -> Iterator[list[dict[str, Any]]]:
    asyncio.run(_prepare_namespaces())
    with helm.Config(kubeconfig_path=KUBECONFIG, namespace=RELEASE_NS) as config:
        if any(release["name"] == RELEASE for release in config.list()):
            config.upgrade(CHART_DIR, RELEASE, values(), timeout=300)
        else:
            config.install(CHART_DIR, RELEASE, values(), namespace=RELEASE_NS, timeout=300)
        yield render(values(), release=RELEASE, namespace=RELEASE_NS)
        config.uninstall(RELEASE)


async def eventually(check: Any, timeout: float = 180.0, interval: float = 1.0) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check.__name__}")
        await asyncio.sleep(interval)


async def test_one_pod_leads_and_is_ready(installed: list[dict[str, Any]], kube: KubeClient) -> None:
    async def leader_ready() -> dict[str, Any] | None:
        _, deployment = await kube.request("GET", f"/apis/apps/v1/namespaces/{RELEASE_NS}/deployments/{RELEASE}")
        return deployment if (deployment.get("status") or {}).get("readyReplicas") == 1 else None

    await eventually(leader_ready)
    selector = {"labelSelector": f"app.kubernetes.io/instance={RELEASE}"}
    _, pods = await kube.request("GET", f"/api/v1/namespaces/{RELEASE_NS}/pods", params=selector)
    running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
    assert len(running) == 2  # the chart's two replicas passed restricted Pod Security
    ready = [
        p["metadata"]["name"]
        for p in running
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    ]
    assert len(ready) == 1, "exactly one replica (the leader) is Ready"
    _, lease = await kube.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{RELEASE_NS}/leases/session-operator-leader"
    )
    assert lease["spec"]["holderIdentity"] == ready[0]


def session(name: str, target: str) -> dict[str, Any]:
    return {
        "apiVersion": "session-operator.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name},
        "spec": {"target": target},
    }


async def phase_of(kube: KubeClient, namespace: str, name: str) -> str | None:
    status, body = await kube.request("GET", f"{SESSIONS}/namespaces/{namespace}/sessions/{name}")
    assert status == 200, (status, body)
    return (body.get("status") or {}).get("phase")


async def test_a_first_session(installed: list[dict[str, Any]], kube: KubeClient) -> None:
    path = f"{SESSIONS}/namespaces/{WATCHED}/sessions"
    status, body = await kube.request("POST", path, json=session("first", "e2e/one"))
    assert status == 201, (status, body)

    async def decided() -> str | None:
        return await phase_of(kube, WATCHED, "first")

    await eventually(decided, timeout=120)
    assert await phase_of(kube, WATCHED, "first") == "Active"
    # The webhook (on by default) refuses the second at once; were it not answering yet,
    # the create would pass (failurePolicy Ignore) and the operator would reject it.
    status, body = await kube.request("POST", path, json=session("second", "e2e/one"))
    if status == 201:

        async def rejected() -> bool:
            return await phase_of(kube, WATCHED, "second") == "Rejected"

        await eventually(rejected, timeout=120)
    else:
        assert status == 409, (status, body)
        assert 'held by session "first"' in body["message"]


async def test_the_webhook_answers_through_its_service(installed: list[dict[str, Any]], kube: KubeClient) -> None:
    """The chart's Service, certificate and caBundle work: the API server reaches a replica
    and trusts it. A duration too large is refused only by the webhook (the schema lets it
    through), so a 422 with the webhook's prefix is its answer."""
    path = f"{SESSIONS}/namespaces/{WATCHED}/sessions"
    invalid = session("forever", "e2e/forever")
    invalid["spec"]["maxDuration"] = "3000000h"

    async def refused() -> dict[str, Any] | None:
        status, body = await kube.request("POST", path, json=invalid, params={"dryRun": "All"})
        return body if status == 422 else None

    body = await eventually(refused, timeout=120)
    assert body["message"].startswith(
        'admission webhook "sessions.session-operator.io" denied the request: spec.maxDuration: '
    )
    # Outside the watched namespaces the webhook is not called: the operator decides nothing there.
    status, _ = await kube.request(
        "POST", f"{SESSIONS}/namespaces/{UNWATCHED}/sessions", json=invalid, params={"dryRun": "All"}
    )
    assert status == 201


async def test_namespaces_outside_the_list_are_left_alone(installed: list[dict[str, Any]], kube: KubeClient) -> None:
    status, body = await kube.request("POST", f"{SESSIONS}/namespaces/{UNWATCHED}/sessions", json=session("x", "e2e/x"))
    assert status == 201, (status, body)
    await asyncio.sleep(10)
    assert await phase_of(kube, UNWATCHED, "x") is None


async def test_the_api_server_enforces_the_rendered_grants(installed: list[dict[str, Any]], kube: KubeClient) -> None:
    """Each rendered grant is allowed to the ServiceAccount, and a few neighbours are not."""
    user = f"system:serviceaccount:{RELEASE_NS}:{RELEASE}"

    async def allowed(group: str, resource: str, verb: str, namespace: str, name: str = "") -> bool:
        resource, _, subresource = resource.partition("/")
        attributes = {"group": group, "resource": resource, "verb": verb, "subresource": subresource}
        if namespace != CLUSTER:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user, "groups": ["system:serviceaccounts"], "resourceAttributes": attributes},
        }
        status, body = await kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", json=review)
        assert status == 201, (status, body)
        return bool(body["status"].get("allowed"))

    for grant in grants(installed):
        name = "session-operator-leader" if grant.scope == RELEASE_NS and grant.verb != "create" else ""
        assert await allowed(grant.api_group, grant.resource, grant.verb, grant.scope, name), grant
    assert not await allowed("", "namespaces", "list", CLUSTER)
    assert not await allowed("session-operator.io", "sessions", "list", UNWATCHED)
    assert not await allowed("coordination.k8s.io", "leases", "get", RELEASE_NS, "someone-else")


async def test_an_upgrade_keeps_the_charts_certificate(installed: list[dict[str, Any]], kube: KubeClient) -> None:
    """The chart looks its webhook Secret up and keeps it: an upgrade changes neither the
    certificate the pods serve nor the CA the API server trusts."""
    secret_path = f"/api/v1/namespaces/{RELEASE_NS}/secrets/{RELEASE}-webhook-tls"
    config_path = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{RELEASE}"

    async def current() -> tuple[dict[str, Any], str]:
        status, secret = await kube.request("GET", secret_path)
        assert status == 200, (status, secret)
        status, configuration = await kube.request("GET", config_path)
        assert status == 200, (status, configuration)
        return secret["data"], configuration["webhooks"][0]["clientConfig"]["caBundle"]

    before, ca_before = await current()
    assert ca_before == before["ca.crt"]
    with helm.Config(kubeconfig_path=KUBECONFIG, namespace=RELEASE_NS) as config:
        config.upgrade(CHART_DIR, RELEASE, values(), timeout=300)
    after, ca_after = await current()
    assert after == before
    assert ca_after == ca_before
