"""The API behaviours the operator relies on, held to how a real kube-apiserver answered.

Runs against the in-repo emulator by default and, unchanged, against a real cluster when
SESSION_OPERATOR_TEST_KUBECONFIG names a kubeconfig. Expectations come from
``transcripts/kube-apiserver-v1.24.json`` beside this file, recorded on kube-apiserver
v1.24.0-alpha.1 (the version the file itself records, ``RECORDED_ON``): status codes,
reasons, message wording, ``details``, object shapes and watch event order are compared
after replacing names, uids, resourceVersions and timestamps. Tests marked
``faults`` need the emulator's fault injection and are skipped on a real cluster; on the
emulator nothing here is skipped.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import string
import time
from pathlib import Path
from typing import Any

import pytest

from support.kubeclient import KubeClient

ROOT = Path(__file__).resolve().parents[2]
# The server the transcripts were recorded on; the file names it, and a test holds the two equal.
RECORDED_ON = "kube-apiserver v1.24.0-alpha.1"
TRANSCRIPTS_PATH = Path(__file__).resolve().parent / "transcripts" / "kube-apiserver-v1.24.json"
TRANSCRIPTS: dict[str, Any] = json.loads(TRANSCRIPTS_PATH.read_text())
TX: dict[str, dict[str, Any]] = {e["name"]: e for e in TRANSCRIPTS["exchanges"]}
TX_NS = "transcripts"

MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
WIDGET_CRD: dict[str, Any] = TX["crd-create"]["request"]["body"]
WIDGETS = "/apis/example.test/v1/namespaces/{ns}/widgets"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"

VOLATILE = {"uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "lastTransitionTime", "continue"}


# --------------------------------------------------------------------------- helpers


def tx_request(name: str) -> dict[str, Any]:
    return copy.deepcopy(TX[name]["request"]["body"])


def tx_response(name: str) -> tuple[int, Any]:
    response = TX[name]["response"]
    return response["status"], copy.deepcopy(response.get("body"))


def tx_stream(name: str) -> list[dict[str, Any]]:
    return [e for e in copy.deepcopy(TX[name]["stream"]) if "type" in e]


def normalize(value: Any, namespace: str | None = None) -> Any:
    """Blank what differs between runs: uids, resourceVersions, timestamps, namespace names,
    numbers quoted in messages, generated name suffixes."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "managedFields":  # real servers add them; the transcripts leave them out
                continue
            if key in VOLATILE and item not in (None, ""):
                out[key] = f"<{key}>"
            else:
                out[key] = normalize(item, namespace)
        return out
    if isinstance(value, list):
        return [normalize(item, namespace) for item in value]
    if isinstance(value, str):
        text = value
        if namespace:
            text = text.replace(namespace, "<ns>")
        text = text.replace(TX_NS, "<ns>")
        text = re.sub(r"\((\d+)\)", "(<n>)", text)
        return text
    return value


def assert_same(actual: Any, expected: Any, namespace: str) -> None:
    assert normalize(actual, namespace) == normalize(expected, namespace), f"differs from what {RECORDED_ON} answered"


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.test/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


async def collect(
    kube: KubeClient, path: str, params: dict[str, str], *, until: int | None = None, limit: float = 15.0
) -> tuple[list[dict[str, Any]], float]:
    """Events of one watch until the server closes it (or ``until`` events, or ``limit`` seconds)."""
    events: list[dict[str, Any]] = []
    started = time.monotonic()

    async def run() -> None:
        async for event in kube.watch(path, params):
            events.append(event)
            if until is not None and len(events) >= until:
                return

    await asyncio.wait_for(run(), limit)
    return events, time.monotonic() - started


@pytest.fixture
async def widgets(kube: KubeClient, namespace: str) -> str:
    """The widgets collection (transcripts' example CRD) in a fresh namespace."""
    await kube.apply_crd(WIDGET_CRD)
    return WIDGETS.format(ns=namespace)


async def create_w1(kube: KubeClient, widgets: str) -> dict[str, Any]:
    status, body = await kube.request("POST", widgets, json=tx_request("cr-create"))
    assert status == 201, body
    return body


# --------------------------------------------------------------------------- the transcripts themselves


def test_transcripts_name_the_server_they_were_recorded_on() -> None:
    print(f"transcripts: {TRANSCRIPTS_PATH.name}, recorded on {RECORDED_ON}")
    assert TRANSCRIPTS["server"].split(" (")[0] == RECORDED_ON
    assert TX["version"]["response"]["body"]["gitVersion"] == RECORDED_ON.split()[-1]


# --------------------------------------------------------------------------- discovery and CRDs


async def test_version_and_core_discovery(kube: KubeClient) -> None:
    status, version = await kube.request("GET", "/version")
    assert status == 200
    assert set(TX["version"]["response"]["body"]) <= set(version)
    assert version["gitVersion"].startswith("v1.")
    status, api = await kube.request("GET", "/api")
    assert status == 200 and api["kind"] == "APIVersions" and "v1" in api["versions"]
    status, core = await kube.request("GET", "/api/v1")
    assert status == 200 and core["kind"] == "APIResourceList" and core["groupVersion"] == "v1"
    by_name = {r["name"]: r for r in core["resources"]}
    for plural, kind, namespaced in (
        ("namespaces", "Namespace", False),
        ("events", "Event", True),
        ("configmaps", "ConfigMap", True),
    ):
        assert by_name[plural]["kind"] == kind and by_name[plural]["namespaced"] is namespaced
        assert {"create", "get", "list", "watch", "patch", "update", "delete"} <= set(by_name[plural]["verbs"])


async def test_group_discovery(kube: KubeClient) -> None:
    status, groups = await kube.request("GET", "/apis")
    assert status == 200 and groups["kind"] == "APIGroupList"
    by_name = {g["name"]: g for g in groups["groups"]}
    for expected in tx_response("discovery-groups")[1]["groups"]:
        group = by_name[expected["name"]]
        assert expected["preferredVersion"] == group["preferredVersion"]
        assert {"groupVersion": f"{expected['name']}/v1", "version": "v1"} in group["versions"]
    status, coordination = await kube.request("GET", "/apis/coordination.k8s.io/v1")
    _, expected = tx_response("discovery-coordination")
    leases = next(r for r in coordination["resources"] if r["name"] == "leases")
    want = expected["resources"][0]
    assert {k: leases[k] for k in ("name", "namespaced", "kind")} == {
        k: want[k] for k in ("name", "namespaced", "kind")
    }
    assert sorted(leases["verbs"]) == sorted(want["verbs"])


