"""Every API path the operator and its plugin request, built in one place (pure).

A namespace of ``None`` means every namespace (a cluster-wide list or watch).
"""

from __future__ import annotations

from urllib.parse import quote

from .model import GROUP, PLURAL, VERSION

POLICY_PLURAL = "sessionpolicies"
LEASES_API = "/apis/coordination.k8s.io/v1"
SESSIONS_API = f"/apis/{GROUP}/{VERSION}"


def _scoped(api: str, namespace: str | None, plural: str, name: str = "", subresource: str = "") -> str:
    path = f"{api}/namespaces/{namespace}/{plural}" if namespace else f"{api}/{plural}"
    if name:
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def sessions(namespace: str | None = None, name: str = "", subresource: str = "") -> str:
    return _scoped(SESSIONS_API, namespace, PLURAL, name, subresource)


def leases(namespace: str | None = None, name: str = "") -> str:
    return _scoped(LEASES_API, namespace, "leases", name)


def session_policies(name: str = "") -> str:
    return _scoped(SESSIONS_API, None, POLICY_PLURAL, name)


def local_subject_access_reviews(namespace: str) -> str:
    return _scoped("/apis/authorization.k8s.io/v1", namespace, "localsubjectaccessreviews")


def events(namespace: str) -> str:
    return _scoped("/api/v1", namespace, "events")
