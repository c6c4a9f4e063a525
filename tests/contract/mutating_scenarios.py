"""Mutating admission webhook scenarios, run like the validating ones of
``webhook_scenarios.py`` (same :class:`~webhook_scenarios.Run`, same recording and comparison):
a MutatingWebhookConfiguration whose webhooks answer JSON patches, requests, and one exchange
per request with the calls the webhook server received meanwhile, in the order received.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from webhook_scenarios import MERGE, Run, labelled, widget

from support.webhook_server import MUTATING, MWC_PATH, allow, deny, patch


def widget_rules(operations: list[str], resources: list[str] | None = None) -> list[dict[str, Any]]:
    return [
        {
            "operations": operations,
            "apiGroups": ["example.test"],
            "apiVersions": ["v1"],
            "resources": resources or ["widgets"],
        }
    ]


CREATE = widget_rules(["CREATE"])


async def configuration(run: Run) -> None:
    """The configuration object itself: defaults (reinvocationPolicy too), validation, deletion."""
    await run.register(
        "mutating-create",
        [run.hook.webhook("label.webhooks.example.test", "/label", widget_rules(["CREATE", "UPDATE"]))],
        note="a MutatingWebhookConfiguration as a test writes it: the validating kind's defaults, and "
        "reinvocationPolicy Never; generation 1",
        kind=MUTATING,
    )
    bad = run.hook.configuration(
        f"mutating-invalid-{run.namespace}",
        [
            {
                "name": "guard",
                "clientConfig": {"url": "http://127.0.0.1:1/x?y=1"},
                "rules": [{"operations": ["CREATE", "*"], "apiGroups": [], "apiVersions": ["v1"], "resources": []}],
                "failurePolicy": "Sometimes",
                "reinvocationPolicy": "Always",
                "timeoutSeconds": 31,
                "admissionReviewVersions": ["v2"],
            },
            {
                "name": "guard.webhooks.example.test",
                "clientConfig": {},
                "rules": CREATE,
                "sideEffects": "Some",
                "admissionReviewVersions": [],
                "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]},
                "reinvocationPolicy": "",
            },
            {
                "name": "guard.webhooks.example.test",
                "clientConfig": {"url": "https://127.0.0.1/x"},
                "rules": CREATE,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "reinvocationPolicy": "IfNeeded",
                "objectSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
            },
        ],
        probe=False,
        kind=MUTATING,
    )
    exchange = await run.call(
        "webhook-config-mutating-invalid",
        "what a real server checks in a MutatingWebhookConfiguration: the validating kind's checks and "
        "reinvocationPolicy, in this order",
        "POST",
        MWC_PATH,
        bad,
    )
    assert exchange["response"]["status"] == 422, exchange
    await run.call(
        "webhook-config-mutating-delete",
        "deleting a MutatingWebhookConfiguration: a Success Status",
        "DELETE",
        run.configs.pop(),
    )


async def reviews(run: Run) -> None:
    """What a mutating webhook receives for each operation (it answers without a patch)."""
    rules = widget_rules(["CREATE", "UPDATE", "DELETE"], ["widgets", "widgets/status"])
    await run.register("mutating-reviews", [run.webhook("audit.webhooks.example.test", "/audit", rules)], kind=MUTATING)
    body = widget("w1", "audit")
    body["status"] = {"phase": "New"}
    created = await run.call(
        "webhook-mutating-review-create",
        "CREATE: a mutating webhook sees the decoded object before the server fills it in (no uid, "
        "creationTimestamp, generation; status as sent); an answer without a patch changes nothing",
        "POST",
        run.widgets,
        body,
    )
    await run.call(
        "webhook-mutating-review-create-generate-name",
        "CREATE with generateName: a mutating webhook is called before the name is generated",
        "POST",
        run.widgets,
        {**widget("", "audit"), "metadata": {"generateName": "gen-", "labels": {"hook": "audit"}}},
    )
    await run.call(
        "webhook-mutating-review-dry-run",
        "dryRun=All: the mutating webhook is called with dryRun true; nothing is stored",
        "POST",
        run.widgets,
        widget("w2", "audit"),
        params={"dryRun": "All", "fieldManager": "contract"},
    )
    await run.cache_has_seen(created, run.widgets)
    replacement = created["response"]["body"]
    replacement = {**replacement, "spec": {"color": "blue"}, "status": {"phase": "Sent"}}
    put = await run.call(
        "webhook-mutating-review-update-put",
        "PUT: the object as sent (status too, before the server puts the stored status back), oldObject "
        "the stored one",
        "PUT",
        f"{run.widgets}/w1",
        replacement,
    )
    await run.cache_has_seen(put, run.widgets)
    updated = await run.call(
        "webhook-mutating-review-update-patch",
        "a merge patch: the patched object, oldObject the stored one, UpdateOptions",
        "PATCH",
        f"{run.widgets}/w1",
        {"spec": {"size": 5}},
        params={"fieldManager": "contract"},
        content_type=MERGE,
    )
    await run.cache_has_seen(updated, run.widgets)
    status_updated = await run.call(
        "webhook-mutating-review-update-status",
        "the status subresource: subResource status",
        "PATCH",
        f"{run.widgets}/w1/status",
        {"status": {"phase": "Ready"}},
        content_type=MERGE,
    )
    await run.cache_has_seen(status_updated, run.widgets)
    await run.call(
        "webhook-mutating-review-delete",
        "DELETE: object null, oldObject the stored object",
        "DELETE",
        f"{run.widgets}/w1",
    )


async def patches(run: Run) -> None:
    """JSON patches applied: in configuration order, each webhook seeing what the previous left;
    then defaulting, validation and pruning of the result."""
    # registered second-first: the order is the configurations' names, not their creation
    await run.register(
        "mutating-second",
        [
            run.webhook(
                "second.webhooks.example.test",
                "/second",
                CREATE,
                objectSelector=labelled("chain"),
            )
        ],
        kind=MUTATING,
    )
    cases: list[tuple[str, list[dict[str, Any]]]] = [
        ("first", [{"op": "add", "path": "/metadata/labels/first", "value": "yes"},
                   {"op": "replace", "path": "/spec/size", "value": 5}]),
        ("default", [{"op": "remove", "path": "/spec/size"}]),
        ("prune", [{"op": "add", "path": "/spec/extra", "value": "x"},
                   {"op": "add", "path": "/metadata/annotations", "value": {"pruned": "no"}}]),
        ("invalid", [{"op": "replace", "path": "/spec/color", "value": "green"}]),
        ("cel", [{"op": "add", "path": "/spec/limit", "value": 200}]),
        ("status", [{"op": "add", "path": "/status", "value": {"phase": "Patched"}}]),
        ("namespace", [{"op": "add", "path": "/metadata/namespace", "value": "elsewhere"}]),
        ("empty", []),
        ("replace-missing", [{"op": "replace", "path": "/spec/label", "value": "abc"}]),
    ]
    await run.register(
        "mutating-first",
        [
            run.webhook(
                f"{label}.webhooks.example.test",
                f"/{label}",
                CREATE,
                objectSelector=labelled("chain" if label == "first" else label),
            )
            for label, _ in cases
        ],
        kind=MUTATING,
    )
    await run.register("mutating-check", [run.webhook("check.webhooks.example.test", "/check", CREATE)])
    for label, operations in cases:
        run.hook.answer(f"/{label}", patch(operations))
    run.hook.answer("/second", patch([{"op": "add", "path": "/metadata/annotations", "value": {"second": "yes"}}]))
    await run.call(
        "webhook-mutating-chain",
        "two configurations (mutating-first-*, mutating-second-*): their webhooks are called one after the "
        "other in name order, each seeing the object as the previous patch left it; the validating "
        "webhook sees the result (now with uid and creationTimestamp), which is stored",
        "POST",
        run.widgets,
        widget("w1", "chain"),
    )
    notes = {
        "default": "a patch removes a defaulted field: the object is defaulted again",
        "prune": "a patch adds a field the schema does not know: it is pruned from what is stored",
        "invalid": "a patch breaks the schema (enum): 422 Invalid, as if the client had sent it",
        "cel": "a patch breaks an x-kubernetes-validations rule: 422 Invalid",
        "status": "a patch adds status on a create: dropped, as the status subresource is enabled",
        "namespace": "a patch moves the object to another namespace: 400 BadRequest",
        "empty": "an empty JSON patch: nothing changes",
        "replace-missing": "a replace of a key the object does not have: added (evanphx/json-patch v4 does not check)",
    }
    for index, (label, _) in enumerate(cases[1:], start=2):
        await run.call(
            f"webhook-mutating-patch-{label}", notes[label], "POST", run.widgets, widget(f"w{index}", label)
        )


def _raw_response(response: dict[str, Any]) -> Callable[[dict[str, Any]], web.Response]:
    """An AdmissionReview whose ``response`` is ``response`` as is (uid filled in)."""

    def answer(request: dict[str, Any]) -> web.Response:
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": request.get("uid", ""), **response},
            }
        )

    return answer


async def errors(run: Run) -> None:
    """Answers a mutating webhook may not give, and failures, by failurePolicy."""
    remove_missing = [{"op": "remove", "path": "/spec/missing"}]
    cases: list[tuple[str, Any, dict[str, Any], str]] = [
        ("no-type", patch([{"op": "add", "path": "/spec/size", "value": 4}], patch_type=None), {},
         "a patch without patchType, failurePolicy Fail: 500 InternalError"),
        ("no-type-ignore", patch([{"op": "add", "path": "/spec/size", "value": 4}], patch_type=None),
         {"failurePolicy": "Ignore"},
         "a patch without patchType, failurePolicy Ignore: created as sent"),
        ("no-patch", _raw_response({"allowed": True, "patchType": "JSONPatch"}), {},
         "patchType without a patch: 500 InternalError"),
        ("merge-type", patch([{"op": "add", "path": "/spec/size", "value": 4}], patch_type="MergePatch"), {},
         "a patchType other than JSONPatch: 500 InternalError"),
        ("bad-op", patch(remove_missing), {},
         "a patch that does not apply (removes a missing key), failurePolicy Fail: 500 InternalError"),
        ("bad-op-ignore", patch(remove_missing), {"failurePolicy": "Ignore"},
         "a patch that does not apply, failurePolicy Ignore: still 500, the call itself succeeded"),
        ("bad-path", patch([{"op": "add", "path": "/spec/nested/deeper", "value": 1}]), {},
         "a patch that adds below a missing object: 500 InternalError"),
        ("test-failed", patch([{"op": "test", "path": "/spec/color", "value": "blue"}]), {},
         "a patch whose test operation fails: 500 InternalError"),
        ("not-json", patch(b"not json"), {}, "a patch that is not JSON: 500 InternalError"),
        ("not-list", patch({"op": "add", "path": "/spec/size", "value": 4}), {},
         "a patch that is a JSON object, not a list: 500 InternalError"),
        ("bad-base64", _raw_response({"allowed": True, "patchType": "JSONPatch", "patch": "%%%%"}), {},
         "a patch that is not base64: the response cannot be decoded, failurePolicy Fail: 500"),
        ("deny", deny(403, "no widgets today", reason="Forbidden"), {},
         "a mutating webhook denies: its code and message, as a validating one's"),
    ]
    webhooks = [
        run.webhook(f"{label}.webhooks.example.test", f"/{label}", CREATE, objectSelector=labelled(label), **fields)
        for label, _, fields, _ in cases
    ]
    webhooks.append(
        run.webhook(
            "down.webhooks.example.test",
            None,
            CREATE,
            url=run.down_url("/down"),
            objectSelector=labelled("down"),
        )
    )
    webhooks.append(
        run.webhook(
            "beta.webhooks.example.test",
            "/beta",
            CREATE,
            admissionReviewVersions=["v1beta1"],
            objectSelector=labelled("beta"),
        )
    )
    deletes = widget_rules(["DELETE"])
    for label in ("delete-patch", "delete-empty"):
        webhooks.append(
            run.webhook(f"{label}.webhooks.example.test", f"/{label}", deletes, objectSelector=labelled(label))
        )
    webhooks.append(run.webhook("warn.webhooks.example.test", "/warn", CREATE, objectSelector=labelled("warn")))
    await run.register("mutating-errors", webhooks, kind=MUTATING)
    await run.register(
        "mutating-errors-check",
        [run.webhook("check.webhooks.example.test", "/check", CREATE, objectSelector=labelled("warn"))],
    )
    for label, answer, _, _ in cases:
        run.hook.answer(f"/{label}", answer)

    def beta(request: dict[str, Any]) -> web.Response:
        raw = base64.b64encode(b'[{"op": "add", "path": "/spec/size", "value": 7}]').decode()
        return web.json_response(
            {
                "apiVersion": "admission.k8s.io/v1beta1",
                "kind": "AdmissionReview",
                "response": {"uid": request.get("uid", ""), "allowed": True, "patch": raw},
            }
        )

    run.hook.answer("/beta", beta)
    run.hook.answer("/delete-patch", patch([{"op": "add", "path": "/metadata/labels/deleted", "value": "yes"}]))
    run.hook.answer("/delete-empty", patch([]))
    run.hook.answer(
        "/warn", patch([{"op": "add", "path": "/spec/size", "value": 6}], ["from the mutating webhook", "shared"])
    )
    run.hook.answer("/check", allow(["from the validating webhook", "shared"]))
    for index, (label, _, _, note) in enumerate(cases, start=1):
        await run.call(f"webhook-mutating-{label}", note, "POST", run.widgets, widget(f"w{index}", label))
    await run.call(
        "webhook-mutating-down",
        "a mutating webhook nothing listens on, failurePolicy Fail: 500 InternalError",
        "POST",
        run.widgets,
        widget("w-down", "down"),
    )
    await run.call(
        "webhook-mutating-v1beta1",
        "an admission.k8s.io/v1beta1 answer with a patch and no patchType: applied as a JSON patch",
        "POST",
        run.widgets,
        widget("w-beta", "beta"),
    )
    await run.call(
        "webhook-mutating-warnings",
        "warnings of a mutating and of a validating webhook: the mutating webhook's first, repeats dropped",
        "POST",
        run.widgets,
        widget("w-warn", "warn"),
    )
    for label, note in (
        ("delete-patch", "a patch on DELETE: 500 InternalError, there is no object to modify"),
        ("delete-empty", "an empty patch on DELETE: the delete goes through"),
    ):
        status, body = await run.kube.request("POST", run.widgets, json=widget(label, label))
        assert status == 201, body
        await run.cache_has_seen({"response": {"body": body}}, run.widgets)
        await run.call(f"webhook-mutating-{label}", note, "DELETE", f"{run.widgets}/{label}")


async def reinvocation(run: Run) -> None:
    """reinvocationPolicy IfNeeded: a webhook is called again when a later one changed the object."""
    await run.register(
        "mutating-reinvocation",
        [
            run.webhook(
                "again.webhooks.example.test",
                "/again",
                CREATE,
                reinvocationPolicy="IfNeeded",
                objectSelector=labelled("reinvoke"),
            ),
            run.webhook("once.webhooks.example.test", "/once", CREATE, objectSelector=labelled("reinvoke")),
            run.webhook("change.webhooks.example.test", "/change", CREATE, objectSelector=labelled("reinvoke")),
            run.webhook(
                "late.webhooks.example.test",
                "/late",
                CREATE,
                reinvocationPolicy="IfNeeded",
                objectSelector={"matchLabels": {"changed": "yes"}},
            ),
            run.webhook(
                "self.webhooks.example.test",
                "/self",
                CREATE,
                reinvocationPolicy="IfNeeded",
                objectSelector=labelled("self"),
            ),
        ],
        kind=MUTATING,
    )
    run.hook.answer("/change", patch([{"op": "add", "path": "/metadata/labels/changed", "value": "yes"}]))
    run.hook.answer("/self", patch([{"op": "add", "path": "/metadata/labels/changed", "value": "self"}]))
    await run.call(
        "webhook-mutating-reinvocation",
        "again (IfNeeded), once (Never), change (patches a label), late (its objectSelector matches the "
        "label change added): again is called a second time, after late, with the changed object",
        "POST",
        run.widgets,
        widget("w1", "reinvoke"),
    )
    await run.call(
        "webhook-mutating-reinvocation-self",
        "an IfNeeded webhook whose own patch is the last change: called once",
        "POST",
        run.widgets,
        widget("w2", "self"),
    )


async def builtin(run: Run) -> None:
    """A built-in (ConfigMap): the typed object a webhook sees, a patch decoded into the Go struct."""
    rules = [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]
    cases = [
        ("cm", [{"op": "add", "path": "/data", "value": {"added": "by the webhook"}}],
         "a ConfigMap create: the webhook sees the typed object; its patch adds data"),
        ("cm-type", [{"op": "add", "path": "/data", "value": 5}],
         "a patch of the wrong type for the Go struct: 500 InternalError"),
        ("cm-unknown", [{"op": "add", "path": "/spec", "value": {"x": 1}}],
         "a patch adding a field the Go struct does not have: dropped"),
    ]
    await run.register(
        "mutating-configmaps",
        [
            run.webhook(f"{label}.webhooks.example.test", f"/{label}", rules, objectSelector=labelled(label))
            for label, _, _ in cases
        ],
        kind=MUTATING,
    )
    for label, operations, note in cases:
        run.hook.answer(f"/{label}", patch(operations))
        await run.call(
            f"webhook-mutating-{label}",
            note,
            "POST",
            f"/api/v1/namespaces/{run.namespace}/configmaps",
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": label, "labels": {"hook": label}}},
        )


async def updates(run: Run) -> None:
    """Patches on UPDATE: the server's update rules apply to the patched object."""
    await run.register(
        "mutating-updates",
        [
            run.webhook(
                "status-on-main.webhooks.example.test",
                "/status-on-main",
                widget_rules(["UPDATE"]),
                objectSelector=labelled("stamp"),
            ),
            run.webhook(
                "spec-on-status.webhooks.example.test",
                "/spec-on-status",
                widget_rules(["UPDATE"], ["widgets/status"]),
                objectSelector=labelled("stamp"),
            ),
            run.webhook(
                "rename.webhooks.example.test", "/rename", widget_rules(["UPDATE"]), objectSelector=labelled("rename")
            ),
            run.webhook(
                "move.webhooks.example.test", "/move", widget_rules(["UPDATE"]), objectSelector=labelled("move")
            ),
        ],
        kind=MUTATING,
    )
    run.hook.answer("/rename", patch([{"op": "replace", "path": "/metadata/name", "value": "renamed"}]))
    run.hook.answer("/move", patch([{"op": "replace", "path": "/metadata/namespace", "value": "elsewhere"}]))
    run.hook.answer(
        "/status-on-main",
        patch(
            [
                {"op": "add", "path": "/status", "value": {"phase": "Hacked"}},
                {"op": "add", "path": "/metadata/annotations", "value": {"stamped": "yes"}},
            ]
        ),
    )
    run.hook.answer(
        "/spec-on-status",
        patch(
            [
                {"op": "replace", "path": "/spec/color", "value": "blue"},
                {"op": "add", "path": "/status/by", "value": "webhook"},
            ]
        ),
    )
    status, created = await run.kube.request("POST", run.widgets, json=widget("w1", "stamp"))
    assert status == 201, created
    await run.cache_has_seen({"response": {"body": created}}, run.widgets)
    stale = {**created, "spec": {"color": "blue"}}
    status, body = await run.kube.request(
        "PATCH", f"{run.widgets}/w1/status", json={"status": {"phase": "Ready"}}, content_type=MERGE
    )
    assert status == 200, body
    await run.cache_has_seen({"response": {"body": body}}, run.widgets)
    updated = await run.call(
        "webhook-mutating-update-status-on-main",
        "a patch that sets status on an update of the main resource: dropped (the stored status is "
        "kept); the annotation it adds is stored",
        "PATCH",
        f"{run.widgets}/w1",
        {"spec": {"size": 4}},
        content_type=MERGE,
    )
    await run.cache_has_seen(updated, run.widgets)
    status_updated = await run.call(
        "webhook-mutating-update-spec-on-status",
        "a patch that changes spec on a status update: dropped; its status change is stored",
        "PATCH",
        f"{run.widgets}/w1/status",
        {"status": {"phase": "Done"}},
        content_type=MERGE,
    )
    await run.cache_has_seen(status_updated, run.widgets)
    await run.call(
        "webhook-mutating-update-conflict",
        "a PUT with a stale resourceVersion: the mutating webhook is called first, then 409 Conflict",
        "PUT",
        f"{run.widgets}/w1",
        stale,
    )
    for label, note in (
        ("rename", "a patch renames the object on an update: 422, the name is immutable"),
        ("move", "a patch moves the object to another namespace on an update: 400 BadRequest"),
    ):
        status, body = await run.kube.request("POST", run.widgets, json=widget(f"w-{label}", label))
        assert status == 201, body
        await run.cache_has_seen({"response": {"body": body}}, run.widgets)
        await run.call(
            f"webhook-mutating-update-{label}",
            note,
            "PATCH",
            f"{run.widgets}/w-{label}",
            {"spec": {"size": 4}},
            content_type=MERGE,
        )


