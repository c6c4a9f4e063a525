"""MutatingWebhookConfiguration, served like any built-in. Runs against the emulator, or
unchanged against the cluster ``SESSION_OPERATOR_TEST_KUBECONFIG`` names."""

from __future__ import annotations

import copy

from webhook_scenarios import GUARDED

from support.kubeclient import KubeClient
from support.webhook_server import MUTATING, MWC_PATH, WebhookServer

MERGE = "application/merge-patch+json"


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
