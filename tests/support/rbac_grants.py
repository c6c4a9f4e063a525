"""What a rendered chart lets the operator's ServiceAccount do, as a set of grants.

A grant is ``(api_group, resource, verb, scope)``: scope is a namespace, or ``CLUSTER``
for a ClusterRole bound by a ClusterRoleBinding (which covers every namespace and the
cluster-scoped objects). Subresources are resources of their own (``sessions/status``).

    docs = support.chart.render({"watchNamespaces": ["team-a"]})
    grants(docs)                       # {Grant("session-operator.io", "sessions", "get", "team-a"), ...}
    allows(docs, "coordination.k8s.io", "leases", "update", "session-operator", name="session-operator-leader")

This is what a run against a real API server compares with the requests it records
(tests/support/recording_proxy.py, read with ``request_of()``): every recorded request must
be ``allows()``-ed, and every grant should be used by some request (``unused()``), which
is least privilege.

    request_of("GET", "/apis/coordination.k8s.io/v1/namespaces/a/leases", "watch=true")
    # Request("coordination.k8s.io", "leases", "watch", "a")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import parse_qs

CLUSTER = "*"


class Grant(NamedTuple):
    api_group: str
    resource: str
    verb: str
    scope: str  # a namespace, or CLUSTER


@dataclass(frozen=True)
class Rule:
    """One grant with the object names it is limited to (empty: any name)."""

    grant: Grant
    names: frozenset[str] = field(default_factory=frozenset)


class Request(NamedTuple):
    """One API request as an authorizer sees it (namespace "" for cluster-scoped objects)."""

    api_group: str
    resource: str
    verb: str
    namespace: str
    name: str = ""


def service_account(docs: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """(namespace, name) of the operator's ServiceAccount, read from its Deployment."""
    for doc in docs:
        if doc.get("kind") == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            return doc["metadata"]["namespace"], pod["serviceAccountName"]
    raise ValueError("no Deployment in the rendered chart")


def rules(docs: Iterable[Mapping[str, Any]], subject: tuple[str, str] | None = None) -> list[Rule]:
    """Every (grant, names) the bindings in ``docs`` give to ``subject`` (default: the operator)."""
    docs = list(docs)
    namespace, name = subject or service_account(docs)
    roles: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for doc in docs:
        if doc.get("kind") == "Role":
            roles[("Role", f"{doc['metadata']['namespace']}/{doc['metadata']['name']}")] = doc.get("rules") or []
        elif doc.get("kind") == "ClusterRole":
            roles[("ClusterRole", doc["metadata"]["name"])] = doc.get("rules") or []
    found: list[Rule] = []
    for doc in docs:
        kind = doc.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(
            s.get("kind") == "ServiceAccount" and s.get("name") == name and s.get("namespace") == namespace
            for s in doc.get("subjects") or []
        ):
            continue
        ref = doc["roleRef"]
        if kind == "ClusterRoleBinding":
            scope, key = CLUSTER, ("ClusterRole", ref["name"])
        else:
            scope = doc["metadata"]["namespace"]
            key = (
                ("Role", f"{scope}/{ref['name']}") if ref["kind"] == "Role" else ("ClusterRole", ref["name"])
            )
        if key not in roles:
            raise ValueError(f"{kind} {doc['metadata']['name']} refers to {key}, which the chart does not render")
        for rule in roles[key]:
            names = frozenset(rule.get("resourceNames") or ())
            for group in rule.get("apiGroups") or ():
                for resource in rule.get("resources") or ():
                    for verb in rule.get("verbs") or ():
                        found.append(Rule(Grant(group, resource, verb, scope), names))
    return found


def grants(docs: Iterable[Mapping[str, Any]], subject: tuple[str, str] | None = None) -> set[Grant]:
    """The set of (api_group, resource, verb, namespace-or-CLUSTER) granted, name limits aside."""
    return {rule.grant for rule in rules(docs, subject)}


def name_limits(docs: Iterable[Mapping[str, Any]], subject: tuple[str, str] | None = None) -> dict[Grant, set[str]]:
    """Grants given only for some object names (resourceNames), with those names."""
    limited: dict[Grant, set[str]] = {}
    unlimited: set[Grant] = set()
    for rule in rules(docs, subject):
        if rule.names:
            limited.setdefault(rule.grant, set()).update(rule.names)
        else:
            unlimited.add(rule.grant)
    return {grant: names for grant, names in limited.items() if grant not in unlimited}


def _matches(rule: Rule, request: Request) -> bool:
    grant = rule.grant
    if (grant.api_group, grant.resource, grant.verb) != (request.api_group, request.resource, request.verb):
        return False
    if grant.scope != CLUSTER and grant.scope != request.namespace:
        return False
    return not rule.names or request.name in rule.names


def allows(
    docs: Iterable[Mapping[str, Any]],
    api_group: str,
    resource: str,
    verb: str,
    namespace: str,
    *,
    name: str = "",
    subject: tuple[str, str] | None = None,
) -> bool:
    """Would the API server authorize this request of the operator's ServiceAccount?"""
    request = Request(api_group, resource, verb, namespace, name)
    return any(_matches(rule, request) for rule in rules(docs, subject))


def unused(
    docs: Iterable[Mapping[str, Any]], requests: Iterable[Request], subject: tuple[str, str] | None = None
) -> set[Grant]:
    """Grants that no request in ``requests`` needed: candidates to remove."""
    requests = list(requests)
    return {
        rule.grant for rule in rules(docs, subject) if not any(_matches(rule, request) for request in requests)
    }


# Method -> verb, before a GET without a name becomes list or watch and a DELETE without
# one deletecollection.
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# Subresources of a namespace itself (/api/v1/namespaces/NAME/status), not resources in it.
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


def request_of(method: str, path: str, query: str = "") -> Request | None:
    """The request as the API server's authorizer sees one HTTP request; ``None`` for a
    non-resource URL (``/api``, ``/apis/GROUP/VERSION``, ``/version``, ``/healthz``,
    ``/openapi/...``: discovery that RBAC grants every authenticated user).

    Derived as kube-apiserver's RequestInfoFactory does it: GET on a collection is list,
    or watch with ``watch=true``; GET on a name is get; POST create, PUT update, PATCH
    patch; DELETE on a name delete, on a collection deletecollection; a subresource is
    ``resource/subresource``; ``fieldSelector=metadata.name=X`` names the object of a
    list or watch.
    """
    parts = [part for part in path.split("/") if part]
    if len(parts) < 3 or parts[0] not in ("api", "apis") or (parts[0] == "apis" and len(parts) < 4):
        return None
    api_group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    verb = _VERBS.get(method.upper(), method.lower())
    if len(rest) >= 2 and rest[0] == "watch":  # the deprecated /watch/ prefix
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    options = parse_qs(query)
    if not name and verb == "get":
        verb = "watch" if (options.get("watch") or [""])[-1].lower() in ("true", "1") else "list"
        for selector in options.get("fieldSelector") or ():
            for term in selector.split(","):
                key, _, value = term.partition("=")
                if key == "metadata.name" and value.lstrip("="):
                    name = value.lstrip("=")
    elif not name and verb == "delete":
        verb = "deletecollection"
    return Request(api_group, resource, verb, namespace, name)
