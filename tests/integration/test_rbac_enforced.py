"""The chart's RBAC, measured where it is enforced: no verb missing, none extra.

For each mode (cluster-wide; namespaced, with two watched namespaces and a separate
release namespace) the chart is rendered with that mode's values, and exactly its
ServiceAccount, (Cluster)Roles and (Cluster)RoleBindings are applied; nothing else (no
Deployment). The real ``session-operator run`` process then runs with the Deployment's own
arguments, under a token of that ServiceAccount, behind a loopback proxy that records every
request (support/recording_proxy.py), while the admin client drives it through every path
that makes a request of a kind of its own. Each recorded request is read as the API
server's authorizer reads it (support/rbac_grants.request_of) and compared with the rules:

* every request was answered without 401 or 403, and the rules allow it (no verb missing);
* every (group, resource, verb, scope) the rules grant was used in that run (none extra);
* namespaced: no request outside the granted namespaces, and a Session in a namespace
  that is not watched is never touched.

The emulator does not authorize, so this runs only with SESSION_OPERATOR_TEST_KUBECONFIG
naming a cluster whose API server enforces RBAC (checked first, as a fresh
ServiceAccount). ``pytest -s`` prints the recorded request sets of each mode.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from session_operator.model import LEGACY_FINALIZER, MANAGED_BY_LABEL, MANAGED_BY_VALUE, TARGET_ANNOTATION, claim_name
from support import sessions as s
from support.chart import only, render
from support.kubeclient import KubeClient
from support.operator_process import OperatorProcess, free_port
from support.rbac_grants import CLUSTER, Request, allows, request_of, rules, service_account, unused
from support.recording_proxy import Recorded, RecordingProxy
from support.webhook import Tls, make_tls

SESSIONS = "session-operator.io"
LEASES = "coordination.k8s.io"
RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
# What is applied of the rendered chart, and where each kind is created.
APPLIED = {
    "ServiceAccount": "/api/v1/namespaces/{namespace}/serviceaccounts",
    "Role": RBAC_API + "/namespaces/{namespace}/roles",
    "RoleBinding": RBAC_API + "/namespaces/{namespace}/rolebindings",
    "ClusterRole": RBAC_API + "/clusterroles",
    "ClusterRoleBinding": RBAC_API + "/clusterrolebindings",
}
NOT_ENFORCED = (
    "the API emulator does not authorize (every request is allowed), so RBAC can only be "
    "measured on an API server that enforces it: set SESSION_OPERATOR_TEST_KUBECONFIG to such a cluster"
)


# The authorizer's view of an HTTP request (support.rbac_grants.request_of) ----------------


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/apis/session-operator.io/v1alpha1/sessions", "limit=500",
         Request(SESSIONS, "sessions", "list", "")),
        ("GET", "/apis/session-operator.io/v1alpha1/namespaces/a/sessions", "watch=true&resourceVersion=5",
         Request(SESSIONS, "sessions", "watch", "a")),
        ("GET", "/apis/session-operator.io/v1alpha1/namespaces/a/sessions/x", "",
         Request(SESSIONS, "sessions", "get", "a", "x")),
        ("PATCH", "/apis/session-operator.io/v1alpha1/namespaces/a/sessions/x/status", "",
         Request(SESSIONS, "sessions/status", "patch", "a", "x")),
        ("DELETE", "/apis/session-operator.io/v1alpha1/namespaces/a/sessions/x", "",
         Request(SESSIONS, "sessions", "delete", "a", "x")),
        ("DELETE", "/apis/session-operator.io/v1alpha1/namespaces/a/sessions", "",
         Request(SESSIONS, "sessions", "deletecollection", "a")),
        ("POST", "/apis/coordination.k8s.io/v1/namespaces/a/leases", "", Request(LEASES, "leases", "create", "a")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l", "",
         Request(LEASES, "leases", "update", "a", "l")),
        ("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases", "fieldSelector=metadata.name%3Dl&watch=1",
         Request(LEASES, "leases", "watch", "a", "l")),
        ("GET", "/api/v1/watch/namespaces/a/events", "", Request("", "events", "watch", "a")),
        ("POST", "/api/v1/namespaces/a/events", "", Request("", "events", "create", "a")),
        ("GET", "/api/v1/namespaces/a", "", Request("", "namespaces", "get", "a", "a")),
        ("PUT", "/api/v1/namespaces/a/finalize", "", Request("", "namespaces/finalize", "update", "a", "a")),
        ("GET", "/api/v1/namespaces", "", Request("", "namespaces", "list", "")),
        ("GET", "/version", "", None),
        ("GET", "/api", "", None),
        ("GET", "/api/v1", "", None),
        ("GET", "/apis/coordination.k8s.io/v1", "", None),
        ("GET", "/openapi/v2", "", None),
    ],
)
def test_requests_are_read_as_the_authorizer_reads_them(
    method: str, path: str, query: str, expected: Request | None
) -> None:
    assert request_of(method, path, query) == expected


# The cluster: RBAC enforced, the chart's objects, tokens -------------------------------------


def direct_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """The admin kubeconfig's server and TLS trust, with ``token`` as the only credential."""
    config = yaml.safe_load(admin.read_text())
    for entry in config.get("clusters") or []:
        ca = entry["cluster"].get("certificate-authority")
        if ca and not Path(ca).is_absolute():
            entry["cluster"]["certificate-authority"] = str(admin.parent / ca)
    for entry in config.get("contexts") or []:
        entry["context"]["user"] = "token"
    config["users"] = [{"name": "token", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


async def token_for(kube: KubeClient, namespace: str, name: str) -> str:
    """A token of the ServiceAccount (TokenRequest), as the kubelet would mount one."""
    status, body = await kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )
    assert status == 201, (status, body)
    token: str = body["status"]["token"]
    return token


async def can(client: KubeClient, api_group: str, resource: str, verb: str, namespace: str, name: str = "") -> bool:
    """The API server's answer to a SelfSubjectAccessReview of ``client``'s own identity."""
    resource, _, subresource = resource.partition("/")
    attributes = {"group": api_group, "resource": resource, "subresource": subresource, "verb": verb,
                  "namespace": namespace, "name": name}
    status, body = await client.request(
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json={"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {k: v for k, v in attributes.items() if v}}},
    )
    assert status == 201, (status, body)
    return bool(body["status"].get("allowed"))


async def _why_not_enforced(admin: Path, scratch: Path) -> str | None:
    """None if a fresh ServiceAccount, bound to nothing, is refused; else why not."""
    kube = KubeClient(admin)
    try:
        namespace = await kube.create_namespace("rbac-probe")
        status, body = await kube.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts",
            json={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "probe"}},
        )
        assert status == 201, (status, body)
        probe = KubeClient(direct_kubeconfig(admin, await token_for(kube, namespace, "probe"), scratch / "probe"))
        try:
            listed, _ = await probe.request("GET", f"/api/v1/namespaces/{namespace}/secrets")
            allowed = await can(probe, "", "secrets", "list", namespace)
        finally:
            await probe.close()
    finally:
        await kube.close()
    if listed == 403 and not allowed:
        return None
    return (
        f"the API server does not enforce RBAC: a fresh ServiceAccount bound to nothing was answered "
        f"{listed} listing Secrets (SelfSubjectAccessReview allowed: {allowed})"
    )


