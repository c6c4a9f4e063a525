"""The chart renders, lints and validates, without a helm binary or a cluster.

Rendering and lint are Helm's own (helm-python-sdk binds Helm's Go SDK); every rendered
object is validated in strict mode (unknown fields are errors) against the OpenAPI
schemas of each Kubernetes release the chart claims in Chart.yaml's kubeVersion, as
shipped by kubernetes-validate.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions

from session_operator.__main__ import build_parser, load_settings
from support import chart
from support.chart import CHART_DIR, MODES, NAMESPACE, RELEASE, of_kind, only, render

# Kinds of the Prometheus Operator and of cert-manager (their own CRDs): kubernetes-validate
# has no schema for them; test_monitoring.py and test_chart_webhook.py check their shape.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "Issuer", "Certificate"}


def claimed_versions() -> list[str]:
    """Every minor release kubernetes-validate knows from the chart's kubeVersion on."""
    low = chart.min_kube_version()
    versions = [v for v in all_versions() if tuple(int(p) for p in v.split(".")[:2]) >= low]
    assert versions, "kubernetes-validate has no schema for the claimed releases"
    return versions


def test_claimed_range_is_realistic() -> None:
    versions = claimed_versions()
    assert versions[0].startswith("1.27"), versions
    assert len(versions) >= 8, versions  # 1.27 up to the newest schema shipped


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("version", claimed_versions())
def test_every_object_validates_strictly(mode: str, version: str) -> None:
    docs = render(MODES[mode])
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{mode}: {name} is invalid for Kubernetes {version}: {path}: {e.message}")


@pytest.mark.parametrize("mode", MODES)
def test_lint_is_clean_in_strict_mode(mode: str) -> None:
    low = ".".join(str(p) for p in chart.min_kube_version())
    report = helm.lint(CHART_DIR, MODES[mode], strict=True, namespace=NAMESPACE, kube_version=f"v{low}.0")
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert problems == [], problems
    assert report["total_charts_linted"] == 1


def test_chart_metadata() -> None:
    meta = chart.chart_metadata()
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "session-operator"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    with (CHART_DIR.parents[1] / "pyproject.toml").open(encoding="utf-8") as f:
        project_version = re.search(r'^version = "([^"]+)"', f.read(), re.M)
    assert project_version and meta["appVersion"] == project_version.group(1)


def test_helm_installs_the_same_crds() -> None:
    """Helm installs crds/ before the templates (and never upgrades or deletes them)."""
    crds = {crd["filename"]: crd["data"] for crd in chart.chart().crds}
    sources = sorted((CHART_DIR.parents[1] / "crds").glob("*.yaml"))
    assert sorted(crds) == [f"session-operator/crds/{source.name}" for source in sources]
    for source in sources:
        assert crds[f"session-operator/crds/{source.name}"] == source.read_text(encoding="utf-8")


def test_strict_validation_refuses_unknown_fields() -> None:
    """The validator itself: a typo in a rendered object must not pass."""
    deployment = only(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, claimed_versions()[0], strict=True)


def test_kinds_per_mode() -> None:
    def kinds(values: dict[str, Any]) -> list[str]:
        return sorted(doc["kind"] for doc in render(values))

    webhook = ["Service", "Secret", "ValidatingWebhookConfiguration"]
    assert kinds(MODES["default"]) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "PodDisruptionBudget",
         *webhook]
    )
    assert kinds(MODES["namespaced"]) == sorted(
        ["ServiceAccount", "Deployment", "Service", "PodDisruptionBudget"] + ["Role", "RoleBinding"] * 3 + webhook
    )
    assert kinds(MODES["cert-manager"]) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "PodDisruptionBudget",
         "Service", "Issuer", "Certificate", "ValidatingWebhookConfiguration"]
    )
    assert set(kinds(MODES["monitoring"])) >= {"ServiceMonitor", "PrometheusRule", "ConfigMap"}


def test_namespaced_objects_are_in_the_release_namespace() -> None:
    for doc in render(MODES["monitoring"], release="ops", namespace="platform"):
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration"):
            assert "namespace" not in doc["metadata"]
        else:
            assert doc["metadata"]["namespace"] == "platform", doc["kind"]


# The Deployment ------------------------------------------------------------------------


