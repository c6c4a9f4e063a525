"""The emulator's bulk-load control stores objects exactly as the equivalent requests would.

The benchmark loads tens of thousands of sessions with it; what it loads must be what a
create (and a status write) through the API would have stored, or the operator would be
measured on objects no client could make.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from support.kubeclient import KubeClient

ROOT = Path(__file__).resolve().parents[2]
GROUP_PATH = "/apis/session-operator.io/v1alpha1"
MERGE = "application/merge-patch+json"
VOLATILE = ("uid", "resourceVersion", "creationTimestamp", "name")

pytestmark = pytest.mark.faults


def session(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "session-operator.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name, "labels": {"a": "b"}},
        "spec": {"target": "repo/x", **spec},
    }


STATUS = {"phase": "Queued", "observedGeneration": 1, "queuePosition": 2, "holder": {"name": "h", "uid": "u"}}


def comparable(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in obj["metadata"].items() if k not in VOLATILE}
    return {**obj, "metadata": meta}


@pytest.fixture
async def sessions_crd(kube: KubeClient) -> None:
    await kube.apply_crd(ROOT / "crds" / "sessions.session-operator.io.yaml")


async def test_bulk_load_stores_what_create_and_status_write_store(
    kube: KubeClient, namespace: str, emulator: Any, sessions_crd: None
) -> None:
    base = f"{GROUP_PATH}/namespaces/{namespace}/sessions"
    status, created = await kube.request("POST", base, json=session("api", onConflict="Queue"))
    assert status == 201, created
    status, by_api = await kube.request(
        "PATCH",
        f"{base}/api/status",
        json={"status": STATUS, "metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}},
        content_type=MERGE,
    )
    assert status == 200, by_api
    _, listing = await kube.request("GET", base)
    since = listing["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []

    async def follow() -> None:
        async for event in kube.watch(base, {"resourceVersion": since, "timeoutSeconds": "2"}):
            events.append(event)

    watching = asyncio.create_task(follow())
    await asyncio.sleep(0.2)
    result = emulator.bulk_load(
        [
            {"path": base, "body": session("bulk", onConflict="Queue"), "status": STATUS},
            {"path": base, "body": session("plain")},
        ],
        refs=True,
    )
    assert "error" not in result, result
    assert result["applied"] == 2
    (_, name1, uid1, rv1), (_, name2, _, rv2) = result["refs"]
    assert (name1, name2) == ("bulk", "plain")
    assert int(since) < int(rv1) < int(rv2) <= int(result["resourceVersion"])
    status, by_bulk = await kube.request("GET", f"{base}/bulk")
    assert status == 200
    assert by_bulk["metadata"]["uid"] == uid1 and by_bulk["metadata"]["resourceVersion"] == rv1
    assert comparable(by_bulk) == comparable(by_api)  # defaulting, generation, status path: all alike
    await watching
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "bulk"),
        ("MODIFIED", "bulk"),
        ("ADDED", "plain"),
    ]
    assert "status" not in events[0]["object"] and events[1]["object"]["status"] == STATUS
    # The control is not API traffic: nothing counted for it.
    assert all("bulk" not in key for key in emulator.request_counts()["counts"])


async def test_bulk_status_writes_are_conditional_and_stop_at_the_first_failure(
    kube: KubeClient, namespace: str, emulator: Any, sessions_crd: None
) -> None:
    base = f"{GROUP_PATH}/namespaces/{namespace}/sessions"
    status, created = await kube.request("POST", base, json=session("s1"))
    assert status == 201
    stale = created["metadata"]["resourceVersion"]
    # Over HTTP, as a benchmark in another process uses it.
    status, result = await kube.request(
        "POST",
        "/_emulator/bulk",
        json={
            "items": [
                {"op": "status", "path": f"{base}/s1", "status": {"phase": "Active"}, "resourceVersion": stale},
                {"op": "status", "path": f"{base}/s1", "status": {"phase": "Rejected"}, "resourceVersion": stale},
                {"path": base, "body": session("never")},
            ]
        },
    )
    assert status == 200, result
    assert result["applied"] == 1
    assert result["error"]["index"] == 1 and result["error"]["status"]["code"] == 409
    _, s1 = await kube.request("GET", f"{base}/s1")
    assert s1["status"] == {"phase": "Active"} and s1["metadata"]["generation"] == 1
    status, _ = await kube.request("GET", f"{base}/never")
    assert status == 404
    status, result = await kube.request(
        "POST",
        "/_emulator/bulk",
        json={
            "items": [
                {"path": f"/api/v1/namespaces/{namespace}-missing/configmaps", "body": {"metadata": {"name": "c"}}},
            ]
        },
    )
    assert result["applied"] == 0 and result["error"]["status"]["code"] == 404