async def test_crd_is_established_and_served(kube: KubeClient) -> None:
    await kube.apply_crd(WIDGET_CRD)
    status, crd = await kube.request(
        "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.test"
    )
    assert status == 200
    _, expected = tx_response("crd-established")
    assert crd["spec"] == expected["spec"]
    assert crd["status"]["acceptedNames"] == expected["status"]["acceptedNames"]
    conditions = {c["type"]: c for c in crd["status"]["conditions"]}
    for want in expected["status"]["conditions"]:
        got = conditions[want["type"]]
        assert (got["status"], got["message"]) == (want["status"], want["message"])
    assert crd["metadata"]["generation"] >= 1
    status, resources = await kube.request("GET", "/apis/example.test/v1")
    _, expected = tx_response("discovery-crd-group")
    for entry in (resources, expected):
        # other CRDs of the group (other tests') may be listed too
        entry["resources"] = [r for r in entry["resources"] if r["name"].split("/")[0] == "widgets"]
        for resource in entry["resources"]:
            resource.pop("storageVersionHash", None)
    assert resources == expected


async def test_crd_create_answer_and_delete(kube: KubeClient) -> None:
    """A fresh CRD is answered un-established, then served; deleting it stops serving it."""
    suffix = "".join(secrets.choice(string.ascii_lowercase) for _ in range(8))
    crd = copy.deepcopy(WIDGET_CRD)
    plural = f"gadgets{suffix}"
    crd["metadata"]["name"] = f"{plural}.example.test"
    crd["spec"]["names"] = {"plural": plural, "singular": f"gadget{suffix}", "kind": f"Gadget{suffix.capitalize()}"}
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    status, created = await kube.request("POST", path, json=crd)
    assert status == 201, created
    _, expected = tx_response("crd-create")
    assert created["status"]["acceptedNames"] == expected["status"]["acceptedNames"]
    assert created["spec"]["names"]["listKind"] == crd["spec"]["names"]["kind"] + "List"
    assert created["spec"]["conversion"] == {"strategy": "None"}
    assert created["metadata"]["generation"] == 1
    await kube.apply_crd(crd)
    status, _ = await kube.request("GET", f"/apis/example.test/v1/{plural}")
    assert status == 200
    status, deleted = await kube.request("DELETE", f"{path}/{crd['metadata']['name']}")
    assert status == 200 and deleted["kind"] == "CustomResourceDefinition"
    for _ in range(200):
        status, _ = await kube.request("GET", f"{path}/{crd['metadata']['name']}")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404
    for _ in range(100):
        status, _ = await kube.request("GET", f"/apis/example.test/v1/{plural}")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404


# --------------------------------------------------------------------------- create / get


