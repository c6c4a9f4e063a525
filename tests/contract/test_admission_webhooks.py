"""Admission webhooks (validating and mutating), held to how a real kube-apiserver v1.24 called
them and answered.

Each scenario of ``webhook_scenarios.py`` and ``mutating_scenarios.py`` registers webhooks
served on loopback (HTTPS, a throw-away CA in ``caBundle``), makes requests, and is compared
exchange by exchange with the
``webhook-*`` exchanges of ``transcripts/kube-apiserver-v1.24.json`` (recorded by
``record_webhooks.py`` on a real server): status code, Status body, ``Warning`` headers, and
the AdmissionReviews the webhook received (or that none was sent). Runs against the emulator,
or unchanged against the cluster ``SESSION_OPERATOR_TEST_KUBECONFIG`` names.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from test_apiserver_contract import RECORDED_ON, TX, WIDGET_CRD, normalize, watch_cache_has_seen
from webhook_scenarios import GUARDED, all_scenarios, placeholders, run_scenario, scrub, widget

from support.kubeclient import KubeClient
from support.webhook_server import VWC_PATH, WebhookServer, allow, deny, register, unregister


def comparable(value: Any, namespace: str) -> Any:
    return normalize(scrub(value), namespace)


@pytest.fixture
async def widgets(kube: KubeClient) -> None:
    await kube.apply_crd(WIDGET_CRD)


@pytest.mark.parametrize("scenario", list(all_scenarios()))
async def test_webhook_scenario(kube: KubeClient, namespace: str, widgets: None, scenario: str) -> None:
    run, exchanges = await run_scenario(kube, scenario, namespace)
    assert exchanges
    for actual in placeholders(exchanges, run):
        name = actual["name"]
        recorded = TX[name]
        assert comparable(actual["request"], namespace) == comparable(recorded["request"], namespace), name
        got, want = actual["response"], recorded["response"]
        assert got["status"] == want["status"], (name, got)
        assert got.get("headers", {}).get("Warning", []) == want.get("headers", {}).get("Warning", []), (
            f"{name}: the Warning headers differ from what {RECORDED_ON} answered"
        )
        assert comparable(got["body"], namespace) == comparable(want["body"], namespace), (
            f"{name}: the answer differs from what {RECORDED_ON} answered"
        )
        assert [c["path"] for c in actual["webhook"]] == [c["path"] for c in recorded["webhook"]], (
            f"{name}: the webhook calls differ from what {RECORDED_ON} made"
        )
        for call, want_call in zip(actual["webhook"], recorded["webhook"], strict=True):
            assert comparable(call["review"], namespace) == comparable(want_call["review"], namespace), (
                f"{name}: the AdmissionReview differs from what {RECORDED_ON} sent"
            )


async def test_configuration_is_served_like_a_builtin(kube: KubeClient) -> None:
    """Discovery, get, list, update (generation), the optimistic lock, delete."""
    status, group = await kube.request("GET", "/apis/admissionregistration.k8s.io")
    assert status == 200 and group["preferredVersion"]["version"] == "v1"
    status, resources = await kube.request("GET", "/apis/admissionregistration.k8s.io/v1")
    entry = next(r for r in resources["resources"] if r["name"] == "validatingwebhookconfigurations")
    assert (entry["kind"], entry["namespaced"], entry.get("categories")) == (
        "ValidatingWebhookConfiguration",
        False,
        ["api-extensions"],
    )
    assert sorted(entry["verbs"]) == sorted(
        ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    )
    async with WebhookServer() as hook:
        name = f"served-{hook.port}"
        config = hook.configuration(name, [hook.webhook("a.webhooks.example.test", "/a", GUARDED)], probe=False)
        status, created = await kube.request("POST", VWC_PATH, json=config)
        assert status == 201, created
        try:
            status, listing = await kube.request("GET", VWC_PATH)
            assert status == 200 and listing["kind"] == "ValidatingWebhookConfigurationList"
            assert name in [item["metadata"]["name"] for item in listing["items"]]
            status, body = await kube.request(
                "PATCH", f"{VWC_PATH}/{name}", json={"metadata": {"labels": {"a": "b"}}}, content_type=MERGE
            )
            assert status == 200 and body["metadata"]["generation"] == 1
            replacement = copy.deepcopy(body)
            replacement["webhooks"][0]["timeoutSeconds"] = 5
            status, body = await kube.request("PUT", f"{VWC_PATH}/{name}", json=replacement)
            assert status == 200 and body["metadata"]["generation"] == 2, body
            status, body = await kube.request("PUT", f"{VWC_PATH}/{name}", json=replacement)
            assert status == 409 and body["reason"] == "Conflict", body
            del replacement["metadata"]["resourceVersion"]
            status, body = await kube.request("PUT", f"{VWC_PATH}/{name}", json=replacement)
            assert status == 422 and body["message"].endswith(
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
            ), body
        finally:
            status, body = await kube.request("DELETE", f"{VWC_PATH}/{name}")
            assert status == 200 and body["status"] == "Success", body


MERGE = "application/merge-patch+json"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
async def test_kubectl_prints_the_warnings_and_the_denial(
    cluster: Any, kube: KubeClient, namespace: str, widgets: None, tmp_path: Path
) -> None:
    async with WebhookServer() as hook:
        guard = [
            hook.webhook(
                "guard.webhooks.example.test",
                "/guard",
                GUARDED,
                namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            )
        ]
        config = hook.configuration(f"kubectl-{namespace}", guard)
        await register(kube, hook, config, namespace)
        try:
            hook.answer("/guard", allow(['check "spec.color"', "second"]))
            manifest = tmp_path / "w.json"
            manifest.write_text(json.dumps(widget("w1")))
            code, _, err = await kubectl(cluster.kubeconfig, "create", "-n", namespace, "-f", str(manifest))
            assert code == 0, err
            assert err.splitlines() == ['Warning: check "spec.color"', "Warning: second"]
            hook.answer("/guard", deny(409, "target t1 is held by s1", reason="Conflict"))
            manifest.write_text(json.dumps(widget("w2")))
            code, _, err = await kubectl(cluster.kubeconfig, "create", "-n", namespace, "-f", str(manifest))
            assert code == 1
            assert err.strip() == (
                f'Error from server (Conflict): error when creating "{manifest}": admission webhook '
                '"guard.webhooks.example.test" denied the request: target t1 is held by s1'
            )
        finally:
            await unregister(kube, config)


async def kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_webhooks_see_the_object_that_is_stored(kube: KubeClient, namespace: str, widgets: None) -> None:
    """The uid, creationTimestamp and generated name in the CREATE review are the stored ones."""
    async with WebhookServer() as hook:
        config = hook.configuration(f"identity-{namespace}", [here(hook, namespace, "audit", GUARDED)])
        await register(kube, hook, config, namespace)
        try:
            body = widget("")
            body["metadata"] = {"generateName": "gen-"}
            collection = f"/apis/example.test/v1/namespaces/{namespace}/widgets"
            status, created = await kube.request("POST", collection, json=body)
            assert status == 201, created
            [review] = hook.reviews("/audit")
            seen = review["request"]["object"]["metadata"]
            assert review["request"]["name"] == created["metadata"]["name"]
            for key in ("name", "uid", "creationTimestamp"):
                assert seen[key] == created["metadata"][key], key
        finally:
            await unregister(kube, config)


async def test_deletecollection_stops_at_a_denial(
    kube: KubeClient, namespace: str, widgets: None
) -> None:
    rules = [{"operations": ["DELETE"], "apiGroups": ["example.test"], "apiVersions": ["v1"], "resources": ["widgets"]}]
    collection = f"/apis/example.test/v1/namespaces/{namespace}/widgets"
    for name, label in (("a", "ok"), ("b", "keep"), ("c", "ok")):
        status, body = await kube.request("POST", collection, json=widget(name, label))
        assert status == 201, body
    async with WebhookServer() as hook:
        config = hook.configuration(
            f"collection-{namespace}",
            [
                here(hook, namespace, "ok", rules, objectSelector={"matchLabels": {"hook": "ok"}}),
                here(hook, namespace, "keep", rules, objectSelector={"matchLabels": {"hook": "keep"}}),
            ],
        )
        await register(kube, hook, config, namespace)
        hook.answer("/keep", deny(403, "b stays", reason="Forbidden"))
        try:
            status, body = await kube.request("DELETE", collection)
            assert (status, body.get("reason"), body.get("message")) == (
                403,
                "Forbidden",
                'admission webhook "keep.webhooks.example.test" denied the request: b stays',
            ), body
            requests = [review["request"] for review in hook.reviews()]
            # one delete after the other, each sent without a name (the collection's request has
            # none), up to the denial: c is neither sent nor deleted
            assert [(r["operation"], r["oldObject"]["metadata"]["name"]) for r in requests] == [
                ("DELETE", "a"),
                ("DELETE", "b"),
            ]
            assert not any("name" in r for r in requests)
            status, listing = await kube.request("GET", collection)
            assert [item["metadata"]["name"] for item in listing["items"]] == ["b", "c"]
            hook.answer("/keep", allow())
            status, body = await kube.request("DELETE", collection)
            assert status == 200 and [item["metadata"]["name"] for item in body["items"]] == ["b", "c"], body
        finally:
            await unregister(kube, config)


async def test_service_webhooks_are_not_called_by_the_emulator(
    kube: KubeClient, namespace: str, widgets: None, emulator: Any
) -> None:
    """The emulator has no Services to call: clientConfig.service fails like an unreachable
    webhook (by failurePolicy), with a message that says so."""
    async with WebhookServer() as hook:
        service = {"namespace": "default", "name": "guard", "path": "/validate"}
        hooks = [
            {**here(hook, namespace, name, GUARDED, **fields), "clientConfig": {"service": service}}
            for name, fields in (
                ("fail", {"objectSelector": {"matchLabels": {"hook": "fail"}}}),
                ("ignore", {"objectSelector": {"matchLabels": {"hook": "ignore"}}, "failurePolicy": "Ignore"}),
            )
        ]
        config = hook.configuration(f"service-{namespace}", hooks)
        await register(kube, hook, config, namespace)
        try:
            collection = f"/apis/example.test/v1/namespaces/{namespace}/widgets"
            status, body = await kube.request("POST", collection, json=widget("w1", "fail"))
            assert status == 500 and body["message"] == (
                'Internal error occurred: failed calling webhook "fail.webhooks.example.test": failed to call '
                'webhook: Post "https://guard.default.svc:443/validate?timeout=10s": the API emulator calls '
                "webhooks by clientConfig.url only, not by clientConfig.service"
            ), body
            status, body = await kube.request("POST", collection, json=widget("w2", "ignore"))
            assert status == 201, body
        finally:
            await unregister(kube, config)


def here(hook: WebhookServer, namespace: str, name: str, rules: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A webhook ``<name>.webhooks.example.test`` on path ``/<name>``, for ``namespace`` only."""
    fields.setdefault("namespaceSelector", {"matchLabels": {"kubernetes.io/metadata.name": namespace}})
    return hook.webhook(f"{name}.webhooks.example.test", f"/{name}", rules, **fields)