async def equivalent(run: Run) -> None:
    """matchPolicy Equivalent: a webhook whose rules name events.k8s.io/v1 events patches a core v1
    Event in that version's shape; the patch is converted back."""
    rules = [{"operations": ["CREATE"], "apiGroups": ["events.k8s.io"], "apiVersions": ["v1"], "resources": ["events"]}]
    await run.register(
        "mutating-equivalent",
        [run.webhook("note.webhooks.example.test", "/note", rules, objectSelector=labelled("note"))],
        kind=MUTATING,
    )
    run.hook.answer(
        "/note",
        patch(
            [
                {"op": "replace", "path": "/note", "value": "rewritten by the webhook"},
                {"op": "add", "path": "/metadata/labels/noted", "value": "yes"},
            ]
        ),
    )
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1", "labels": {"hook": "note"}},
        "involvedObject": {"apiVersion": "example.test/v1", "kind": "Widget", "namespace": run.namespace, "name": "w1"},
        "reason": "Checked",
        "message": "a core v1 event",
        "type": "Normal",
        "source": {"component": "contract"},
    }
    await run.call(
        "webhook-mutating-equivalent",
        "a core v1 Event create, rules on events.k8s.io/v1: the webhook sees and patches the events.k8s.io/v1 "
        "form (note), the core v1 Event is stored with the patched message",
        "POST",
        f"/api/v1/namespaces/{run.namespace}/events",
        event,
    )


MUTATING_SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "mutating-configuration": configuration,
    "mutating-reviews": reviews,
    "mutating-patches": patches,
    "mutating-errors": errors,
    "mutating-reinvocation": reinvocation,
    "mutating-builtin": builtin,
    "mutating-updates": updates,
    "mutating-equivalent": equivalent,
}