async def test_create_applies_defaults_prunes_and_drops_status(kube: KubeClient, widgets: str, namespace: str) -> None:
    status, body = await kube.request("POST", widgets, json=tx_request("cr-create"))
    want_status, want = tx_response("cr-create")
    assert status == want_status
    assert_same(body, want, namespace)
    status, fetched = await kube.request("GET", f"{widgets}/w1")
    assert status == 200
    assert_same(fetched, tx_response("cr-get")[1], namespace)
    assert fetched["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]
    assert body["metadata"]["resourceVersion"].isdigit()


async def test_create_existing_is_409_already_exists(kube: KubeClient, widgets: str, namespace: str) -> None:
    await create_w1(kube, widgets)
    status, body = await kube.request("POST", widgets, json=tx_request("cr-create-exists"))
    assert (status, normalize(body, namespace)) == (409, normalize(tx_response("cr-create-exists")[1]))


async def test_generate_name(kube: KubeClient, widgets: str) -> None:
    body = widget("", color="red")
    body["metadata"] = {"generateName": "gen-"}
    status, created = await kube.request("POST", widgets, json=body)
    assert status == 201, created
    assert re.fullmatch(r"gen-[a-z0-9]{5}", created["metadata"]["name"])
    assert created["metadata"]["generateName"] == "gen-"


@pytest.mark.parametrize("exchange", ["cr-create-invalid-enum", "cr-create-invalid-cel", "cr-create-invalid-type"])
async def test_schema_violation_is_422_with_causes(
    kube: KubeClient, widgets: str, namespace: str, exchange: str
) -> None:
    status, body = await kube.request("POST", widgets, json=tx_request(exchange))
    want_status, want = tx_response(exchange)
    assert status == want_status
    assert normalize(body, namespace) == normalize(want)


async def test_several_violations_are_reported_together(kube: KubeClient, widgets: str) -> None:
    status, body = await kube.request("POST", widgets, json=tx_request("cr-create-invalid-many"))
    _, want = tx_response("cr-create-invalid-many")
    assert status == 422
    assert {k: body[k] for k in ("kind", "status", "reason", "code")} == {
        k: want[k] for k in ("kind", "status", "reason", "code")
    }
    # the real server walks properties in Go map order: compare causes as a set
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    assert sorted(body["details"]["causes"], key=key) == sorted(want["details"]["causes"], key=key)
    assert {k: v for k, v in body["details"].items() if k != "causes"} == {
        k: v for k, v in want["details"].items() if k != "causes"
    }
    prefix = 'Widget.example.test "bad2" is invalid: ['
    assert body["message"].startswith(prefix) and body["message"].endswith("]")
    parts = body["message"][len(prefix) : -1].split(", spec.")
    want_parts = want["message"][len(prefix) : -1].split(", spec.")
    assert sorted(p.removeprefix("spec.") for p in parts) == sorted(p.removeprefix("spec.") for p in want_parts)


async def test_get_missing_is_404(kube: KubeClient, widgets: str, namespace: str) -> None:
    status, body = await kube.request("GET", f"{widgets}/nope")
    assert (status, normalize(body, namespace)) == (404, normalize(tx_response("cr-get-missing")[1]))


async def test_create_in_missing_namespace_is_404(kube: KubeClient) -> None:
    await kube.apply_crd(WIDGET_CRD)
    missing = f"nope-{secrets.token_hex(4)}"
    status, body = await kube.request("POST", WIDGETS.format(ns=missing), json=tx_request("namespace-missing"))
    want = tx_response("namespace-missing")[1]
    assert status == 404
    assert body == json.loads(
        json.dumps(want).replace('"nope', f'"{missing}').replace('\\"nope\\"', f'\\"{missing}\\"')
    )


# --------------------------------------------------------------------------- arrays: field paths, list types

CREW_CRD: dict[str, Any] = TX["crew-crd-create"]["request"]["body"]
CREWS = "/apis/example.test/v1/namespaces/{ns}/crews"


@pytest.fixture
async def crews(kube: KubeClient, namespace: str) -> str:
    """The crews collection (the transcripts' CRD with array fields) in a fresh namespace."""
    await kube.apply_crd(CREW_CRD)
    return CREWS.format(ns=namespace)


@pytest.mark.parametrize(
    "exchange",
    [
        # schema errors inside array items name the array, not the element
        "crew-create-item-enum",
        "crew-create-item-type",
        "crew-create-item-pattern",
        "crew-create-item-max-length",
        "crew-create-item-min-length",
        "crew-create-item-format",
        "crew-create-item-range",
        "crew-create-item-errors-once",
        "crew-create-item-type-and-enum",
        "crew-create-scalar-items",
        "crew-create-nested-array-item",
        "crew-create-item-required",
        # CEL and list-type errors index it
        "crew-create-item-cel",
        "crew-create-duplicate-map-key",
        "crew-create-duplicate-set",
        "crew-create-duplicate-nested-set",
        "crew-create-missing-map-keys",
        # and an integer's format is not a range
        "crew-create-int32-unchecked",
    ],
)
async def test_array_items_on_create(kube: KubeClient, crews: str, namespace: str, exchange: str) -> None:
    status, body = await kube.request("POST", crews, json=tx_request(exchange))
    want_status, want = tx_response(exchange)
    assert status == want_status, body
    assert_same(body, want, namespace)


async def test_list_types_on_update_and_status(kube: KubeClient, crews: str, namespace: str) -> None:
    """The list-type invariants hold for writes of the main resource (unless the stored object
    already breaks them); v1.24 does not check them on the status subresource."""
    status, body = await kube.request("POST", crews, json=tx_request("crew-create"))
    assert status == 201, body
    assert_same(body, tx_response("crew-create")[1], namespace)
    for exchange, path in (
        ("crew-merge-patch-duplicate-map-key", f"{crews}/c1"),
        ("crew-status-patch-item-enum", f"{crews}/c1/status"),
        ("crew-status-patch-item-required", f"{crews}/c1/status"),
        ("crew-status-patch-duplicate-map-key", f"{crews}/c1/status"),
        ("crew-merge-patch-duplicate-when-stored-breaks-it", f"{crews}/c1"),
    ):
        status, body = await kube.request("PATCH", path, json=tx_request(exchange), content_type=MERGE)
        want_status, want = tx_response(exchange)
        assert status == want_status, (exchange, body)
        assert_same(body, want, namespace)


async def test_status_put_does_not_check_list_types(kube: KubeClient, crews: str) -> None:
    status, created = await kube.request("POST", crews, json=tx_request("crew-create"))
    assert status == 201, created
    created["status"] = tx_request("crew-status-patch-duplicate-map-key")["status"]
    status, body = await kube.request("PUT", f"{crews}/c1/status", json=created)
    assert status == 200, body
    assert body["status"] == created["status"]
    status, body = await kube.request("PUT", f"{crews}/c1", json=dict(body, spec={"tags": ["a", "a"]}))
    assert status == 200, body  # the stored object already repeats a key: no check


# --------------------------------------------------------------------------- update / patch


async def test_merge_patch_ignores_status_and_bumps_generation_on_spec_only(
    kube: KubeClient, widgets: str, namespace: str
) -> None:
    created = await create_w1(kube, widgets)
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1", json=tx_request("cr-merge-patch-status-ignored"), content_type=MERGE
    )
    assert status == 200
    assert_same(body, tx_response("cr-merge-patch-status-ignored")[1], namespace)
    assert int(body["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1", json=tx_request("cr-merge-patch-spec"), content_type=MERGE
    )
    assert status == 200
    assert_same(body, tx_response("cr-merge-patch-spec")[1], namespace)
    # labels and finalizers are metadata: no generation bump
    status, body = await kube.request(
        "PATCH",
        f"{widgets}/w1",
        json={"metadata": {"labels": {"x": "y"}, "finalizers": ["example.test/f"]}},
        content_type=MERGE,
    )
    assert status == 200 and body["metadata"]["generation"] == 2
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1", json={"metadata": {"finalizers": None}}, content_type=MERGE
    )
    assert status == 200 and body["metadata"]["generation"] == 2


async def test_merge_patch_with_stale_resource_version_is_409(kube: KubeClient, widgets: str, namespace: str) -> None:
    created = await create_w1(kube, widgets)
    status, _ = await kube.request("PATCH", f"{widgets}/w1", json={"spec": {"color": "blue"}}, content_type=MERGE)
    assert status == 200
    stale = {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"]}, "spec": {"color": "red"}}
    status, body = await kube.request("PATCH", f"{widgets}/w1", json=stale, content_type=MERGE)
    assert (status, normalize(body, namespace)) == (409, normalize(tx_response("cr-merge-patch-stale-rv")[1]))
    status, current = await kube.request("GET", f"{widgets}/w1")
    fresh = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}, "spec": {"color": "red"}}
    status, body = await kube.request("PATCH", f"{widgets}/w1", json=fresh, content_type=MERGE)
    assert status == 200 and body["spec"]["color"] == "red"


async def test_put_with_stale_or_without_resource_version(kube: KubeClient, widgets: str, namespace: str) -> None:
    created = await create_w1(kube, widgets)
    await kube.request("PATCH", f"{widgets}/w1", json={"spec": {"color": "blue"}}, content_type=MERGE)
    stale = copy.deepcopy(created)
    status, body = await kube.request("PUT", f"{widgets}/w1", json=stale)
    assert (status, normalize(body, namespace)) == (409, normalize(tx_response("cr-put-stale-rv")[1]))
    no_rv = copy.deepcopy(created)
    del no_rv["metadata"]["resourceVersion"]
    status, body = await kube.request("PUT", f"{widgets}/w1", json=no_rv)
    assert (status, normalize(body, namespace)) == (422, normalize(tx_response("cr-put-no-rv")[1]))
    status, current = await kube.request("GET", f"{widgets}/w1")
    current["spec"]["size"] = 5
    current["status"] = {"phase": "Ignored"}
    status, body = await kube.request("PUT", f"{widgets}/w1", json=current)
    assert status == 200 and body["spec"]["size"] == 5 and "status" not in body
    assert body["metadata"]["generation"] == 3


