"""What the API server itself enforces once the Session CRD is applied.

These run against the in-repo API emulator by default and against a real cluster
when SESSION_OPERATOR_TEST_KUBECONFIG is set (see tests/conftest.py), so every
assertion is one a real kube-apiserver satisfies: a rejection is HTTP 422 with a
`Status` of reason `Invalid`, whose message names the field path and whose
`details.causes` carry a cause for that field (tests/contract/transcripts/ holds the
real shapes). Exact sentences are not asserted, except the CRD's own CEL message
"target is immutable".

No operator runs here: only the CRD's schema, defaults, pruning, CEL rule and
status subresource are exercised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from support.apiserver import without_transition_rules

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "sessions.session-operator.io.yaml"
GROUP_VERSION = "session-operator.io/v1alpha1"
MERGE_PATCH = "application/merge-patch+json"


@pytest.fixture
async def sessions(kube: Any, namespace: str, cluster: Any) -> str:
    """The collection path of Sessions in a fresh namespace, with the CRD served."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    await kube.apply_crd(crd if cluster.transition_rules else without_transition_rules(crd))
    return f"/apis/{GROUP_VERSION}/namespaces/{namespace}/sessions"


def session(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": GROUP_VERSION, "kind": "Session", "metadata": {"name": name}, "spec": spec}


async def create(kube: Any, sessions: str, body: dict[str, Any]) -> dict[str, Any]:
    status, created = await kube.request("POST", sessions, json=body)
    assert status == 201, (status, created)
    return created


async def merge_patch(kube: Any, path: str, patch: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return await kube.request("PATCH", path, json=patch, content_type=MERGE_PATCH)


def assert_invalid(status: int, body: dict[str, Any], field: str | tuple[str, ...], *, says: str | None = None) -> None:
    """A real API server's answer to a schema or CEL violation on `field`.

    `field` may list several spellings of one path: for a schema error inside an
    array item, kube-apiserver v1.24 names the array and not the element
    (`status.conditions.status`, in the message and in `details.causes[].field`),
    where later releases index it (`status.conditions[0].status`).
    """
    spellings = (field,) if isinstance(field, str) else field
    assert status == 422, (status, body)
    assert body.get("kind") == "Status", body
    assert body.get("status") == "Failure", body
    assert body.get("reason") == "Invalid", body
    assert body.get("code") == 422, body
    message = body.get("message", "")
    assert any(f in message for f in spellings), f"{spellings!r} not named in {message!r}"
    causes = body.get("details", {}).get("causes", [])
    field_causes = [cause for cause in causes if cause.get("field") in spellings]
    assert field_causes, f"no cause for {spellings!r} in {causes!r}"
    if says is not None:
        assert says in message, f"{says!r} not in {message!r}"
        assert any(says in cause.get("message", "") for cause in field_causes), field_causes


async def assert_absent(kube: Any, sessions: str, name: str) -> None:
    status, body = await kube.request("GET", f"{sessions}/{name}")
    assert status == 404, (status, body)


# --------------------------------------------------------------------------- rejected at create time

REJECTED_SPECS = [
    pytest.param({"target": ""}, "spec.target", id="empty-target"),
    pytest.param({"profile": "gpt-4o"}, "spec.target", id="missing-target"),
    pytest.param({"target": "t" * 300}, "spec.target", id="target-300-chars"),
    pytest.param({"target": "line\nbreak"}, "spec.target", id="target-with-newline"),
    pytest.param({"target": "tab\there"}, "spec.target", id="target-with-tab"),
    pytest.param({"target": "nul\x00byte"}, "spec.target", id="target-with-nul"),
    # The API server evaluates patterns with RE2, whose `$` is the end of the text
    # (Python's `$` would also match before this final newline).
    pytest.param({"target": "repo/payments\n"}, "spec.target", id="target-with-trailing-newline"),
    pytest.param({"target": "t", "profile": "p" * 254}, "spec.profile", id="profile-254-chars"),
    pytest.param({"target": "t", "onConflict": "Sometimes"}, "spec.onConflict", id="onConflict-Sometimes"),
    pytest.param({"target": "t", "state": "Paused"}, "spec.state", id="state-Paused"),
    pytest.param({"target": "t", "priority": 2**31}, "spec.priority", id="priority-above-int32"),
    pytest.param({"target": "t", "priority": -(2**31) - 1}, "spec.priority", id="priority-below-int32"),
    pytest.param({"target": "t", "priority": "high"}, "spec.priority", id="priority-not-integer"),
    pytest.param({"target": "t", "idleTimeout": "5 minutes"}, "spec.idleTimeout", id="idleTimeout-5-minutes"),
    pytest.param({"target": "t", "maxDuration": "1d"}, "spec.maxDuration", id="maxDuration-1d"),
    pytest.param({"target": "t", "archiveAfter": "-5m"}, "spec.archiveAfter", id="archiveAfter-negative"),
    pytest.param({"target": "t", "deleteAfter": "10"}, "spec.deleteAfter", id="deleteAfter-no-unit"),
    pytest.param({"target": "t", "idleTimeout": ""}, "spec.idleTimeout", id="idleTimeout-empty"),
]


@pytest.mark.parametrize(("spec", "field"), REJECTED_SPECS)
async def test_invalid_spec_is_rejected_at_create(kube: Any, sessions: str, spec: dict[str, Any], field: str) -> None:
    status, body = await kube.request("POST", sessions, json=session("bad", **spec))
    assert_invalid(status, body, field)
    await assert_absent(kube, sessions, "bad")


async def test_session_without_spec_is_rejected(kube: Any, sessions: str) -> None:
    body = {"apiVersion": GROUP_VERSION, "kind": "Session", "metadata": {"name": "no-spec"}}
    status, answer = await kube.request("POST", sessions, json=body)
    assert_invalid(status, answer, "spec")
    await assert_absent(kube, sessions, "no-spec")


# --------------------------------------------------------------------------- target is immutable


@pytest.mark.transition_rules
async def test_target_change_by_merge_patch_is_rejected(kube: Any, sessions: str) -> None:
    await create(kube, sessions, session("pinned", target="repo/payments"))

    status, body = await merge_patch(kube, f"{sessions}/pinned", {"spec": {"target": "repo/billing"}})

    assert_invalid(status, body, "spec.target", says="target is immutable")
    status, stored = await kube.request("GET", f"{sessions}/pinned")
    assert status == 200
    assert stored["spec"]["target"] == "repo/payments"
    assert stored["metadata"]["generation"] == 1


@pytest.mark.transition_rules
async def test_target_change_by_put_is_rejected(kube: Any, sessions: str) -> None:
    created = await create(kube, sessions, session("pinned-put", target="repo/payments"))
    replacement = {**created, "spec": {**created["spec"], "target": "repo/billing"}}

    status, body = await kube.request("PUT", f"{sessions}/pinned-put", json=replacement)

    assert_invalid(status, body, "spec.target", says="target is immutable")


async def test_same_target_in_a_patch_is_a_no_op(kube: Any, sessions: str) -> None:
    await create(kube, sessions, session("same", target="repo/payments"))

    status, body = await merge_patch(kube, f"{sessions}/same", {"spec": {"target": "repo/payments"}})

    assert status == 200, body
    assert body["spec"]["target"] == "repo/payments"
    assert body["metadata"]["generation"] == 1


# --------------------------------------------------------------------------- accepted, defaulted, pruned


async def test_minimal_session_gets_the_contract_defaults(kube: Any, sessions: str) -> None:
    created = await create(kube, sessions, session("minimal", target="repo/payments"))

    assert created["spec"] == {
        "target": "repo/payments",
        "profile": "",
        "onConflict": "Reject",
        "priority": 0,
        "state": "Active",
    }
    assert created["metadata"]["generation"] == 1
    status, stored = await kube.request("GET", f"{sessions}/minimal")
    assert status == 200
    assert stored["spec"] == created["spec"]


async def test_explicit_values_are_kept(kube: Any, sessions: str) -> None:
    spec = {
        "target": "repo/ünïcode with spaces",
        "profile": "gpt-4o",
        "onConflict": "ReplaceIfProfileChanged",
        "priority": -(2**31),
        "state": "Inactive",
    }
    created = await create(kube, sessions, session("explicit", **spec))
    assert created["spec"] == spec


async def test_unknown_fields_are_pruned(kube: Any, sessions: str) -> None:
    body = session("pruned", target="repo/payments", bogus=1, nested={"deep": True})
    body["extra"] = "top-level"

    created = await create(kube, sessions, body)

    assert "bogus" not in created["spec"]
    assert "nested" not in created["spec"]
    assert "extra" not in created
    status, stored = await kube.request("GET", f"{sessions}/pruned")
    assert status == 200
    assert "bogus" not in stored["spec"]
    assert "extra" not in stored


async def test_status_is_ignored_on_create(kube: Any, sessions: str) -> None:
    body = session("no-status", target="repo/payments")
    body["status"] = {"phase": "Active"}

    created = await create(kube, sessions, body)

    assert not created.get("status"), created


@pytest.mark.parametrize("duration", ["90s", "30m", "24h", "1h30m", "0s"])
async def test_good_durations_are_accepted(kube: Any, sessions: str, duration: str) -> None:
    fields = ("idleTimeout", "maxDuration", "archiveAfter", "deleteAfter")
    name = "d-" + duration.lower()

    created = await create(kube, sessions, session(name, target="repo/payments", **dict.fromkeys(fields, duration)))

    assert {f: created["spec"][f] for f in fields} == dict.fromkeys(fields, duration)


async def test_profile_change_is_allowed_and_bumps_generation(kube: Any, sessions: str) -> None:
    await create(kube, sessions, session("switch", target="repo/payments", profile="gpt-4o"))

    status, body = await merge_patch(kube, f"{sessions}/switch", {"spec": {"profile": "gpt-4o-mini"}})

    assert status == 200, body
    assert body["spec"]["profile"] == "gpt-4o-mini"
    assert body["spec"]["target"] == "repo/payments"
    assert body["metadata"]["generation"] == 2


# --------------------------------------------------------------------------- the status subresource

FULL_STATUS = {
    "phase": "Queued",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "False",
            "reason": "Queued",
            "message": 'target "repo/payments" is held by session "alice-1"',
            "lastTransitionTime": "2026-11-21T10:00:00Z",
            "observedGeneration": 1,
        },
        {
            "type": "Reconciling",
            "status": "True",
            "reason": "Queued",
            "message": "waiting for the target",
            "lastTransitionTime": "2026-11-21T10:00:00Z",
            "observedGeneration": 1,
        },
    ],
    "holder": {
        "name": "alice-1",
        "uid": "190f7464-d3d8-4ec7-bab5-e778dae3c7fc",
        "profile": "gpt-4o",
        "activeSince": "2026-11-21T09:00:00Z",
    },
    "queuePosition": 1,
    "lastActivityTime": "2026-11-21T09:30:00Z",
    "replaces": "bob-2",
}


