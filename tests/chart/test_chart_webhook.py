"""The chart's admission webhook: its Service, its registration, and its certificate, made by
the chart (the default) or by cert-manager. Every object is also validated strictly with the
other modes in test_render.py (cert-manager's own kinds are checked here)."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from session_operator.__main__ import build_parser, load_settings
from session_operator.kopf_adapter import WEBHOOK_PATH
from support.chart import MODES, NAMESPACE, of_component, of_kind, only, render

SERVICE = "session-operator-webhook"
WEBHOOK_KINDS = {"Secret", "ValidatingWebhookConfiguration", "Issuer", "Certificate"}


def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return only(docs, "Deployment")["spec"]["template"]


def the_webhook(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (webhook,) = only(docs, "ValidatingWebhookConfiguration")["webhooks"]
    return webhook


def mounted_secret(docs: list[dict[str, Any]]) -> str:
    spec = pod(docs)["spec"]
    (mount,) = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "webhook-tls"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == "webhook-tls"]
    return str(volume["secret"]["secretName"])


def settings_of(docs: list[dict[str, Any]]) -> Any:
    args = [a.replace("$(POD_NAME)", "p").replace("$(POD_NAMESPACE)", NAMESPACE)
            for a in pod(docs)["spec"]["containers"][0]["args"]]
    return load_settings(build_parser().parse_args(args), environ={})


def test_every_replica_answers_through_the_webhook_service() -> None:
    docs = render()
    (service,) = of_component(docs, "Service", "webhook")
    assert service["metadata"]["name"] == SERVICE
    assert service["spec"]["publishNotReadyAddresses"] is True  # standbys answer too
    template = pod(docs)
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (443, "webhook")
    ports = {p["name"]: p["containerPort"] for p in template["spec"]["containers"][0]["ports"]}
    settings = settings_of(docs)
    assert settings.webhook_port == ports["webhook"] == 9443
    mount = next(m for m in template["spec"]["containers"][0]["volumeMounts"] if m["name"] == "webhook-tls")
    assert settings.webhook_cert_file == mount["mountPath"] + "/tls.crt"
    assert settings.webhook_key_file == mount["mountPath"] + "/tls.key"


def test_the_registration_is_advisory_and_for_the_create_of_sessions() -> None:
    docs = render({"webhook": {"timeoutSeconds": 3}})
    webhook = the_webhook(docs)
    assert webhook["name"] == "sessions.session-operator.io"
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] == 3
    assert webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["rules"] == [{
        "apiGroups": ["session-operator.io"], "apiVersions": ["v1alpha1"], "resources": ["sessions"],
        "operations": ["CREATE"], "scope": "Namespaced",
    }]
    assert webhook["clientConfig"]["service"] == {
        "name": SERVICE, "namespace": NAMESPACE, "path": WEBHOOK_PATH, "port": 443,
    }
    assert the_webhook(render())["timeoutSeconds"] == 5


def test_the_namespaces_follow_the_rbac_mode() -> None:
    assert "namespaceSelector" not in the_webhook(render(MODES["default"]))  # every namespace, as the ClusterRole
    selector = the_webhook(render(MODES["namespaced"]))["namespaceSelector"]
    assert selector == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["team-a", "team-b"]},
    ]}


def certificate(pem_b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(pem_b64))


def test_the_chart_makes_a_ca_and_a_certificate_the_api_server_trusts() -> None:
    docs = render()
    (secret,) = of_kind(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert mounted_secret(docs) == secret["metadata"]["name"] == "session-operator-webhook-tls"
    data = secret["data"]
    assert the_webhook(docs)["clientConfig"]["caBundle"] == data["ca.crt"]
    ca, cert = certificate(data["ca.crt"]), certificate(data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{SERVICE}.{NAMESPACE}.svc" in names  # what the API server dials
    key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(lifetime - datetime.timedelta(days=3650)) < datetime.timedelta(days=2)
    short = certificate(of_kind(render({"webhook": {"certificateValidityDays": 30}}), "Secret")[0]["data"]["tls.crt"])
    assert short.not_valid_after_utc - short.not_valid_before_utc < datetime.timedelta(days=31)


def test_cert_manager_issues_the_certificate_and_injects_the_ca() -> None:
    docs = render(MODES["cert-manager"])
    assert of_kind(docs, "Secret") == []
    cert = only(docs, "Certificate")
    issuer = only(docs, "Issuer")
    assert cert["apiVersion"] == issuer["apiVersion"] == "cert-manager.io/v1"
    assert issuer["spec"] == {"selfSigned": {}}
    assert cert["spec"]["issuerRef"] == {
        "name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io",
    }
    assert cert["spec"]["secretName"] == mounted_secret(docs)
    assert f"{SERVICE}.{NAMESPACE}.svc" in cert["spec"]["dnsNames"]
    configuration = only(docs, "ValidatingWebhookConfiguration")
    assert configuration["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": f"{NAMESPACE}/{cert['metadata']['name']}",
    }
    assert "caBundle" not in the_webhook(docs)["clientConfig"]  # the CA injector fills it


def test_cert_manager_with_an_issuer_of_your_own() -> None:
    ref = {"name": "corporate-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    docs = render({"webhook": {"certManager": {"enabled": True, "issuerRef": ref}}})
    assert of_kind(docs, "Issuer") == []
    assert only(docs, "Certificate")["spec"]["issuerRef"] == ref


def test_without_the_webhook_nothing_of_it_is_rendered() -> None:
    docs = render({"webhook": {"enabled": False}})
    assert not [d for d in docs if d["kind"] in WEBHOOK_KINDS]
    assert of_component(docs, "Service", "webhook") == []
    container = pod(docs)["spec"]["containers"][0]
    assert not [a for a in container["args"] if a.startswith("--webhook")]
    assert "webhook" not in {p["name"] for p in container["ports"]}
    assert settings_of(docs).webhook_port == 0


@pytest.mark.parametrize("mode", ["default", "cert-manager"])
def test_a_renamed_release_names_everything_after_it(mode: str) -> None:
    docs = render(MODES[mode], release="ops", namespace="platform")
    (service,) = of_component(docs, "Service", "webhook")
    assert service["metadata"]["name"] == "ops-session-operator-webhook"
    assert the_webhook(docs)["clientConfig"]["service"]["namespace"] == "platform"
    assert only(docs, "ValidatingWebhookConfiguration")["metadata"]["name"] == "ops-session-operator"
