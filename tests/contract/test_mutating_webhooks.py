"""Mutating admission webhooks beyond the recorded scenarios of ``mutating_scenarios.py``: the
configuration served like any built-in, a write made again while its webhook takes its time,
deletecollection. Runs against the emulator, or unchanged against the cluster
``SESSION_OPERATOR_TEST_KUBECONFIG`` names (except what needs the emulator)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from test_apiserver_contract import WIDGET_CRD, watch_cache_has_seen
from webhook_scenarios import GUARDED, widget

from support.kubeclient import KubeClient
from support.webhook_server import MUTATING, MWC_PATH, WebhookServer, patch, register, unregister

MERGE = "application/merge-patch+json"


@pytest.fixture
async def widgets(kube: KubeClient) -> None:
    await kube.apply_crd(WIDGET_CRD)


def here(hook: WebhookServer, namespace: str, name: str, rules: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A webhook ``<name>.webhooks.example.test`` on path ``/<name>``, for ``namespace`` only."""
    fields.setdefault("namespaceSelector", {"matchLabels": {"kubernetes.io/metadata.name": namespace}})
    return hook.webhook(f"{name}.webhooks.example.test", f"/{name}", rules, **fields)


def widget_rules(operation: str) -> list[dict[str, Any]]:
    return [{"operations": [operation], "apiGroups": ["example.test"], "apiVersions": ["v1"], "resources": ["widgets"]}]


async def test_configuration_is_served_like_a_builtin(kube: KubeClient) -> None:
    """Discovery, get, list, watch, update (generation), the optimistic lock, delete."""
    status, resources = await kube.request("GET", "/apis/admissionregistration.k8s.io/v1")
    assert status == 200, resources
    entry = next(r for r in resources["resources"] if r["name"] == "mutatingwebhookconfigurations")
    assert (entry["kind"], entry["namespaced"], entry.get("categories")) == (
        "MutatingWebhookConfiguration",
        False,
        ["api-extensions"],
    )
    assert sorted(entry["verbs"]) == sorted(
        ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    )
    async with WebhookServer() as hook:
        name = f"served-{hook.port}"
        config = hook.configuration(
            name, [hook.webhook("a.webhooks.example.test", "/a", GUARDED)], probe=False, kind=MUTATING
        )
        status, listing = await kube.request("GET", MWC_PATH)
        assert status == 200 and listing["kind"] == "MutatingWebhookConfigurationList", listing
        since = listing["metadata"]["resourceVersion"]
        status, created = await kube.request("POST", MWC_PATH, json=config)
        assert status == 201, created
        assert created["webhooks"][0]["reinvocationPolicy"] == "Never"
        try:
            status, body = await kube.request("GET", f"{MWC_PATH}/{name}")
            assert status == 200 and body["metadata"]["uid"] == created["metadata"]["uid"], body
            status, listing = await kube.request("GET", MWC_PATH)
            assert name in [item["metadata"]["name"] for item in listing["items"]]
            status, body = await kube.request(
                "PATCH", f"{MWC_PATH}/{name}", json={"metadata": {"labels": {"a": "b"}}}, content_type=MERGE
            )
            assert status == 200 and body["metadata"]["generation"] == 1, body
            replacement = copy.deepcopy(body)
            replacement["webhooks"][0]["reinvocationPolicy"] = "IfNeeded"
            status, body = await kube.request("PUT", f"{MWC_PATH}/{name}", json=replacement)
            assert status == 200 and body["metadata"]["generation"] == 2, body
            status, body = await kube.request("PUT", f"{MWC_PATH}/{name}", json=replacement)
            assert status == 409 and body["reason"] == "Conflict", body
            del replacement["metadata"]["resourceVersion"]
            status, body = await kube.request("PUT", f"{MWC_PATH}/{name}", json=replacement)
            assert status == 422 and body["message"].endswith(
                "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
            ), body
        finally:
            status, body = await kube.request("DELETE", f"{MWC_PATH}/{name}")
            assert status == 200 and body["status"] == "Success", body
        events = []
        async for event in kube.watch(MWC_PATH, {"resourceVersion": since, "timeoutSeconds": "5"}):
            if event["object"]["metadata"]["name"] == name:
                events.append(event["type"])
                if event["type"] == "DELETED":
                    break
        assert events == ["ADDED", "MODIFIED", "MODIFIED", "DELETED"]