@pytest.fixture(scope="module")
def enforcing(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    if cluster.is_emulator:
        pytest.skip(NOT_ENFORCED)
    reason = asyncio.run(_why_not_enforced(cluster.kubeconfig, tmp_path_factory.mktemp("rbac-probe")))
    if reason:
        pytest.skip(reason)


@pytest.fixture
def no_shared_operator(shared_operator: OperatorProcess) -> None:
    """The run records one operator's requests: no other may decide meanwhile."""
    if shared_operator.running():
        code = shared_operator.stop()
        assert code == 0, f"the operator exited with {code}:\n{shared_operator.logs()[-3000:]}"


async def apply_rbac(kube: KubeClient, docs: list[dict[str, Any]]) -> list[str]:
    """Create the rendered ServiceAccount and RBAC objects, nothing else; returns the paths
    of the cluster-scoped ones (the namespaced ones go with their namespaces)."""
    cluster_scoped = []
    for doc in docs:
        where = APPLIED.get(doc["kind"])
        if where is None:
            continue
        path = where.format(namespace=doc["metadata"].get("namespace", ""))
        status, body = await kube.request("POST", path, json=doc)
        assert status == 201, (doc["kind"], doc["metadata"]["name"], status, body)
        if "{namespace}" not in where:
            cluster_scoped.append(f"{path}/{doc['metadata']['name']}")
    return cluster_scoped


async def until_effective(client: KubeClient, docs: list[dict[str, Any]], denied: Request) -> None:
    """Wait until the server authorizes every rendered rule (its RBAC caches follow new
    bindings within moments), so that no early request meets a 403 that is only a delay;
    and check that ``denied`` is refused."""
    pending = rules(docs)
    for _ in range(200):
        still = []
        for rule in pending:
            grant = rule.grant
            scope = "" if grant.scope == CLUSTER else grant.scope
            if not await can(client, grant.api_group, grant.resource, grant.verb, scope, min(rule.names, default="")):
                still.append(rule)
        pending = still
        if not pending:
            break
        await asyncio.sleep(0.1)
    assert not pending, f"the server never authorized {pending}"
    refused = not await can(client, denied.api_group, denied.resource, denied.verb, denied.namespace, denied.name)
    assert refused, f"{denied} is authorized, and should not be"


def operator_args(docs: list[dict[str, Any]], identity: str, tls: Tls) -> tuple[str, ...]:
    """The rendered Deployment's arguments, as the pod would run them; the harness picks
    the metrics, health and webhook ports, and the webhook serves a certificate of its own
    (the pod's would be mounted from a Secret). The webhook makes no request, so serving it
    must add none."""
    deployment = only(docs, "Deployment")
    namespace = deployment["metadata"]["namespace"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run", args
    own = {
        "--webhook-port=": str(free_port()),
        "--webhook-cert-file=": str(tls.cert_file),
        "--webhook-key-file=": str(tls.key_file),
    }
    chosen = []
    for arg in args[1:]:
        if arg.startswith(("--metrics-port=", "--health-port=")):
            continue
        flag = next((f for f in own if arg.startswith(f)), None)
        arg = flag + own[flag] if flag else arg
        chosen.append(arg.replace("$(POD_NAMESPACE)", namespace).replace("$(POD_NAME)", identity))
    assert any(arg.startswith("--webhook-port=") for arg in chosen), "the chart serves the webhook by default"
    return tuple(chosen)


# Driving the operator through every request it makes ---------------------------------------


class Driver:
    """Drives the operator in one namespace and waits for what it does; every wait fails
    at once when the API server has refused the operator anything."""

    def __init__(self, kube: KubeClient, proxy: RecordingProxy, namespace: str) -> None:
        self.kube = kube
        self.proxy = proxy
        self.ns = namespace

    def mark(self) -> int:
        return len(self.proxy.records())

    async def until(self, check: Callable[[], Awaitable[Any]], what: str, within: float = 30.0) -> Any:
        async def step() -> Any:
            for record in self.proxy.records():
                if record.status in (401, 403):
                    request = request_of(record.method, record.path, record.query)
                    pytest.fail(f"the API server refused {request} ({record.status}): a verb missing from the chart")
            return await check()

        return await s.eventually(step, within=within, interval=0.05, what=what)

    async def phase(self, name: str, phase: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            obj = await s.get(self.kube, self.ns, name)
            return obj if s.phase(obj) == phase else None

        result: dict[str, Any] = await self.until(reached, f"{self.ns}/{name} {phase}")
        return result

    async def gone(self, name: str) -> None:
        async def check() -> bool:
            return await s.get(self.kube, self.ns, name) is None

        await self.until(check, f"{self.ns}/{name} deleted")

    async def claim_gone(self, target: str) -> None:
        async def check() -> bool:
            return await s.claim(self.kube, self.ns, target) is None

        await self.until(check, f"the claim of {self.ns}/{target} released")

    async def made(self, since: int, wanted: Request, status: int) -> Recorded:
        """A request recorded from index ``since`` on that is ``wanted`` (by name too, if
        it has one) and was answered ``status``."""

        async def found() -> Recorded | None:
            for record in self.proxy.records()[since:]:
                request = request_of(record.method, record.path, record.query)
                if (
                    request is not None
                    and request[:4] == wanted[:4]
                    and (not wanted.name or request.name == wanted.name)
                    and record.status == status
                ):
                    return record
            return None

        result: Recorded = await self.until(found, f"a request {wanted} answered {status}")
        return result

    async def create_lease(self, name: str, labels: dict[str, str], annotations: dict[str, str], holder: str) -> None:
        metadata = {"name": name, "labels": labels, "annotations": annotations}
        spec = {"holderIdentity": holder} if holder else {}
        status, body = await self.kube.request(
            "POST",
            f"/apis/coordination.k8s.io/v1/namespaces/{self.ns}/leases",
            json={"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec},
        )
        assert status == 201, (status, body)


async def drive(kube: KubeClient, proxy: RecordingProxy, ns: str) -> None:
    """Every path that makes a request of a kind of its own, in ``ns``, each checked to
    have made it. (Listing and watching, and the leader Lease, happen by themselves.)"""
    d = Driver(kube, proxy, ns)

    # A new session on a free target: the claim is created, the status written, an Event posted.
    since = d.mark()
    await s.create(kube, ns, "first", "repo/one")
    await d.phase("first", "Active")
    await d.made(since, Request(LEASES, "leases", "create", ns), 201)
    await d.made(since, Request(SESSIONS, "sessions/status", "patch", ns, "first"), 200)
    await d.made(since, Request("", "events", "create", ns), 201)

    # A Reject and a Queue: status and Events only.
    await s.create(kube, ns, "rejected", "repo/one")
    await s.create(kube, ns, "queued", "repo/one", onConflict="Queue")
    await d.phase("rejected", "Rejected")
    await d.phase("queued", "Queued")

    # A promotion: the holder completes, the claim moves to the head of the queue (update).
    since = d.mark()
    await s.patch_spec(kube, ns, "first", state="Completed")
    await d.phase("queued", "Active")
    await d.made(since, Request(LEASES, "leases", "update", ns, claim_name("repo/one")), 200)

    # A replacement: the claim moves again (update).
    since = d.mark()
    await s.create(kube, ns, "replacing", "repo/one", onConflict="Replace")
    await d.phase("replacing", "Active")
    await d.phase("queued", "Replaced")
    await d.made(since, Request(LEASES, "leases", "update", ns, claim_name("repo/one")), 200)

    # An idle abandonment with nobody waiting: the claim is released (delete).
    since = d.mark()
    await s.create(kube, ns, "idle", "repo/two", idleTimeout="2s")
    await d.phase("idle", "Abandoned")
    await d.made(since, Request(LEASES, "leases", "delete", ns, claim_name("repo/two")), 200)

    # Archived at once and deleted at once (retention): the session is deleted.
    since = d.mark()
    await s.create(kube, ns, "short-lived", "repo/three", state="Completed", archiveAfter="0s", deleteAfter="0s")
    await d.gone("short-lived")
    await d.made(since, Request(SESSIONS, "sessions", "delete", ns, "short-lived"), 200)

    # A session carrying the finalizer of earlier versions: it is taken off (patch).
    since = d.mark()
    legacy = s.body("legacy", "repo/four")
    legacy["metadata"]["finalizers"] = [LEGACY_FINALIZER]
    status, body = await kube.request("POST", s.sessions_path(ns), json=legacy)
    assert status == 201, (status, body)

    async def finalizer_dropped() -> bool:
        obj = await s.get(kube, ns, "legacy")
        return obj is not None and not obj["metadata"].get("finalizers") and s.phase(obj) == "Active"

    await d.until(finalizer_dropped, "the legacy finalizer dropped")
    await d.made(since, Request(SESSIONS, "sessions", "patch", ns, "legacy"), 200)

    # A claim naming a holder the cache has never seen: the operator reads that session
    # (get; there is none) before it releases the claim as abandoned (delete).
    since = d.mark()
    await d.create_lease(
        claim_name("repo/five"), {MANAGED_BY_LABEL: MANAGED_BY_VALUE}, {TARGET_ANNOTATION: "repo/five"}, "ghost"
    )
    await d.claim_gone("repo/five")
    await d.made(since, Request(SESSIONS, "sessions", "get", ns, "ghost"), 404)
    await d.made(since, Request(LEASES, "leases", "delete", ns, claim_name("repo/five")), 200)

    # A lost claim race: a Lease of the claim's name that the claim watch does not select
    # (no label) makes the operator's create fail with 409; it reads the claim (get) and
    # takes it over with a conditional update.
    since = d.mark()
    await d.create_lease(claim_name("repo/six"), {}, {}, "")
    await s.create(kube, ns, "racer", "repo/six")
    await d.phase("racer", "Active")
    await d.made(since, Request(LEASES, "leases", "create", ns), 409)
    await d.made(since, Request(LEASES, "leases", "get", ns, claim_name("repo/six")), 200)
    await d.made(since, Request(LEASES, "leases", "update", ns, claim_name("repo/six")), 200)


# What was recorded, against what is granted --------------------------------------------------


def describe(mode: str, docs: list[dict[str, Any]], records: list[Recorded], names: dict[str, str]) -> str:
    """The recorded request set and the granted set, one line per (group, resource, verb,
    scope), with namespaces by role (release, watched-1, ...) and "*" for all namespaces."""

    def scope(namespace: str) -> str:
        return names.get(namespace, f"other:{namespace}")

    used: dict[tuple[str, str, str, str], Counter[int]] = defaultdict(Counter)
    discovery: Counter[str] = Counter()
    agents: Counter[str] = Counter()
    for record in records:
        agents[record.user_agent.split(" ")[0]] += 1
        request = request_of(record.method, record.path, record.query)
        if request is None:
            discovery[f"{record.method} {record.path} -> {record.status}"] += 1
            continue
        key = (request.api_group or "core", request.resource, request.verb, scope(request.namespace))
        used[key][record.status] += 1
    lines = [
        f"== {mode}: {len(records)} requests recorded, by {dict(agents)}",
        "used (group resource verb scope: answers):",
    ]
    for key in sorted(used):
        answers = ", ".join(f"{status} x{count}" for status, count in sorted(used[key].items()))
        lines.append(f"  {' '.join(key)}: {answers}")
    lines.append("granted (group resource verb scope [names]):")
    granted = []
    for rule in rules(docs):
        grant = rule.grant
        where = "*" if grant.scope == CLUSTER else scope(grant.scope)
        limit = f" [{', '.join(sorted(rule.names))}]" if rule.names else ""
        granted.append(f"  {grant.api_group or 'core'} {grant.resource} {grant.verb} {where}{limit}")
    lines.extend(sorted(granted))
    if discovery:
        lines.append("non-resource (granted to every authenticated user):")
        lines.extend(f"  {line} x{count}" for line, count in sorted(discovery.items()))
    return "\n".join(lines)


# The run -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
async def test_the_rules_are_exactly_the_requests(
    mode: str,
    enforcing: None,
    session_crd: Path,
    no_shared_operator: None,
    cluster: Any,
    kube: KubeClient,
    tmp_path: Path,
) -> None:
    namespaced = mode == "namespaced"
    release_ns = await kube.create_namespace("rbac-release")
    watched = [await kube.create_namespace("rbac-watched") for _ in range(2 if namespaced else 1)]
    unwatched = await kube.create_namespace("rbac-unwatched") if namespaced else None
    names = {release_ns: "release", "": "*", **{ns: f"watched-{i}" for i, ns in enumerate(watched, 1)}}
    if unwatched:
        names[unwatched] = "unwatched"
    values = {"watchNamespaces": watched} if namespaced else {}
    # A release name of its own: a ClusterRole's name is cluster-wide.
    docs = render(values, release=f"rbac-{secrets.token_hex(4)}", namespace=release_ns)
    identity = f"rbac-{mode}"

    cluster_scoped = await apply_rbac(kube, docs)
    try:
        sa_namespace, sa_name = service_account(docs)
        token = await token_for(kube, sa_namespace, sa_name)
        as_operator = KubeClient(direct_kubeconfig(cluster.kubeconfig, token, tmp_path / "direct.kubeconfig"))
        try:
            await until_effective(as_operator, docs, Request(SESSIONS, "sessions", "create", watched[0]))
        finally:
            await as_operator.close()
        if unwatched:
            outsider = await s.create(kube, unwatched, "outsider", "repo/one")

        proxy = RecordingProxy(cluster.kubeconfig).start()
        kubeconfig = proxy.write_kubeconfig(tmp_path / "operator.kubeconfig", token)
        process = OperatorProcess(
            kubeconfig, tmp_path, name=identity, args=operator_args(docs, identity, make_tls(tmp_path / "tls")),
            leader_elect=None,
        )
        try:
            await asyncio.to_thread(process.start)
            await asyncio.gather(*(drive(kube, proxy, ns) for ns in watched))
        finally:
            code = await asyncio.to_thread(process.stop)
            proxy.stop()
            records = proxy.records()
            report = describe(mode, docs, records, names)
            print(report)  # shown with -s, and with any failure
        assert code == 0, f"the operator exited with {code}:\n{process.logs()[-3000:]}"
    finally:
        for path in cluster_scoped:
            await kube.request("DELETE", path)
    requests = [r for r in (request_of(x.method, x.path, x.query) for x in records) if r is not None]

    refused = [r for r in records if r.status in (401, 403)]
    assert not refused, f"the API server refused {refused}: a verb missing from the chart\n{report}"
    not_granted = [r for r in requests if not allows(docs, *r[:4], name=r.name)]
    assert not not_granted, f"the rendered rules do not allow {not_granted}\n{report}"
    extra = unused(docs, requests)
    assert not extra, f"granted and never used (none extra): {sorted(extra)}\n{report}"
    assert all(r.authorized for r in records), "a request went without the ServiceAccount's token"

    if namespaced:
        assert unwatched is not None
        outside = sorted({r.namespace for r in requests} - {release_ns, *watched})
        assert not outside, f"requests outside the granted namespaces ({outside}, '' is cluster scope)\n{report}"
        after = await s.get(kube, unwatched, "outsider")
        assert after is not None and not after.get("status")
        assert after["metadata"]["resourceVersion"] == outsider["metadata"]["resourceVersion"]
        assert await s.claim(kube, unwatched, "repo/one") is None