async def test_noop_write_keeps_resource_version(kube: KubeClient, widgets: str) -> None:
    created = await create_w1(kube, widgets)
    status, body = await kube.request("PATCH", f"{widgets}/w1", json={"spec": {"color": "red"}}, content_type=MERGE)
    assert status == 200
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    status, body = await kube.request("PUT", f"{widgets}/w1", json=created)
    assert status == 200
    assert body["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


async def test_status_subresource_separation(kube: KubeClient, widgets: str, namespace: str) -> None:
    await create_w1(kube, widgets)
    await kube.request("PATCH", f"{widgets}/w1", json=tx_request("cr-merge-patch-status-ignored"), content_type=MERGE)
    status, before = await kube.request(
        "PATCH", f"{widgets}/w1", json=tx_request("cr-merge-patch-spec"), content_type=MERGE
    )
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1/status", json=tx_request("status-patch"), content_type=MERGE
    )
    assert status == 200
    assert_same(body, tx_response("status-patch")[1], namespace)
    stale = tx_request("status-patch-stale-rv")
    stale["metadata"]["resourceVersion"] = before["metadata"]["resourceVersion"]
    status, answer = await kube.request("PATCH", f"{widgets}/w1/status", json=stale, content_type=MERGE)
    assert (status, normalize(answer, namespace)) == (409, normalize(tx_response("status-patch-stale-rv")[1]))
    # PUT /status: only status is taken, labels and spec are not
    replacement = copy.deepcopy(body)
    replacement["metadata"]["labels"] = {"team": "z"}
    replacement["spec"]["color"] = "red"
    replacement["status"] = {"phase": "Done"}
    status, after = await kube.request("PUT", f"{widgets}/w1/status", json=replacement)
    assert status == 200
    assert after["status"] == {"phase": "Done"} and after["spec"] == body["spec"]
    assert after["metadata"]["labels"] == body["metadata"]["labels"]
    assert after["metadata"]["generation"] == body["metadata"]["generation"]
    status, fetched = await kube.request("GET", f"{widgets}/w1/status")
    assert status == 200 and fetched["status"] == {"phase": "Done"}


async def test_json_patch(kube: KubeClient, widgets: str, namespace: str) -> None:
    await create_w1(kube, widgets)
    await kube.request("PATCH", f"{widgets}/w1", json={"spec": {"color": "blue"}}, content_type=MERGE)
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1", json=tx_request("json-patch-test-fail"), content_type=JSONPATCH
    )
    assert (status, body) == tx_response("json-patch-test-fail")
    status, current = await kube.request("GET", f"{widgets}/w1")
    ops = tx_request("json-patch-ok")
    ops[0]["value"] = current["metadata"]["resourceVersion"]
    status, body = await kube.request("PATCH", f"{widgets}/w1", json=ops, content_type=JSONPATCH)
    assert status == 200
    assert body["spec"] == {"color": "blue", "size": 7}
    assert body["metadata"]["generation"] == current["metadata"]["generation"] + 1
    status, body = await kube.request("PATCH", f"{widgets}/w1", json=ops, content_type=JSONPATCH)  # rv moved on
    assert (status, body) == tx_response("json-patch-test-fail")
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1/status", json=tx_request("dict-body-as-json-patch"), content_type=JSONPATCH
    )
    assert (status, body) == tx_response("dict-body-as-json-patch")


async def test_strategic_merge_patch_is_415_for_custom_resources(kube: KubeClient, widgets: str) -> None:
    await create_w1(kube, widgets)
    status, body = await kube.request(
        "PATCH", f"{widgets}/w1", json={"spec": {"color": "blue"}}, content_type=STRATEGIC
    )
    assert status == 415 and body["reason"] == "UnsupportedMediaType"


# --------------------------------------------------------------------------- list and selectors


async def seed_two(kube: KubeClient, widgets: str) -> None:
    await create_w1(kube, widgets)
    status, _ = await kube.request("POST", widgets, json=tx_request("cr-create-w2"))
    assert status == 201


async def test_list_shape_and_selectors(kube: KubeClient, widgets: str, namespace: str) -> None:
    await seed_two(kube, widgets)
    status, body = await kube.request("GET", widgets)
    assert status == 200 and body["kind"] == "WidgetList" and body["apiVersion"] == "example.test/v1"
    assert body["metadata"]["resourceVersion"].isdigit() and body["metadata"]["continue"] == ""
    assert [i["metadata"]["name"] for i in body["items"]] == ["w1", "w2"]
    assert all(i["kind"] == "Widget" for i in body["items"])
    for params, names in (
        ({"labelSelector": "team=a"}, ["w1"]),
        ({"labelSelector": "team==b"}, ["w2"]),
        ({"labelSelector": "team in (a,b)"}, ["w1", "w2"]),
        ({"labelSelector": "team!=a"}, ["w2"]),
        ({"labelSelector": "team notin (a)"}, ["w2"]),
        ({"labelSelector": "team"}, ["w1", "w2"]),
        ({"labelSelector": "!team"}, []),
        ({"labelSelector": "team=a,team=b"}, []),
        ({"fieldSelector": "metadata.name=w2"}, ["w2"]),
        ({"fieldSelector": f"metadata.namespace={namespace}"}, ["w1", "w2"]),
    ):
        status, body = await kube.request("GET", widgets, params=params)
        assert status == 200, (params, body)
        assert [i["metadata"]["name"] for i in body["items"]] == names, params
    status, body = await kube.request("GET", widgets, params={"fieldSelector": "spec.color=blue"})
    assert (status, body) == tx_response("list-field-selector-unsupported")


