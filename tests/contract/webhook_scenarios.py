"""Admission webhook scenarios (validating here, mutating in ``mutating_scenarios.py``), run the
same way to record a real kube-apiserver's answers (``record_webhooks.py``) and to hold a server
under test to them (``test_admission_webhooks.py``).

Each scenario registers a webhook configuration whose webhooks are served by a
:class:`~support.webhook_server.WebhookServer` on loopback, makes API requests, and returns one
exchange per request: the request, the answer (status, ``Warning`` headers, body) and the
calls the webhook server received meanwhile (path with query, AdmissionReview). Every
webhook is limited to the scenario's namespace (``namespaceSelector``), so configurations
left behind by an interrupted run, or other people's, do not meet.

In recorded exchanges, the webhook server's port and its CA are written as ``<port>``,
``<down-port>`` (a port nothing listens on) and ``<caBundle>`` (see :func:`placeholders`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from kube_emulator.tls import make_certs
from support.kubeclient import KubeClient
from support.webhook_server import (
    VALIDATING,
    VWC_PATH,
    WebhookServer,
    allow,
    await_calls,
    config_path,
    deny,
    free_port,
)

MERGE = "application/merge-patch+json"
WIDGETS = "/apis/example.test/v1/namespaces/{ns}/widgets"
GUARDED = [{"operations": ["CREATE"], "apiGroups": ["example.test"], "apiVersions": ["v1"], "resources": ["widgets"]}]

Exchange = dict[str, Any]


class Run:
    """One scenario's state: the client, the webhook server, the namespace, the exchanges so far."""

    def __init__(self, kube: KubeClient, hook: WebhookServer, namespace: str) -> None:
        self.kube = kube
        self.hook = hook
        self.namespace = namespace
        self.down_port = free_port()
        self.exchanges: list[Exchange] = []
        self.configs: list[str] = []  # the paths of the configurations registered

    @property
    def widgets(self) -> str:
        return WIDGETS.format(ns=self.namespace)

    def only_here(self) -> dict[str, Any]:
        return {"matchLabels": {"kubernetes.io/metadata.name": self.namespace}}

    def webhook(self, name: str, path: str | None, rules: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        fields.setdefault("namespaceSelector", self.only_here())
        return self.hook.webhook(name, path, rules, **fields)

    def down_url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.down_port}{path}"

    async def call(
        self,
        name: str,
        note: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Exchange:
        self.hook.forget()
        reply = await self.kube.request_with_headers(
            method, path, json=body, params=params, content_type=content_type
        )
        request: dict[str, Any] = {"method": method, "path": path + (f"?{urlencode(params)}" if params else "")}
        request["headers"] = {"Content-Type": content_type} if body is not None else {}
        request["body"] = body
        response: dict[str, Any] = {"status": reply.status}
        if reply.warning_headers:
            response["headers"] = {"Warning": reply.warning_headers}
        response["body"] = reply.body
        exchange = {
            "name": name,
            "note": note,
            "request": request,
            "response": response,
            "webhook": [{"path": f"{c.path}?{c.query}", "review": c.review} for c in self.hook.calls],
        }
        self.exchanges.append(exchange)
        return exchange

    async def cache_has_seen(self, exchange: Exchange, collection: str) -> None:
        """Wait until the API server's watch cache holds the object ``exchange`` wrote. A real
        kube-apiserver starts an update or delete from that cache: from a stale object it calls
        the webhooks, fails its optimistic write, and calls them again with the current one."""
        written = int(exchange["response"]["body"]["metadata"]["resourceVersion"])
        for _ in range(200):
            status, listing = await self.kube.request("GET", collection, params={"resourceVersion": "0"})
            assert status == 200, listing
            if int(listing["metadata"]["resourceVersion"]) >= written:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the watch cache did not reach resourceVersion {written}")

    async def register(
        self, name: str, webhooks: list[dict[str, Any]], note: str | None = None, kind: str = VALIDATING
    ) -> Exchange | None:
        """Create a configuration of ``kind`` (recorded as an exchange if ``note`` is given) and
        wait until the API server calls it."""
        config = self.hook.configuration(f"{name}-{self.namespace}", webhooks, kind=kind)
        collection = config_path(config)
        self.configs.append(f"{collection}/{config['metadata']['name']}")
        if note is not None:
            exchange = await self.call(f"webhook-config-{name}", note, "POST", collection, config)
            assert exchange["response"]["status"] == 201, exchange
        else:
            status, body = await self.kube.request("POST", collection, json=config)
            assert status == 201, (status, body)
            exchange = None
        await await_calls(self.kube, self.hook, config["metadata"]["name"], self.namespace)
        return exchange

    async def cleanup(self) -> None:
        for path in self.configs:
            await self.kube.request("DELETE", path)
        self.configs.clear()


def widget(name: str, hook: str | None = None, **extra_meta: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **extra_meta}
    if hook is not None:
        meta["labels"] = {"hook": hook}
    return {"apiVersion": "example.test/v1", "kind": "Widget", "metadata": meta, "spec": {"color": "red"}}


def labelled(hook: str) -> dict[str, Any]:
    return {"matchLabels": {"hook": hook}}


# --------------------------------------------------------------------------- scenarios


async def configuration(run: Run) -> None:
    """The configuration object itself: defaults, validation, deletion."""
    rules = [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": ["example.test"],
            "apiVersions": ["v1"],
            "resources": ["widgets"],
        }
    ]
    await run.register(
        "create",
        [run.hook.webhook("audit.webhooks.example.test", "/audit", rules)],
        note="a configuration as a test writes it: failurePolicy, matchPolicy, selectors, timeoutSeconds and "
        "rules[].scope are defaulted; generation 1",
    )
    bad = run.hook.configuration(
        f"invalid-{run.namespace}",
        [
            {
                "name": "guard",
                "clientConfig": {"url": "http://127.0.0.1:1/x?y=1"},
                "rules": [{"operations": ["CREATE", "*"], "apiGroups": [], "apiVersions": ["v1"], "resources": []}],
                "failurePolicy": "Sometimes",
                "timeoutSeconds": 31,
                "admissionReviewVersions": ["v2"],
            },
            {
                "name": "guard.webhooks.example.test",
                "clientConfig": {},
                "rules": GUARDED,
                "sideEffects": "Some",
                "admissionReviewVersions": [],
                "namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]},
            },
            {
                "name": "guard.webhooks.example.test",
                "clientConfig": {"url": "https://127.0.0.1/x"},
                "rules": GUARDED,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "objectSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]},
            },
        ],
        probe=False,
    )
    exchange = await run.call(
        "webhook-config-invalid",
        "what a real server checks in a configuration: 422 Invalid, one cause per problem, in this order",
        "POST",
        VWC_PATH,
        bad,
    )
    assert exchange["response"]["status"] == 422, exchange
    await run.call(
        "webhook-config-delete",
        "deleting a configuration: a Success Status",
        "DELETE",
        run.configs.pop(),
    )