async def test_a_write_is_mutated_again_when_the_object_changed_meanwhile(
    kube: KubeClient, namespace: str, widgets: None
) -> None:
    """While the mutating webhook takes its time over patch A, patch B changes the object; A is
    then applied to B's result and sent to the webhook again, whose patch is then the one kept."""
    collection = f"/apis/example.test/v1/namespaces/{namespace}/widgets"
    path = f"{collection}/w1"
    status, body = await kube.request("POST", collection, json=widget("w1"))
    assert status == 201, body
    await watch_cache_has_seen(kube, collection, body["metadata"]["resourceVersion"])

    async def stamp(request: dict[str, Any]) -> dict[str, Any]:
        spec = request["object"]["spec"]
        if spec.get("size") == 5:
            await asyncio.sleep(1.0)
        seen = f"{spec['color']}-{spec['size']}"
        return patch([{"op": "add", "path": "/metadata/annotations", "value": {"seen": seen}}])(request)

    async with WebhookServer() as hook:
        config = hook.configuration(
            f"retry-{namespace}", [here(hook, namespace, "stamp", widget_rules("UPDATE"))], kind=MUTATING
        )
        await register(kube, hook, config, namespace)
        hook.answer("/stamp", stamp)
        try:
            first = asyncio.create_task(kube.request("PATCH", path, json={"spec": {"size": 5}}, content_type=MERGE))
            for _ in range(100):
                if hook.reviews("/stamp"):
                    break
                await asyncio.sleep(0.02)
            status, body = await kube.request("PATCH", path, json={"spec": {"color": "blue"}}, content_type=MERGE)
            assert status == 200 and body["metadata"]["annotations"] == {"seen": "blue-3"}, body
            status, body = await first
            assert status == 200, body
            assert body["spec"] == {"color": "blue", "size": 5}
            assert body["metadata"]["annotations"] == {"seen": "blue-5"}
            seen = [r["request"]["object"]["spec"] for r in hook.reviews("/stamp")]
            assert seen == [
                {"color": "red", "size": 5},
                {"color": "blue", "size": 3},
                {"color": "blue", "size": 5},
            ]
        finally:
            await unregister(kube, config)


async def test_deletecollection_calls_the_mutating_webhooks_for_each_delete(
    kube: KubeClient, namespace: str, widgets: None
) -> None:
    collection = f"/apis/example.test/v1/namespaces/{namespace}/widgets"
    for name, label in (("a", "ok"), ("b", "patch"), ("c", "ok")):
        status, body = await kube.request("POST", collection, json=widget(name, label))
        assert status == 201, body
    async with WebhookServer() as hook:
        rules = widget_rules("DELETE")
        config = hook.configuration(
            f"collection-{namespace}",
            [
                here(hook, namespace, "ok", rules, objectSelector={"matchLabels": {"hook": "ok"}}),
                here(hook, namespace, "patch", rules, objectSelector={"matchLabels": {"hook": "patch"}}),
            ],
            kind=MUTATING,
        )
        await register(kube, hook, config, namespace)
        hook.answer("/patch", patch([{"op": "add", "path": "/metadata/labels/x", "value": "y"}]))
        try:
            status, body = await kube.request("DELETE", collection)
            assert (status, body.get("message")) == (
                500,
                'Internal error occurred: admission webhook "patch.webhooks.example.test" attempted to modify the '
                "object, which is not supported for this operation",
            ), body
            requests = [review["request"] for review in hook.reviews()]
            assert [(r["operation"], r["oldObject"]["metadata"]["name"]) for r in requests] == [
                ("DELETE", "a"),
                ("DELETE", "b"),
            ]
            assert not any("name" in r for r in requests)
            status, listing = await kube.request("GET", collection)
            assert [item["metadata"]["name"] for item in listing["items"]] == ["b", "c"]
            hook.answer("/patch", patch([]))
            status, body = await kube.request("DELETE", collection)
            assert status == 200 and [item["metadata"]["name"] for item in body["items"]] == ["b", "c"], body
        finally:
            await unregister(kube, config)


async def test_the_warnings_of_decoding_come_before_the_webhooks(
    kube: KubeClient, namespace: str, widgets: None, emulator: Any
) -> None:
    """``fieldValidation=Warn`` (which the recorded v1.24 server does not know) warns while
    decoding, before any webhook is called."""
    async with WebhookServer() as hook:
        config = hook.configuration(
            f"warnings-{namespace}", [here(hook, namespace, "warn", widget_rules("CREATE"))], kind=MUTATING
        )
        await register(kube, hook, config, namespace)
        hook.answer("/warn", patch([{"op": "add", "path": "/spec/size", "value": 4}], ["mutated"]))
        try:
            body = widget("w1")
            body["spec"]["shade"] = "dark"
            reply = await kube.request_with_headers(
                "POST", f"/apis/example.test/v1/namespaces/{namespace}/widgets", json=body,
                params={"fieldValidation": "Warn"},
            )
            assert reply.status == 201, reply.body
            assert reply.body["spec"] == {"color": "red", "size": 4}
            assert reply.warning_headers == ['299 - "unknown field \\"spec.shade\\""', '299 - "mutated"']
        finally:
            await unregister(kube, config)