async def test_cluster_wide_list_and_pagination(kube: KubeClient, widgets: str, namespace: str) -> None:
    await seed_two(kube, widgets)
    status, body = await kube.request("GET", "/apis/example.test/v1/widgets", params={"labelSelector": "team"})
    mine = [i["metadata"]["name"] for i in body["items"] if i["metadata"]["namespace"] == namespace]
    assert status == 200 and mine == ["w1", "w2"]
    status, page = await kube.request("GET", widgets, params={"limit": "1"})
    assert status == 200 and [i["metadata"]["name"] for i in page["items"]] == ["w1"]
    assert page["metadata"]["continue"] and page["metadata"]["remainingItemCount"] == 1
    status, rest = await kube.request("GET", widgets, params={"limit": "1", "continue": page["metadata"]["continue"]})
    assert status == 200 and [i["metadata"]["name"] for i in rest["items"]] == ["w2"]
    assert rest["metadata"]["continue"] == "" and "remainingItemCount" not in rest["metadata"]
    assert rest["metadata"]["resourceVersion"] == page["metadata"]["resourceVersion"]


# --------------------------------------------------------------------------- watch


async def watch_scenario(kube: KubeClient, widgets: str) -> str:
    """The transcript's setup: w1, w2 exist; returns the list's resourceVersion."""
    await create_w1(kube, widgets)
    await kube.request("PATCH", f"{widgets}/w1", json=tx_request("cr-merge-patch-status-ignored"), content_type=MERGE)
    await kube.request("PATCH", f"{widgets}/w1", json=tx_request("cr-merge-patch-spec"), content_type=MERGE)
    await kube.request("PATCH", f"{widgets}/w1/status", json=tx_request("status-patch"), content_type=MERGE)
    await kube.request(
        "PATCH", f"{widgets}/w1", json=[{"op": "replace", "path": "/spec/size", "value": 7}], content_type=JSONPATCH
    )
    await kube.request("POST", widgets, json=tx_request("cr-create-w2"))
    _, listing = await kube.request("GET", widgets)
    return listing["metadata"]["resourceVersion"]


async def modify_add_delete(kube: KubeClient, widgets: str) -> None:
    await kube.request("PATCH", f"{widgets}/w2", json={"spec": {"size": 9}}, content_type=MERGE)
    await kube.request("POST", widgets, json=widget("w3", color="red"))
    status, _ = await kube.request("DELETE", f"{widgets}/w3")
    assert status == 200


async def test_watch_from_resource_version_delivers_events_in_order(
    kube: KubeClient, widgets: str, namespace: str
) -> None:
    rv = await watch_scenario(kube, widgets)
    await modify_add_delete(kube, widgets)
    events, _ = await collect(kube, widgets, {"resourceVersion": rv}, until=3)
    assert_same(events, tx_stream("watch-from-rv"), namespace)
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)


async def watch_cache_has_seen(kube: KubeClient, collection: str, resource_version: str) -> None:
    """Wait until the API server's watch cache holds every write up to ``resource_version``:
    a LIST with resourceVersion=0 is served from that cache and answers the version it is at."""
    for _ in range(200):
        status, listing = await kube.request("GET", collection, params={"resourceVersion": "0"})
        assert status == 200, listing
        if int(listing["metadata"]["resourceVersion"]) >= int(resource_version):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the watch cache did not reach resourceVersion {resource_version}")


async def test_watch_without_resource_version_starts_with_synthetic_added(
    kube: KubeClient, widgets: str, namespace: str
) -> None:
    """One synthetic ADDED per existing object, at its state when the watch starts.

    A v1.24 server serves a watch without resourceVersion from its watch cache, as it does
    resourceVersion=0: the state it starts from is the cache's, which may not yet hold a write
    answered just before (later events bring it up to date), and the ADDED events come in the
    cache's map order. So the test first waits until the cache has the last write, and
    compares the events in name order.
    """
    await watch_scenario(kube, widgets)
    status, patched = await kube.request("PATCH", f"{widgets}/w2", json={"spec": {"size": 9}}, content_type=MERGE)
    assert status == 200, patched
    await watch_cache_has_seen(kube, widgets, patched["metadata"]["resourceVersion"])
    events, _ = await collect(kube, widgets, {}, until=2)

    def by_name(event: dict[str, Any]) -> str:
        return str(event["object"]["metadata"]["name"])

    assert [e["type"] for e in events] == ["ADDED", "ADDED"]
    assert_same(sorted(events, key=by_name), sorted(tx_stream("watch-no-rv"), key=by_name), namespace)


async def test_watch_expired_resource_version_is_410_in_stream(kube: KubeClient, widgets: str) -> None:
    events, elapsed = await collect(kube, widgets, {"resourceVersion": "1"})
    expected = tx_stream("watch-too-old")
    assert [e["type"] for e in events] == ["ERROR"]
    status = events[0]["object"]
    assert {k: v for k, v in status.items() if k != "message"} == {
        k: v for k, v in expected[0]["object"].items() if k != "message"
    }
    assert re.fullmatch(r"too old resource version: 1 \(\d+\)", status["message"])
    assert elapsed < 5


async def test_watch_ends_at_timeout_seconds(kube: KubeClient, widgets: str, namespace: str) -> None:
    rv = await watch_scenario(kube, widgets)
    await modify_add_delete(kube, widgets)
    events, elapsed = await collect(kube, widgets, {"resourceVersion": rv, "timeoutSeconds": "2"})
    assert_same(events, tx_stream("watch-timeout"), namespace)
    assert 1.5 <= elapsed < 6


async def test_watch_with_bookmarks_allowed(kube: KubeClient, widgets: str, namespace: str) -> None:
    rv = await watch_scenario(kube, widgets)
    await modify_add_delete(kube, widgets)
    events, _ = await collect(
        kube, widgets, {"resourceVersion": rv, "allowWatchBookmarks": "true", "timeoutSeconds": "2"}
    )
    real = [e for e in events if e["type"] != "BOOKMARK"]
    assert_same(real, tx_stream("watch-bookmarks"), namespace)
    for bookmark in (e for e in events if e["type"] == "BOOKMARK"):
        assert set(bookmark["object"]["metadata"]) <= {"resourceVersion", "creationTimestamp", "annotations"}