async def reviews(run: Run) -> None:
    """What a webhook receives for each operation."""
    rules = [
        {
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "apiGroups": ["example.test"],
            "apiVersions": ["v1"],
            "resources": ["widgets", "widgets/status"],
        }
    ]
    await run.register("reviews", [run.webhook("audit.webhooks.example.test", "/audit", rules)])
    created = await run.call(
        "webhook-review-create",
        "CREATE: the object after defaulting, with uid and creationTimestamp but no resourceVersion; "
        "oldObject null; CreateOptions",
        "POST",
        run.widgets,
        widget("w1", "audit"),
    )
    await run.call(
        "webhook-review-create-generate-name",
        "CREATE with generateName: the request's name is the generated one, as the object's",
        "POST",
        run.widgets,
        {**widget("", "audit"), "metadata": {"generateName": "gen-", "labels": {"hook": "audit"}}},
    )
    await run.call(
        "webhook-review-dry-run",
        "dryRun=All: the webhook is called with dryRun true and the options carry it; nothing is stored",
        "POST",
        run.widgets,
        widget("w2", "audit"),
        params={"dryRun": "All", "fieldManager": "contract"},
    )
    await run.cache_has_seen(created, run.widgets)
    updated = await run.call(
        "webhook-review-update",
        "a merge patch is an UPDATE: object and oldObject (same resourceVersion), UpdateOptions",
        "PATCH",
        f"{run.widgets}/w1",
        {"spec": {"size": 5}},
        params={"fieldManager": "contract"},
        content_type=MERGE,
    )
    await run.cache_has_seen(updated, run.widgets)
    status_updated = await run.call(
        "webhook-review-update-status",
        "the status subresource: subResource and requestSubResource are status",
        "PATCH",
        f"{run.widgets}/w1/status",
        {"status": {"phase": "Ready"}},
        content_type=MERGE,
    )
    await run.cache_has_seen(status_updated, run.widgets)
    await run.call(
        "webhook-review-delete",
        "DELETE: object null, oldObject the stored object, the request's DeleteOptions",
        "DELETE",
        f"{run.widgets}/w1",
        {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
    )


async def review_versions(run: Run) -> None:
    """admissionReviewVersions: the first version the server knows is the one sent."""
    await run.register(
        "versions",
        [run.webhook("beta.webhooks.example.test", "/beta", GUARDED, admissionReviewVersions=["v1beta1", "v1"])],
    )
    await run.call(
        "webhook-review-v1beta1",
        "admissionReviewVersions [v1beta1, v1]: an admission.k8s.io/v1beta1 AdmissionReview, same fields",
        "POST",
        run.widgets,
        widget("w1"),
    )


async def denials(run: Run) -> None:
    """allowed: false, with and without a status."""
    await run.register(
        "deny",
        [
            run.webhook(
                "conflict.webhooks.example.test",
                "/conflict",
                GUARDED,
                objectSelector=labelled("conflict"),
            ),
            run.webhook("bare.webhooks.example.test", "/bare", GUARDED, objectSelector=labelled("bare")),
            run.webhook("low.webhooks.example.test", "/low", GUARDED, objectSelector=labelled("low")),
        ],
    )
    run.hook.answer(
        "/conflict",
        deny(
            409,
            'target "t1" is held by session "s1"',
            reason="Conflict",
            details={"name": "w1", "kind": "widgets", "causes": [{"reason": "FieldValueDuplicate", "field": "spec"}]},
            warnings=["session s1 holds target t1"],
        ),
    )
    run.hook.answer("/bare", deny())
    run.hook.answer("/low", deny(200, "not now"))
    await run.call(
        "webhook-deny-conflict",
        "a denial with code 409: the code, reason and details are kept, the message is prefixed, "
        "the warnings come as Warning headers",
        "POST",
        run.widgets,
        widget("w1", "conflict"),
    )
    await run.call(
        "webhook-deny-without-status",
        "a denial without a status: 400, no reason, 'denied the request without explanation'",
        "POST",
        run.widgets,
        widget("w2", "bare"),
    )
    await run.call(
        "webhook-deny-code-below-400",
        "a denial with a code below 400: answered as 400",
        "POST",
        run.widgets,
        widget("w3", "low"),
    )


FLOOD = [f"w{i:02d} " + "y" * 296 for i in range(20)]


async def warnings(run: Run) -> None:
    """How the webhook's warnings become Warning headers."""
    await run.register(
        "warnings",
        [
            run.webhook("warn.webhooks.example.test", "/warn", GUARDED, objectSelector=labelled("warn")),
            run.webhook("flood.webhooks.example.test", "/flood", GUARDED, objectSelector=labelled("flood")),
        ],
    )
    run.hook.answer(
        "/warn",
        allow(
            [
                "plain text",
                'a "quoted" word and a \\ backslash',
                "non-ASCII: caf\u00e9 \u2713",
                "a control\tcharacter",
                "plain text",
                "",
                "z" * 300,
            ]
        ),
    )
    run.hook.answer("/flood", allow(FLOOD))
    await run.call(
        "webhook-allow-warnings",
        'allowed with warnings: each one a header 299 - "text" (quotes and backslashes escaped, UTF-8 kept); '
        "repeated and empty ones dropped, one with a control character dropped",
        "POST",
        run.widgets,
        widget("w1", "warn"),
    )
    await run.call(
        "webhook-allow-warnings-truncated",
        "more than 4096 characters of warnings: each is cut to 256 characters, and the ones past 4096 dropped",
        "POST",
        run.widgets,
        widget("w2", "flood"),
    )


async def matching(run: Run) -> None:
    """Requests the rules or selectors do not match are not sent."""
    await run.register(
        "matching",
        [run.webhook("create.webhooks.example.test", "/create", GUARDED, objectSelector=labelled("yes"))],
    )
    other = f"{run.namespace}-o"
    status, body = await run.kube.request(
        "POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": other}}
    )
    assert status == 201, body
    run.kube.created_namespaces.append(other)
    await run.call(
        "webhook-called",
        "CREATE of a widget the rules and both selectors match: sent",
        "POST",
        run.widgets,
        widget("w1", "yes"),
    )
    await run.call(
        "webhook-not-called-object-selector",
        "the objectSelector does not match: not sent",
        "POST",
        run.widgets,
        widget("w2", "no"),
    )
    await run.call(
        "webhook-not-called-operation",
        "UPDATE while the rules name CREATE only: not sent",
        "PATCH",
        f"{run.widgets}/w1",
        {"spec": {"size": 4}},
        content_type=MERGE,
    )
    await run.call(
        "webhook-not-called-delete",
        "DELETE while the rules name CREATE only: not sent",
        "DELETE",
        f"{run.widgets}/w1",
    )
    await run.call(
        "webhook-not-called-resource",
        "a resource the rules do not name (a ConfigMap with the label): not sent",
        "POST",
        f"/api/v1/namespaces/{run.namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "labels": {"hook": "yes"}}},
    )
    await run.call(
        "webhook-not-called-namespace-selector",
        "a namespace the namespaceSelector does not match: not sent",
        "POST",
        WIDGETS.format(ns=other),
        widget("w3", "yes"),
    )


