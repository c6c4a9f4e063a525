"""Facts about the API server under test, and fixtures that depend on its version."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from support.kubeclient import KubeClient

# CEL rules that use oldSelf (transition rules) compile from Kubernetes 1.25 on; a v1.24
# server refuses a CRD that has them, so there they are stripped for the tests.
TRANSITION_RULES_SINCE = 25


def server_minor(kubeconfig: Path) -> int:
    """The API server's minor version, from /version (e.g. 24 for v1.24.0-alpha.1)."""

    async def read() -> int:
        client = KubeClient(kubeconfig)
        try:
            _, version = await client.request("GET", "/version")
        finally:
            await client.close()
        return int("".join(ch for ch in str(version.get("minor", "0")) if ch.isdigit()) or 0)

    return asyncio.run(read())


def without_transition_rules(crd: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``crd`` without the CEL rules that use oldSelf, for servers before 1.25."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            rules = node.get("x-kubernetes-validations")
            node = {k: strip(v) for k, v in node.items() if k != "x-kubernetes-validations"}
            kept = [rule for rule in rules or () if "oldSelf" not in rule.get("rule", "")]
            if kept:
                node["x-kubernetes-validations"] = kept
            return node
        if isinstance(node, list):
            return [strip(item) for item in node]
        return node

    stripped: dict[str, Any] = strip(copy.deepcopy(crd))
    return stripped