async def test_a_write_is_admitted_again_when_the_object_changed_meanwhile(
    kube: KubeClient, namespace: str, widgets: None
) -> None:
    """While the webhook takes its time over patch A, patch B changes the object; A is then
    applied to B's result and sent to the webhook again (kube-apiserver retries the update)."""
    rules = [{"operations": ["UPDATE"], "apiGroups": ["example.test"], "apiVersions": ["v1"], "resources": ["widgets"]}]
    collection = f"/apis/example.test/v1/namespaces/{namespace}/widgets"
    path = f"{collection}/w1"
    status, body = await kube.request("POST", collection, json=widget("w1"))
    assert status == 201, body
    # a real server starts an update from its watch cache: from a stale object it would call
    # the webhook once more than the test expects
    await watch_cache_has_seen(kube, collection, body["metadata"]["resourceVersion"])

    async def slow_for_size_5(request: dict[str, Any]) -> dict[str, Any]:
        if request["object"]["spec"].get("size") == 5:
            await asyncio.sleep(1.0)
        return {"allowed": True}

    async with WebhookServer() as hook:
        config = hook.configuration(f"retry-{namespace}", [here(hook, namespace, "slow", rules)])
        await register(kube, hook, config, namespace)
        hook.answer("/slow", slow_for_size_5)
        try:
            first = asyncio.create_task(kube.request("PATCH", path, json={"spec": {"size": 5}}, content_type=MERGE))
            for _ in range(100):
                if hook.reviews("/slow"):
                    break
                await asyncio.sleep(0.02)
            status, body = await kube.request("PATCH", path, json={"spec": {"color": "blue"}}, content_type=MERGE)
            assert status == 200, body
            status, body = await first
            assert status == 200 and body["spec"] == {"color": "blue", "size": 5}, body
            seen = [
                (r["request"]["object"]["spec"], r["request"]["oldObject"]["spec"]) for r in hook.reviews("/slow")
            ]
            assert seen == [
                ({"color": "red", "size": 5}, {"color": "red", "size": 3}),
                ({"color": "blue", "size": 3}, {"color": "red", "size": 3}),
                ({"color": "blue", "size": 5}, {"color": "blue", "size": 3}),
            ]
        finally:
            await unregister(kube, config)