async def equivalent(run: Run) -> None:
    """matchPolicy: a rule naming events.k8s.io/v1 events sees a core v1 Event create (Equivalent,
    the default), converted to events.k8s.io/v1; with Exact it does not."""
    rules = [{"operations": ["CREATE"], "apiGroups": ["events.k8s.io"], "apiVersions": ["v1"], "resources": ["events"]}]
    await run.register(
        "equivalent",
        [
            run.webhook("equivalent.webhooks.example.test", "/equivalent", rules, objectSelector=labelled("eq")),
            run.webhook(
                "exact.webhooks.example.test", "/exact", rules, matchPolicy="Exact", objectSelector=labelled("eq")
            ),
        ],
    )
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1", "labels": {"hook": "eq"}},
        "involvedObject": {"apiVersion": "example.test/v1", "kind": "Widget", "namespace": run.namespace, "name": "w1"},
        "reason": "Checked",
        "message": "a core v1 event",
        "type": "Normal",
        "source": {"component": "contract"},
    }
    await run.call(
        "webhook-equivalent-resource",
        "a core v1 Event create, rules on events.k8s.io/v1: sent to the Equivalent webhook with kind and "
        "resource events.k8s.io/v1 (requestKind, requestResource core v1) and the object converted; "
        "not sent to the Exact one",
        "POST",
        f"/api/v1/namespaces/{run.namespace}/events",
        event,
    )