def pod_spec(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return only(render(values), "Deployment")["spec"]["template"]["spec"]


def container(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (c,) = pod_spec(values)["containers"]
    return c


def test_two_replicas_with_leader_election() -> None:
    deployment = only(render(), "Deployment")
    assert deployment["spec"]["replicas"] == 2
    args = container()["args"]
    assert args[0] == "run"
    assert "--leader-elect" in args
    assert "--identity=$(POD_NAME)" in args


def test_probes_match_what_the_operator_means() -> None:
    c = container()
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"metrics": 8080, "health": 8081, "webhook": 9443}


def test_restricted_pod_security() -> None:
    """The restricted Pod Security Standard, field by field, plus a read-only root."""
    spec = pod_spec()
    c = container()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(forbidden)
    assert all("hostPath" not in v for v in spec["volumes"])
    assert {v["name"]: v for v in spec["volumes"]}["tmp"]["emptyDir"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_resources_have_requests_and_limits() -> None:
    resources = container()["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_topology_spread_selects_this_release() -> None:
    spread = pod_spec()["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    selector = only(render(), "Deployment")["spec"]["selector"]["matchLabels"]
    for constraint in spread:
        assert constraint["labelSelector"] == {"matchLabels": selector}
    own = [{"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"custom": "yes"}}}]
    assert pod_spec({"topologySpreadConstraints": own})["topologySpreadConstraints"] == own


def test_image_reference() -> None:
    assert container()["image"] == "session-operator:0.1.0"
    assert container({"image": {"repository": "registry.example/so", "tag": "1.2.3"}})["image"] == (
        "registry.example/so:1.2.3"
    )
    digest = "sha256:" + "a" * 64
    assert container({"image": {"repository": "r/so", "digest": digest}})["image"] == f"r/so@{digest}"


def _settings_of(values: dict[str, Any], namespace: str = NAMESPACE) -> Any:
    """Parse the rendered args exactly as the operator would, with the downward API filled in."""
    c = container(values)
    env = {"POD_NAME": "session-operator-abc-123", "POD_NAMESPACE": namespace}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "run"
    return load_settings(parsed, environ={})


def test_rendered_arguments_are_accepted_by_the_operator() -> None:
    settings = _settings_of({})
    assert settings.namespaces == []
    assert settings.leader_elect is True
    assert settings.leader_election_namespace == NAMESPACE
    assert settings.leader_election_lease_name == "session-operator-leader"
    assert settings.identity == "session-operator-abc-123"
    assert (settings.metrics_port, settings.health_port) == (8080, 8081)
    assert settings.log_format == "json"
    assert settings.default_archive_after == "168h"
    assert settings.default_delete_after == ""

    settings = _settings_of(
        {
            "watchNamespaces": ["team-a", "team-b"],
            "operator": {"defaultDeleteAfter": "720h", "logFormat": "text", "workers": 4},
        }
    )
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.default_delete_after == "720h"
    assert (settings.log_format, settings.workers) == ("text", 4)


def test_unset_tuning_values_leave_the_operators_defaults() -> None:
    """workers and deleteBatchSize default to null: no flag, so the operator's default holds."""
    args = container()["args"]
    assert not [a for a in args if a.startswith(("--workers", "--delete-batch-size"))]
    args = container({"operator": {"workers": 32, "deleteBatchSize": 10}})["args"]
    assert {"--workers=32", "--delete-batch-size=10"} <= set(args)


def test_without_leader_election() -> None:
    settings = _settings_of({"replicaCount": 1, "operator": {"leaderElection": {"enabled": False}}})
    assert settings.leader_elect is False


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"operator": {"leaderElection": {"enabled": False}}}, "needs replicaCount: 1"),
        ({"operator": {"leaderElection": {"renewDeadline": 20}}}, "renewDeadline must be shorter"),
        ({"operator": {"metricsPort": 9000, "healthPort": 9000}}, "must differ"),
        ({"webhook": {"port": 8081}}, "webhook.port must differ"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        ({"monitoring": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, "needs monitoring"),
    ],
)
def test_settings_that_cannot_work_fail_the_render(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(complaint)):
        chart.chart().render(values, name=RELEASE, namespace=NAMESPACE)


def test_existing_service_account() -> None:
    docs = render({"serviceAccount": {"create": False, "name": "shared"}})
    assert of_kind(docs, "ServiceAccount") == []
    assert only(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "shared"
    assert only(docs, "ClusterRoleBinding")["subjects"][0]["name"] == "shared"


def test_no_rbac() -> None:
    docs = render({"rbac": {"create": False}})
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")]


def test_notes_say_how_to_check_the_install() -> None:
    text = chart.notes()
    assert "--for=jsonpath='{.status.readyReplicas}'=1" in text
    assert "get lease session-operator-leader" in text
    assert "--for=condition=Ready" in text
    assert "every namespace" in text
    namespaced = chart.notes({"watchNamespaces": ["team-a", "team-b"]})
    assert "team-a, team-b" in namespaced
    assert "kubectl -n team-a apply" in namespaced
    assert "WARNING" in chart.notes({"podDisruptionBudget": {"minAvailable": 1}})
    assert "WARNING" not in text