async def test_operator_status_is_accepted_and_kept_whole(kube: Any, sessions: str) -> None:
    await create(kube, sessions, session("queued", target="repo/payments", onConflict="Queue"))

    status, body = await merge_patch(kube, f"{sessions}/queued/status", {"status": FULL_STATUS})

    assert status == 200, body
    assert body["status"] == FULL_STATUS
    assert body["metadata"]["generation"] == 1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        pytest.param({"phase": "Running"}, "status.phase", id="unknown-phase"),
        pytest.param({"queuePosition": 0}, "status.queuePosition", id="queuePosition-0"),
        pytest.param({"activeSince": "yesterday"}, "status.activeSince", id="activeSince-not-a-time"),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "Maybe"}]},
            ("status.conditions.status", "status.conditions[0].status"),
            id="condition-status-Maybe",
        ),
        pytest.param(
            {"conditions": [{"type": "Ready", "status": "True"}, {"status": "False"}]},
            ("status.conditions.type", "status.conditions[1].type"),
            id="condition-without-type",
        ),
    ],
)
async def test_invalid_status_is_rejected(
    kube: Any, sessions: str, patch: dict[str, Any], field: str | tuple[str, ...]
) -> None:
    await create(kube, sessions, session("status-bad", target="repo/payments"))

    status, body = await merge_patch(kube, f"{sessions}/status-bad/status", {"status": patch})

    assert_invalid(status, body, field)


async def test_status_subresource_keeps_duplicate_condition_types(kube: Any, sessions: str) -> None:
    """`conditions` is a list-type map keyed by `type`, but kube-apiserver v1.24 checks
    list-type invariants only on writes of the main resource, not of the status
    subresource: two conditions of one type are stored as written. Keeping them
    unique is the operator's job."""
    await create(kube, sessions, session("status-dup", target="repo/payments"))
    conditions = [{"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]

    status, body = await merge_patch(kube, f"{sessions}/status-dup/status", {"status": {"conditions": conditions}})

    assert status == 200, body
    assert body["status"]["conditions"] == conditions
