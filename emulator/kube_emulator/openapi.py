"""A minimal ``/openapi/v3`` so kubectl (>= 1.27) sees server-side field validation.

kubectl decides between server-side ``fieldValidation`` and client-side schema
validation by looking, in the group-version's OpenAPI v3 document, for a PATCH
operation tagged with the object's group/version/kind that takes a
``fieldValidation`` query parameter. These documents carry just that (plus the
custom resources' schemas under ``components``); ``/openapi/v2`` stays 404.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import ResourceType

_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation")
]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(rt: ResourceType, version: str) -> str:
    reversed_group = ".".join(reversed(rt.group.split("."))) if rt.group else "io.k8s.api.core"
    return f"{reversed_group}.{version}.{rt.kind}"


def gv_document(group: str, version: str, types: list[ResourceType]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        gvk = {"group": rt.group, "version": version, "kind": rt.kind}
        base = f"/{_gv_path(group, version)}"
        collection = f"{base}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{base}/{rt.plural}"
        operation = {"x-kubernetes-group-version-kind": gvk, "parameters": list(_PARAMS)}
        paths[collection] = {"post": dict(operation, **{"x-kubernetes-action": "post"})}
        paths[f"{collection}/{{name}}"] = {
            "put": dict(operation, **{"x-kubernetes-action": "put"}),
            "patch": dict(operation, **{"x-kubernetes-action": "patch"}),
        }
        info = rt.versions.get(version)
        schema: dict[str, Any] = {"type": "object"}
        if info is not None and info.schema is not None:
            schema = dict(info.schema.raw)
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[_schema_name(rt, version)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.24.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def root_document(group_versions: dict[str, list[str]], docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    paths = {}
    for path, doc in docs.items():
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    _ = group_versions
    return {"paths": paths}


def all_documents(api: Any) -> dict[str, dict[str, Any]]:
    docs = {}
    for group, versions in api.group_versions().items():
        for version in versions:
            docs[_gv_path(group, version)] = gv_document(group, version, api.resources_in(group, version))
    return docs