def _answer_500(_request: dict[str, Any]) -> web.Response:
    return web.Response(status=500, text="boom")


def _answer_wrong_uid(_request: dict[str, Any]) -> dict[str, Any]:
    return {"uid": "00000000-0000-0000-0000-000000000000", "allowed": True}


async def failures(run: Run) -> None:
    """A webhook that cannot be called, by failurePolicy."""
    other_ca = base64.b64encode(make_certs(("127.0.0.1",)).ca_pem).decode()
    await run.register(
        "failures",
        [
            run.webhook(
                "down-ignore.webhooks.example.test",
                None,
                GUARDED,
                url=run.down_url("/down"),
                failurePolicy="Ignore",
                objectSelector=labelled("down-ignore"),
            ),
            run.webhook(
                "down-fail.webhooks.example.test",
                None,
                GUARDED,
                url=run.down_url("/down"),
                objectSelector=labelled("down-fail"),
            ),
            run.webhook(
                "slow-fail.webhooks.example.test",
                "/slow",
                GUARDED,
                timeoutSeconds=1,
                objectSelector=labelled("slow-fail"),
            ),
            run.webhook(
                "slow-ignore.webhooks.example.test",
                "/slow",
                GUARDED,
                timeoutSeconds=1,
                failurePolicy="Ignore",
                objectSelector=labelled("slow-ignore"),
            ),
            run.webhook("error.webhooks.example.test", "/error", GUARDED, objectSelector=labelled("error")),
            run.webhook("uid.webhooks.example.test", "/uid", GUARDED, objectSelector=labelled("uid")),
            {
                **run.webhook("ca.webhooks.example.test", "/ca", GUARDED, objectSelector=labelled("ca")),
                "clientConfig": {"url": run.hook.url("/ca"), "caBundle": other_ca},
            },
        ],
    )
    run.hook.answer("/slow", allow(), delay=2.0)
    run.hook.answer("/error", _answer_500)
    run.hook.answer("/uid", _answer_wrong_uid)
    cases = [
        ("down-ignore", "failurePolicy Ignore, nothing listening: the create goes through"),
        ("down-fail", "failurePolicy Fail (the default), nothing listening: 500 InternalError"),
        ("slow-fail", "timeoutSeconds 1, the webhook answers after 2 s, Fail: 500, context deadline exceeded"),
        ("slow-ignore", "timeoutSeconds 1, the webhook answers after 2 s, Ignore: the create goes through"),
        ("error", "the webhook answers HTTP 500 with a text body, Fail: 500 InternalError"),
        ("uid", "the webhook answers another request's uid, Fail: 500 InternalError"),
        ("ca", "caBundle is not the CA that signed the webhook's certificate, Fail: 500 InternalError"),
    ]
    for index, (label, note) in enumerate(cases):
        await run.call(f"webhook-{label}", note, "POST", run.widgets, widget(f"w{index}", label))


SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "configuration": configuration,
    "reviews": reviews,
    "review-versions": review_versions,
    "denials": denials,
    "warnings": warnings,
    "matching": matching,
    "equivalent": equivalent,
    "failures": failures,
}


def all_scenarios() -> dict[str, Callable[[Run], Awaitable[None]]]:
    """These validating scenarios and the mutating ones of ``mutating_scenarios.py``."""
    from mutating_scenarios import MUTATING_SCENARIOS

    return {**SCENARIOS, **MUTATING_SCENARIOS}


async def run_scenario(kube: KubeClient, scenario: str, namespace: str) -> tuple[Run, list[Exchange]]:
    """Run one scenario (of :func:`all_scenarios`) in ``namespace`` (the widgets CRD must be
    served); returns the exchanges."""
    async with WebhookServer() as hook:
        run = Run(kube, hook, namespace)
        try:
            await all_scenarios()[scenario](run)
        finally:
            await run.cleanup()
    return run, run.exchanges


# --------------------------------------------------------------------------- normalization

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_GENERATED = re.compile(r"\bgen-[a-z0-9]{5}\b")


def placeholders(value: Any, run: Run) -> Any:
    """The run's webhook port, down port and CA written as ``<port>``, ``<down-port>``, ``<caBundle>``."""
    text = json.dumps(value)
    text = text.replace(f"127.0.0.1:{run.hook.port}", "127.0.0.1:<port>")
    text = text.replace(f"127.0.0.1:{run.down_port}", "127.0.0.1:<down-port>")
    text = text.replace(run.hook.ca_bundle, "<caBundle>")
    return json.loads(text)


def scrub(value: Any) -> Any:
    """What differs between runs beyond the contract test's own normalization: uids inside
    messages, generated name suffixes, the other CA a scenario makes up."""
    if isinstance(value, dict):
        return {
            k: ("<caBundle>" if k == "caBundle" and isinstance(v, str) else scrub(v)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str):
        return _GENERATED.sub("gen-<suffix>", _UUID.sub("<uuid>", value))
    return value