async def test_watch_selector_rewrites_transitions(kube: KubeClient, widgets: str) -> None:
    await seed_two(kube, widgets)
    _, listing = await kube.request("GET", widgets)
    rv = listing["metadata"]["resourceVersion"]
    await kube.request("PATCH", f"{widgets}/w1", json={"metadata": {"labels": {"team": "b"}}}, content_type=MERGE)
    await kube.request("PATCH", f"{widgets}/w2", json={"metadata": {"labels": {"team": "a"}}}, content_type=MERGE)
    await kube.request("PATCH", f"{widgets}/w2", json={"spec": {"size": 4}}, content_type=MERGE)
    events, _ = await collect(kube, widgets, {"resourceVersion": rv, "labelSelector": "team=a"}, until=3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("DELETED", "w1"),
        ("ADDED", "w2"),
        ("MODIFIED", "w2"),
    ]


async def test_cluster_wide_watch(kube: KubeClient, widgets: str, namespace: str) -> None:
    _, listing = await kube.request("GET", "/apis/example.test/v1/widgets")
    rv = listing["metadata"]["resourceVersion"]
    await create_w1(kube, widgets)
    events, _ = await collect(
        kube,
        "/apis/example.test/v1/widgets",
        {"resourceVersion": rv, "fieldSelector": f"metadata.namespace={namespace}"},
        until=1,
    )
    assert events[0]["type"] == "ADDED" and events[0]["object"]["metadata"]["namespace"] == namespace


# --------------------------------------------------------------------------- finalizers and deletion


async def test_finalizer_delays_deletion(kube: KubeClient, widgets: str, namespace: str) -> None:
    status, created = await kube.request("POST", widgets, json=tx_request("cr-create-finalizer"))
    assert status == 201
    assert_same(created, tx_response("cr-create-finalizer")[1], namespace)
    rv = created["metadata"]["resourceVersion"]
    status, body = await kube.request("DELETE", f"{widgets}/wf")
    assert status == 200
    assert_same(body, tx_response("cr-delete-with-finalizer")[1], namespace)
    status, still = await kube.request("GET", f"{widgets}/wf")
    assert status == 200 and still["metadata"]["deletionTimestamp"]
    # Setting deletionTimestamp is a write: a new resourceVersion, answered and stored.
    assert body["metadata"]["resourceVersion"] != rv
    assert still["metadata"]["resourceVersion"] == body["metadata"]["resourceVersion"]
    status, again = await kube.request("DELETE", f"{widgets}/wf")
    assert status == 200 and again["metadata"]["resourceVersion"] == still["metadata"]["resourceVersion"]
    status, body = await kube.request(
        "PATCH", f"{widgets}/wf", json=tx_request("cr-patch-after-delete"), content_type=MERGE
    )
    assert status == 200
    assert_same(body, tx_response("cr-patch-after-delete")[1], namespace)
    status, body = await kube.request(
        "PATCH",
        f"{widgets}/wf",
        json={"metadata": {"finalizers": ["example.test/hold", "x.test/new"]}},
        content_type=MERGE,
    )
    assert status == 422 and body["reason"] == "Invalid"
    status, body = await kube.request(
        "PATCH", f"{widgets}/wf", json=tx_request("cr-remove-finalizer"), content_type=MERGE
    )
    assert status == 200
    assert_same(body, tx_response("cr-remove-finalizer")[1], namespace)
    status, _ = await kube.request("GET", f"{widgets}/wf")
    assert status == 404
    events, _ = await collect(kube, widgets, {"resourceVersion": rv, "fieldSelector": "metadata.name=wf"}, until=3)
    assert_same(events, tx_stream("watch-finalizer-delete"), namespace)


async def test_delete_preconditions_and_missing(kube: KubeClient, widgets: str, namespace: str) -> None:
    await seed_two(kube, widgets)
    status, body = await kube.request("DELETE", f"{widgets}/w2", json=tx_request("delete-precondition-stale"))
    assert (status, normalize(body, namespace)) == (409, normalize(tx_response("delete-precondition-stale")[1]))
    status, current = await kube.request("GET", f"{widgets}/w2")
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
    }
    status, body = await kube.request("DELETE", f"{widgets}/w2", json=options)
    assert status == 409 and body["reason"] == "Conflict" and "the UID in the precondition" in body["message"]
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"resourceVersion": current["metadata"]["resourceVersion"], "uid": current["metadata"]["uid"]},
    }
    status, body = await kube.request("DELETE", f"{widgets}/w2", json=options)
    assert status == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"] == {
        "name": "w2",
        "group": "example.test",
        "kind": "widgets",
        "uid": current["metadata"]["uid"],
    }
    status, body = await kube.request("DELETE", f"{widgets}/nope")
    assert (status, normalize(body, namespace)) == (404, normalize(tx_response("delete-missing")[1]))


async def test_deleting_a_namespace_deletes_its_objects(kube: KubeClient, widgets: str, namespace: str) -> None:
    await seed_two(kube, widgets)
    status, body = await kube.request("DELETE", f"/api/v1/namespaces/{namespace}")
    assert status == 200 and body["status"]["phase"] == "Terminating"
    status, body = await kube.request("POST", widgets, json=widget("late", color="red"))
    assert status in (403, 404), body
    for _ in range(600):
        status, _ = await kube.request("GET", f"/api/v1/namespaces/{namespace}")
        if status == 404:
            break
        await asyncio.sleep(0.1)
    assert status == 404
    status, body = await kube.request(
        "GET", "/apis/example.test/v1/widgets", params={"fieldSelector": f"metadata.namespace={namespace}"}
    )
    assert status == 200 and body["items"] == []


# --------------------------------------------------------------------------- CEL transition rule

