"""The admission webhook under test: certificates, and its registration on an API server.

    tls = make_tls(tmp_path)                       # CA + a server certificate for 127.0.0.1
    async with registered(kube, name, url, tls.ca_pem, namespace) as config: ...
    if not await calls_webhooks(kube): pytest.skip(...)

Certificates are made with ``cryptography`` (kopf's own self-signed path is not used: the
operator serves what it is given, as in a cluster). A registration matches only the
namespaces it is told, by their ``kubernetes.io/metadata.name`` label, so that a test never
answers for Sessions of another test (or of anyone else) on a shared API server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from session_operator.kopf_adapter import WEBHOOK_PATH

WEBHOOKS = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


@dataclass(frozen=True)
class Tls:
    ca_pem: bytes
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_tls(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Tls:
    """A CA and a server certificate for ``hosts`` signed by it; files in ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("session-operator-test-ca"))
        .issuer_name(_name("session-operator-test-ca"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return Tls(ca.public_bytes(serialization.Encoding.PEM), cert_file, key_file)


def configuration(
    name: str, url: str, ca_pem: bytes, namespaces: list[str], *, timeout: int = 5
) -> dict[str, Any]:
    """A ValidatingWebhookConfiguration as the chart makes it, calling ``url`` directly."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "sessions.session-operator.io",
                "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_pem).decode()},
                "rules": [
                    {
                        "apiGroups": ["session-operator.io"],
                        "apiVersions": ["v1alpha1"],
                        "resources": ["sessions"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}
                    ]
                },
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "timeoutSeconds": timeout,
                "admissionReviewVersions": ["v1"],
            }
        ],
    }


def url_of(port: int, host: str = "127.0.0.1") -> str:
    return f"https://{host}:{port}{WEBHOOK_PATH}"


async def calls_webhooks(kube: Any) -> bool:
    """The API server serves ValidatingWebhookConfigurations (and so calls webhooks)."""
    status, resources = await kube.request("GET", "/apis/admissionregistration.k8s.io/v1")
    return status == 200 and any(r.get("name") == "validatingwebhookconfigurations" for r in resources["resources"])


@contextlib.asynccontextmanager
async def registered(
    kube: Any, name: str, url: str, ca_pem: bytes, namespaces: list[str]
) -> AsyncIterator[dict[str, Any]]:
    """Register the webhook for ``namespaces`` while the block runs; deleted afterwards."""
    status, created = await kube.request("POST", WEBHOOKS, json=configuration(name, url, ca_pem, namespaces))
    assert status == 201, (status, created)
    try:
        yield created
    finally:
        await kube.request("DELETE", f"{WEBHOOKS}/{name}")
