"""The advisory admission webhook, end to end: the API server calls the real operator process.

Each test runs an operator of its own with ``--webhook-port`` and a certificate made for
127.0.0.1, and registers a ValidatingWebhookConfiguration (``clientConfig.url`` and the
test CA in ``caBundle``, ``failurePolicy: Ignore``) that matches only the test's namespace.
What a client sees is checked on the wire: the 409 (or 422) code and the
``admission webhook "<name>" denied the request: `` prefix of a denial, and warnings as
``Warning`` headers, which kubectl prints.

Only an API server that calls webhooks can run these: one that serves
``admissionregistration.k8s.io/v1`` ``validatingwebhookconfigurations``. Elsewhere they
are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from support import sessions as s
from support.kubeclient import KubeClient
from support.operator_process import OperatorProcess, free_port
from support.webhook import Tls, calls_webhooks, make_tls, registered, url_of

WEBHOOK = "sessions.session-operator.io"
DENIED = f'admission webhook "{WEBHOOK}" denied the request: '
TARGET = "repo/payments"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"


@pytest.fixture
async def webhooks(kube: KubeClient, session_crd: Path) -> None:
    if not await calls_webhooks(kube):
        pytest.skip(
            "this API server serves no admissionregistration.k8s.io/v1 validatingwebhookconfigurations, "
            "so it calls no admission webhooks"
        )


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return make_tls(tmp_path / "tls")


def webhook_operator(make: Callable[..., OperatorProcess], tls: Tls, namespace: str, **kwargs: Any) -> OperatorProcess:
    port = free_port()
    process = make(
        kwargs.pop("name", "webhook"),
        args=(
            "--namespace", namespace,
            "--webhook-port", str(port), "--webhook-bind-address", "127.0.0.1",
            "--webhook-cert-file", str(tls.cert_file), "--webhook-key-file", str(tls.key_file),
            *kwargs.pop("args", ()),
        ),
        **kwargs,
    )
    process.webhook_port = port  # type: ignore[attr-defined]
    return process


async def create(kube: KubeClient, namespace: str, name: str, *, dry_run: bool = False, **spec: Any) -> Any:
    """POST a Session; (status, body, warnings)."""
    return await kube.request_with_warnings(
        "POST", s.sessions_path(namespace), json=s.body(name, TARGET, **spec),
        params={"dryRun": "All"} if dry_run else None,
    )


async def until_the_webhook_answers(kube: KubeClient, namespace: str, within: float = 30.0) -> None:
    """The API server picks a new configuration up within a moment; until it does (and the
    operator listens) creates pass unchecked. A duration too large is refused only by the
    webhook (the schema lets it through), so its 422 says the webhook is in the path."""

    async def refused() -> bool:
        status, body, _ = await create(kube, namespace, "probe", dry_run=True, maxDuration="3000000h")
        return status == 422 and body.get("message", "").startswith(DENIED)

    await s.eventually(refused, within=within, interval=0.2, what="the webhook to answer")


@pytest.fixture
async def answering(
    webhooks: None, kube: KubeClient, namespace: str, operator_factory: Any, tls: Tls
) -> AsyncIterator[OperatorProcess]:
    """An operator that leads and serves the webhook, registered for ``namespace``."""
    process = webhook_operator(operator_factory, tls, namespace)
    await asyncio.to_thread(process.start)
    port = process.webhook_port  # type: ignore[attr-defined]
    async with registered(kube, f"session-operator-test-{namespace}", url_of(port), tls.ca_pem, [namespace]):
        await until_the_webhook_answers(kube, namespace)
        yield process


async def active(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    async def shown() -> dict[str, Any] | None:
        obj = await s.get(kube, namespace, name)
        return obj if s.phase(obj) == "Active" else None

    result: dict[str, Any] = await s.eventually(shown, what=f"{name} Active")
    return result


async def test_a_conflict_is_denied_409_naming_the_holder(
    answering: OperatorProcess, kube: KubeClient, namespace: str
) -> None:
    status, _, warnings = await create(kube, namespace, "alice-1", profile="gpt-4o")
    assert (status, warnings) == (201, [])  # a free target: nothing to say
    since = (await active(kube, namespace, "alice-1"))["status"]["activeSince"]

    status, body, _ = await create(kube, namespace, "bob-1", profile="gpt-5")
    assert status == 409 and body["code"] == 409, body
    assert body["message"] == DENIED + (
        f'target "{TARGET}" is held by session "alice-1" (profile "gpt-4o", active since {since}), '
        "with no session waiting; archive it, or set spec.onConflict to Queue or Replace"
    )
    status, body, _ = await create(kube, namespace, "carol-1", profile="gpt-4o", onConflict="ReplaceIfProfileChanged")
    assert status == 409, body
    assert body["message"].startswith(DENIED + f'target "{TARGET}" is held by session "alice-1"')
    assert 'use session "alice-1" — it runs this profile' in body["message"]
    # Denied: neither exists; the holder is untouched.
    assert await s.get(kube, namespace, "bob-1") is None
    assert await s.get(kube, namespace, "carol-1") is None
    assert s.phase(await s.get(kube, namespace, "alice-1")) == "Active"


async def test_allowed_creates_come_back_with_warnings(
    answering: OperatorProcess, kube: KubeClient, namespace: str
) -> None:
    await create(kube, namespace, "alice-1", profile="gpt-4o")
    since = (await active(kube, namespace, "alice-1"))["status"]["activeSince"]
    holder = f'"alice-1" (profile "gpt-4o", active since {since})'

    status, _, warnings = await create(kube, namespace, "queued-1", onConflict="Queue")
    assert status == 201
    assert warnings == [f"will queue behind {holder} at expected position 1 of 1"]

    async def queued() -> bool:
        return s.phase(await s.get(kube, namespace, "queued-1")) == "Queued"

    await s.eventually(queued, what="queued-1 Queued")
    status, _, warnings = await create(kube, namespace, "queued-2", onConflict="Queue")
    assert warnings == [f"will queue behind {holder} at expected position 2 of 2"]
    await s.phases_when_settled(kube, namespace, ["queued-2"])
    status, _, warnings = await create(kube, namespace, "urgent", onConflict="Queue", priority=10, dry_run=True)
    assert warnings == [f"will queue behind {holder} at expected position 1 of 3"]

    status, _, warnings = await create(kube, namespace, "other", onConflict="ReplaceIfProfileChanged", profile="gpt-5")
    assert (status, warnings) == (201, ['will replace "alice-1" (profile changes from "gpt-4o" to "gpt-5")'])
    await active(kube, namespace, "other")
    status, _, warnings = await create(kube, namespace, "takeover", onConflict="Replace")
    assert status == 201
    assert warnings and warnings[0].startswith('will replace "other" (profile "gpt-5", active since ')
    await active(kube, namespace, "takeover")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
async def test_kubectl_prints_the_warning_and_the_denial(
    answering: OperatorProcess, kube: KubeClient, namespace: str, cluster: Any
) -> None:
    await create(kube, namespace, "alice-1")
    await active(kube, namespace, "alice-1")

    def kubectl(name: str, policy: str) -> subprocess.CompletedProcess[str]:
        manifest = (
            "apiVersion: session-operator.io/v1alpha1\nkind: Session\n"
            f"metadata:\n  name: {name}\nspec:\n  target: {TARGET}\n  onConflict: {policy}\n"
        )
        return subprocess.run(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "-n", namespace, "create", "-f", "-"],
            input=manifest, capture_output=True, text=True, timeout=60, check=False,
        )

    queued = await asyncio.to_thread(kubectl, "bob-1", "Queue")
    assert queued.returncode == 0, queued.stderr
    assert 'Warning: will queue behind "alice-1"' in queued.stderr
    rejected = await asyncio.to_thread(kubectl, "carol-1", "Reject")
    assert rejected.returncode != 0
    assert DENIED + f'target "{TARGET}" is held by session "alice-1"' in rejected.stderr


async def test_an_invalid_duration_is_denied_422_naming_the_field(
    answering: OperatorProcess, kube: KubeClient, namespace: str
) -> None:
    status, body, _ = await create(kube, namespace, "forever", idleTimeout="3000000h")
    assert status == 422 and body["code"] == 422, body
    assert body["message"].startswith(DENIED + 'spec.idleTimeout: duration "3000000h" is out of range')


async def test_with_the_operator_down_creates_pass_and_the_operator_decides(
    answering: OperatorProcess, kube: KubeClient, namespace: str
) -> None:
    """failurePolicy: Ignore. Nothing answers, the create goes through, and the operator
    (the authority) rejects it when it is back."""
    await create(kube, namespace, "alice-1")
    await active(kube, namespace, "alice-1")
    assert await asyncio.to_thread(answering.stop) == 0
    started = time.monotonic()
    status, body, _ = await create(kube, namespace, "bob-1")
    assert status == 201, body
    assert time.monotonic() - started < 5
    await asyncio.to_thread(answering.start)
    settled = await s.phases_when_settled(kube, namespace, ["alice-1", "bob-1"])
    assert s.phase(settled["bob-1"]) == "Rejected"
    assert s.phase(settled["alice-1"]) == "Active"


async def test_a_race_the_webhook_cannot_see_is_decided_by_policy(
    webhooks: None, kube: KubeClient, namespace: str, operator_factory: Any, tls: Tls
) -> None:
    """Two Reject sessions created while neither is Active: the webhook allows both, and
    the operator makes one Active and rejects the other. The operator here is a standby
    until the race is over (another identity holds its leader Lease), which also shows
    that a standby answers the webhook from its own cache."""
    lease = f"webhook-race-{secrets.token_hex(4)}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    status, body = await kube.request("POST", LEASES, json={
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": lease},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600, "acquireTime": now, "renewTime": now},
    })
    assert status == 201, body
    process = None
    try:
        process = webhook_operator(
            operator_factory, tls, namespace, name="standby", leader_elect=True,
            args=("--leader-election-lease-name", lease),
        )
        await asyncio.to_thread(process.start, False)

        async def standing_by() -> bool:
            code, text = await asyncio.to_thread(process._get, process.health_port, "/readyz")
            return code == 503 and "someone-else leads" in text  # the cache is filled, not leading

        await s.eventually(standing_by, what="a filled standby")
        port = process.webhook_port  # type: ignore[attr-defined]
        async with registered(kube, f"session-operator-test-{namespace}", url_of(port), tls.ca_pem, [namespace]):
            await until_the_webhook_answers(kube, namespace)  # answered by the standby
            first, second = await asyncio.gather(create(kube, namespace, "racer-a"), create(kube, namespace, "racer-b"))
            assert (first[0], first[2]) == (201, [])
            assert (second[0], second[2]) == (201, [])
            status, _ = await kube.request("DELETE", f"{LEASES}/{lease}")  # the standby may lead now
            assert status == 200
            settled = await s.phases_when_settled(kube, namespace, ["racer-a", "racer-b"])
        assert sorted(s.phase(settled[name]) for name in ("racer-a", "racer-b")) == ["Active", "Rejected"]
        assert process.metric("session_operator_leader") == 1
    finally:
        if process is not None:
            await asyncio.to_thread(process.stop)  # it releases the Lease it took over
        await kube.request("DELETE", f"{LEASES}/{lease}")

