"""Render the Helm chart in-process with Helm's own library (``helm-python-sdk``).

No ``helm`` binary and no cluster: ``helm_python`` binds Helm's Go SDK, so rendering,
schema validation and lint are Helm's, not an imitation of them.

    docs = render({"watchNamespaces": ["team-a"]})      # parsed objects, NOTES excluded
    deployment = only(docs, "Deployment")
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "session-operator"
RELEASE = "session-operator"
NAMESPACE = "session-operator"
NOTES = "session-operator/templates/NOTES.txt"

# The configurations the chart is tested in. Every rendered object of each is validated.
MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "cluster-wide": {"watchNamespaces": [], "rbac": {"create": True}, "replicaCount": 3},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True},
            "dashboard": {"enabled": True},
        }
    },
}


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def chart() -> helm.Chart:
    """The loaded chart (shared; charts are immutable)."""
    return _chart()


@functools.cache
def _render_files(values_json: str, release: str, namespace: str) -> dict[str, str]:
    values = json.loads(values_json)
    return chart().render(values, name=release, namespace=namespace, is_install=True)


def render_files(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would produce (NOTES.txt included)."""
    return dict(_render_files(json.dumps(values or {}, sort_keys=True), release, namespace))


def render(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (fresh copies, safe to modify), in template order."""
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render_files(values, release=release, namespace=namespace).items()):
        if path == NOTES or not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(copy.deepcopy(doc))
    return docs


def notes(values: dict[str, Any] | None = None, **kwargs: str) -> str:
    return render_files(values, **kwargs)[NOTES]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def of_component(docs: list[dict[str, Any]], kind: str, component: str) -> list[dict[str, Any]]:
    """Objects of ``kind`` labelled ``app.kubernetes.io/component: component`` (the metrics
    Service and the webhook Service are both Services)."""
    return [
        doc for doc in of_kind(docs, kind)
        if (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == component
    ]


def container_user_id() -> int:
    """The user id the chart runs the operator as by default."""
    with (CHART_DIR / "values.yaml").open(encoding="utf-8") as f:
        return int(yaml.safe_load(f)["podSecurityContext"]["runAsUser"])


def chart_metadata() -> dict[str, Any]:
    with (CHART_DIR / "Chart.yaml").open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def min_kube_version() -> tuple[int, int]:
    """The lower bound of Chart.yaml's kubeVersion (">=1.27.0-0" -> (1, 27))."""
    match = re.fullmatch(r">=\s*v?(\d+)\.(\d+)(?:\.\d+)?(?:-0)?", chart_metadata()["kubeVersion"].strip())
    assert match, "kubeVersion must be a plain lower bound, >=X.Y.Z-0"
    return int(match.group(1)), int(match.group(2))