GIZMO_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "gizmos.example.test"},
    "spec": {
        "group": "example.test",
        "scope": "Namespaced",
        "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["target"],
                                "properties": {
                                    "target": {
                                        "type": "string",
                                        "minLength": 1,
                                        "maxLength": 253,
                                        "x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "target is immutable"}
                                        ],
                                    },
                                    "note": {"type": "string"},
                                    "nested": {
                                        "type": "object",
                                        "properties": {"level": {"type": "integer", "default": 1}},
                                    },
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


@pytest.mark.transition_rules
async def test_cel_transition_rule_makes_a_field_immutable(kube: KubeClient, namespace: str) -> None:
    await kube.apply_crd(GIZMO_CRD)
    gizmos = f"/apis/example.test/v1/namespaces/{namespace}/gizmos"
    body = {"apiVersion": "example.test/v1", "kind": "Gizmo", "metadata": {"name": "g1"}, "spec": {"target": "a"}}
    status, created = await kube.request("POST", gizmos, json=body)
    assert status == 201, created
    assert "nested" not in created["spec"]  # nested defaults apply only under a present parent
    status, body = await kube.request(
        "PATCH", f"{gizmos}/g1", json={"spec": {"note": "n", "nested": {}}}, content_type=MERGE
    )
    assert status == 200 and body["spec"]["nested"] == {"level": 1}
    status, body = await kube.request("PATCH", f"{gizmos}/g1", json={"spec": {"target": "b"}}, content_type=MERGE)
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].startswith('Gizmo.example.test "g1" is invalid: spec.target: Invalid value: ')
    assert body["message"].endswith(": target is immutable")
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "message": body["details"]["causes"][0]["message"], "field": "spec.target"}
    ]
    status, body = await kube.request(
        "PATCH", f"{gizmos}/g1/status", json={"status": {"phase": "X"}}, content_type=MERGE
    )
    assert status == 200


# --------------------------------------------------------------------------- Leases and Events


async def test_leases(kube: KubeClient, namespace: str) -> None:
    leases = LEASES.format(ns=namespace)
    status, created = await kube.request("POST", leases, json=tx_request("lease-create"))
    assert status == 201
    assert_same(created, tx_response("lease-create")[1], namespace)
    status, body = await kube.request("POST", leases, json=tx_request("lease-create-exists"))
    assert (status, normalize(body, namespace)) == (409, normalize(tx_response("lease-create-exists")[1]))
    transfer = copy.deepcopy(created)
    transfer["spec"] = {"holderIdentity": "b", "leaseTransitions": 1}
    status, moved = await kube.request("PUT", f"{leases}/claim-1", json=transfer)
    assert status == 200
    assert_same(moved, tx_response("lease-put")[1], namespace)
    assert int(moved["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    status, body = await kube.request("PUT", f"{leases}/claim-1", json=transfer)
    assert (status, normalize(body, namespace)) == (409, normalize(tx_response("lease-put-stale")[1]))
    unconditional = copy.deepcopy(moved)
    del unconditional["metadata"]["resourceVersion"]
    status, body = await kube.request("PUT", f"{leases}/claim-1", json=unconditional)
    assert status == 422 and body["reason"] == "Invalid"
    assert body["message"].endswith("metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
    status, body = await kube.request("POST", leases, json=tx_request("lease-bad-time"))
    assert (status, body) == tx_response("lease-bad-time")
    good = tx_request("lease-bad-time")
    good["spec"]["acquireTime"] = "2026-11-21T10:00:00.000000Z"
    good["spec"]["renewTime"] = "2026-11-21T10:00:01.123456Z"
    status, body = await kube.request("POST", leases, json=good)
    assert status == 201 and body["spec"]["acquireTime"] == "2026-11-21T10:00:00.000000Z"
    assert body["spec"]["renewTime"] == "2026-11-21T10:00:01.123456Z"
    status, body = await kube.request("DELETE", f"{leases}/claim-2")
    assert status == 200 and body["kind"] == "Status" and body["status"] == "Success"
    assert body["details"]["name"] == "claim-2" and body["details"]["kind"] == "leases"


async def test_lease_put_to_missing_name_creates_it(kube: KubeClient, namespace: str) -> None:
    leases = LEASES.format(ns=namespace)
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "fresh"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    status, created = await kube.request("PUT", f"{leases}/fresh", json=body)
    assert status == 201 and created["spec"]["leaseDurationSeconds"] == 15
    body["spec"]["leaseDurationSeconds"] = 0
    body["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    status, answer = await kube.request("PUT", f"{leases}/fresh", json=body)
    assert status == 422 and answer["details"]["causes"][0]["field"] == "spec.leaseDurationSeconds"


async def test_core_event_create(kube: KubeClient, namespace: str) -> None:
    body = tx_request("event-create")
    body["involvedObject"]["namespace"] = namespace
    status, created = await kube.request("POST", f"/api/v1/namespaces/{namespace}/events", json=body)
    assert status == 201, created
    want = tx_response("event-create")[1]
    assert created["metadata"]["name"].startswith("w1.") and len(created["metadata"]["name"]) == len(
        want["metadata"]["name"]
    )
    created["metadata"]["name"] = want["metadata"]["name"]
    assert_same(created, want, namespace)
    body["involvedObject"]["namespace"] = "elsewhere"
    status, answer = await kube.request("POST", f"/api/v1/namespaces/{namespace}/events", json=body)
    assert status == 422 and answer["details"]["causes"][0]["field"] == "involvedObject.namespace"


# --------------------------------------------------------------------------- emulator-only: faults and accounting


@pytest.mark.faults
async def test_fault_delay(kube: KubeClient, widgets: str, emulator: Any) -> None:
    emulator.add_delay(0.5, path=r"/widgets/w1$", count=1)
    started = time.monotonic()
    status, _ = await kube.request("GET", f"{widgets}/w1")
    assert status == 404 and time.monotonic() - started >= 0.5
    started = time.monotonic()
    await kube.request("GET", f"{widgets}/w1")
    assert time.monotonic() - started < 0.5


@pytest.mark.faults
@pytest.mark.parametrize(("code", "reason"), [(500, "InternalError"), (429, "TooManyRequests"), (409, "Conflict")])
async def test_fault_fail_next_writes(kube: KubeClient, widgets: str, emulator: Any, code: int, reason: str) -> None:
    emulator.fail_next(2, status=code, path="/widgets")
    status, _ = await kube.request("GET", widgets)
    assert status == 200  # reads are not failed by default
    for _ in range(2):
        status, body = await kube.request("POST", widgets, json=widget("f1", color="red"))
        assert (status, body["reason"], body["code"]) == (code, reason, code)
    status, _ = await kube.request("POST", widgets, json=widget("f1", color="red"))
    assert status == 201


@pytest.mark.faults
async def test_fault_drop_watches(kube: KubeClient, widgets: str, emulator: Any) -> None:
    _, listing = await kube.request("GET", widgets)
    received: list[dict[str, Any]] = []

    async def follow() -> None:
        try:
            async for event in kube.watch(widgets, {"resourceVersion": listing["metadata"]["resourceVersion"]}):
                received.append(event)
        except Exception:  # an aborted connection is what a dropped watch looks like
            pass

    task = asyncio.create_task(follow())
    await create_w1(kube, widgets)
    for _ in range(100):
        if received:
            break
        await asyncio.sleep(0.02)
    assert emulator.open_watches()["open"] >= 1
    assert emulator.drop_watches() >= 1
    await asyncio.wait_for(task, 5)
    assert [e["type"] for e in received] == ["ADDED"]
    for _ in range(100):
        if emulator.open_watches()["byResource"].get("widgets", 0) == 0:
            break
        await asyncio.sleep(0.02)
    assert emulator.open_watches()["byResource"].get("widgets", 0) == 0


@pytest.mark.faults
async def test_watch_history_bound_gives_410(kube: KubeClient, widgets: str, emulator: Any) -> None:
    _, listing = await kube.request("GET", widgets)
    rv = listing["metadata"]["resourceVersion"]
    emulator.set_watch_history(3)
    try:
        for name in ("h1", "h2", "h3", "h4"):
            await kube.request("POST", widgets, json=widget(name, color="red"))
        events, _ = await collect(kube, widgets, {"resourceVersion": rv})
        assert [e["type"] for e in events] == ["ERROR"] and events[0]["object"]["code"] == 410
        assert events[0]["object"]["reason"] == "Expired"
    finally:
        emulator.set_watch_history(5000)
    _, listing = await kube.request("GET", widgets)
    emulator.compact()
    events, _ = await collect(kube, widgets, {"resourceVersion": str(int(listing["metadata"]["resourceVersion"]) - 1)})
    assert events[0]["object"]["code"] == 410


@pytest.mark.faults
async def test_request_counts_over_http(kube: KubeClient, widgets: str, emulator: Any) -> None:
    emulator.reset_request_counts()
    await kube.request("GET", widgets)
    await kube.request("GET", f"{widgets}/nope")
    await kube.request("GET", f"{widgets}/nope")
    await create_w1(kube, widgets)
    await kube.request("PATCH", f"{widgets}/w1/status", json={"status": {"a": 1}}, content_type=MERGE)
    await collect(kube, widgets, {"timeoutSeconds": "1"})
    status, counts = await kube.request("GET", "/_emulator/requests")
    assert status == 200
    mine = {
        "list widgets": 1,
        "get widgets": 2,
        "create widgets": 1,
        "patch widgets/status": 1,
        "watch widgets": 1,
    }
    # other clients (an operator left running by another test) may add to the totals
    assert counts["byAgent"]["session-operator-tests/1"] == mine
    assert all(counts["counts"][key] >= n for key, n in mine.items())
    assert counts["total"] >= 6
    status, _ = await kube.request("DELETE", "/_emulator/requests")
    assert status == 200
    assert "session-operator-tests/1" not in emulator.request_counts()["byAgent"]


@pytest.mark.faults
async def test_bookmarks_carry_only_a_resource_version(kube: KubeClient, widgets: str, emulator: Any) -> None:
    emulator.set_bookmark_interval(0.3)
    try:
        events, _ = await collect(kube, widgets, {"allowWatchBookmarks": "true", "timeoutSeconds": "1"})
    finally:
        emulator.set_bookmark_interval(30.0)
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks
    for bookmark in bookmarks:
        assert bookmark["object"] == {
            "apiVersion": "example.test/v1",
            "kind": "Widget",
            "metadata": {"resourceVersion": bookmark["object"]["metadata"]["resourceVersion"]},
        }


@pytest.mark.faults
async def test_client_disconnect_ends_the_watch(cluster: Any, widgets: str, emulator: Any) -> None:
    before = emulator.open_watches()["byResource"].get("widgets", 0)
    watcher = KubeClient(cluster.kubeconfig)

    async def follow() -> None:
        async for _ in watcher.watch(widgets, {"timeoutSeconds": "60"}):
            pass

    tasks = [asyncio.create_task(follow()) for _ in range(5)]
    for _ in range(100):
        if emulator.open_watches()["byResource"].get("widgets", 0) >= before + 5:
            break
        await asyncio.sleep(0.02)
    assert emulator.open_watches()["byResource"].get("widgets", 0) == before + 5
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await watcher.close()  # drops the connections
    for _ in range(200):
        if emulator.open_watches()["byResource"].get("widgets", 0) == before:
            break
        await asyncio.sleep(0.02)
    assert emulator.open_watches()["byResource"].get("widgets", 0) == before


async def test_kubeconfig_works_with_kubernetes_asyncio(cluster: Any, namespace: str) -> None:
    from kubernetes_asyncio import client, config

    configuration = client.Configuration()
    await config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    async with client.ApiClient(configuration) as api:
        names = [ns.metadata.name for ns in (await client.CoreV1Api(api).list_namespace()).items]
        assert namespace in names
        leases = client.CoordinationV1Api(api)
        lease = client.V1Lease(metadata=client.V1ObjectMeta(name="k8sa"), spec=client.V1LeaseSpec(holder_identity="a"))
        created = await leases.create_namespaced_lease(namespace, lease)
        created.spec.holder_identity = "b"
        replaced = await leases.replace_namespaced_lease("k8sa", namespace, created)
        assert replaced.spec.holder_identity == "b"
        with pytest.raises(client.ApiException) as stale:
            await leases.replace_namespaced_lease("k8sa", namespace, created)
        assert stale.value.status == 409


@pytest.mark.faults
async def test_cli_serves_and_stops_on_sigterm(tmp_path: Path, emulator: Any) -> None:
    import os
    import signal
    import sys

    crd = tmp_path / "crd.json"
    crd.write_text(json.dumps(WIDGET_CRD))
    kubeconfig = tmp_path / "kubeconfig"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "emulator"), os.environ.get("PYTHONPATH", "")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kube_emulator", "--port", "0", "--tls",
        "--kubeconfig", str(kubeconfig), "--crd", str(crd),
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert re.fullmatch(r"ready https://127\.0\.0\.1:\d+", line), line
        other = KubeClient(kubeconfig)
        try:
            status, _ = await other.request("GET", "/apis/example.test/v1/widgets")
            assert status == 200
        finally:
            await other.close()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 15) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
