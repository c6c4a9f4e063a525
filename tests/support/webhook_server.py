"""An admission webhook (validating or mutating) on loopback over HTTPS, for tests that run
against the API emulator or a real kube-apiserver alike.

    async with WebhookServer() as hook:
        hook.answer("/guard", deny(409, "target t1 is held by s1", reason="Conflict"))
        config = hook.configuration("guard-" + namespace, [hook.webhook("guard.example.test", "/guard", rules)])
        await register(kube, hook, config, namespace)  # created, and called by the server
        status, body = await kube.request("POST", ...)  # 409, 'admission webhook "guard.example.test" denied ...'
        hook.reviews("/guard")                           # the AdmissionReview requests received
        await unregister(kube, config)

A mutating webhook answers with :func:`patch` (a JSON patch), and its configuration is made
with ``hook.configuration(name, webhooks, kind=MUTATING)``.

The server certificate comes from a throw-away CA made with ``cryptography``; the CA is what
``clientConfig.caBundle`` carries (``hook.ca_bundle``). The server runs in the caller's
event loop, so the test must be awaiting something (a request) while the API server calls it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kube_emulator.tls import make_certs
from support.kubeclient import KubeClient

VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
MWC_PATH = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING = "ValidatingWebhookConfiguration"
MUTATING = "MutatingWebhookConfiguration"
PROBE_LABEL = "webhook-probe.example.test/config"

# An answer is the AdmissionReview's ``response`` (``uid`` is filled in unless given), or a
# whole HTTP response to send instead; an ``async def`` answer is awaited.
Answer = Callable[[dict[str, Any]], "dict[str, Any] | web.Response | Awaitable[dict[str, Any] | web.Response]"]


def allow(warnings: list[str] | None = None) -> Answer:
    """An answer that allows the request, with ``warnings`` if given."""

    def answer(_request: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = {"allowed": True}
        if warnings is not None:
            response["warnings"] = list(warnings)
        return response

    return answer


def deny(
    code: int | None = None,
    message: str | None = None,
    *,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    warnings: list[str] | None = None,
) -> Answer:
    """An answer that denies the request with a ``status`` made of what is given (none: no status)."""

    def answer(_request: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = {"allowed": False}
        status = {
            k: v
            for k, v in (("code", code), ("message", message), ("reason", reason), ("details", details))
            if v is not None
        }
        if status:
            response["status"] = status
        if warnings is not None:
            response["warnings"] = list(warnings)
        return response

    return answer


def patch(
    operations: Any, warnings: list[str] | None = None, *, patch_type: str | None = "JSONPatch"
) -> Answer:
    """An answer that allows the request and mutates it with ``operations`` (an RFC 6902 JSON
    patch, sent base64-encoded as ``response.patch``; ``bytes`` are sent as they are), with
    ``patch_type`` as ``response.patchType`` (None: left out)."""
    raw = operations if isinstance(operations, bytes) else json.dumps(operations).encode()

    def answer(_request: dict[str, Any]) -> dict[str, Any]:
        response: dict[str, Any] = {"allowed": True, "patch": base64.b64encode(raw).decode()}
        if patch_type is not None:
            response["patchType"] = patch_type
        if warnings is not None:
            response["warnings"] = list(warnings)
        return response

    return answer


def config_path(config: dict[str, Any]) -> str:
    """The collection a configuration made by :meth:`WebhookServer.configuration` is written to."""
    return MWC_PATH if config["kind"] == MUTATING else VWC_PATH


@dataclass(frozen=True)
class Call:
    """One call the API server made: the path, the raw query, the AdmissionReview, the headers."""

    path: str
    query: str
    review: dict[str, Any]
    headers: dict[str, str]


def free_port() -> int:
    """A loopback port nothing listens on (for a webhook that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class WebhookServer:
    """HTTPS on 127.0.0.1; each path answers AdmissionReviews with its :func:`allow`/:func:`deny`
    answer (or any function of the request), after ``delay`` seconds if set."""

    def __init__(self) -> None:
        self.certs = make_certs(("127.0.0.1",))
        self.port = 0
        self._answers: dict[str, tuple[Answer, float]] = {}
        self.calls: list[Call] = []
        self._runner: web.AppRunner | None = None

    @property
    def ca_bundle(self) -> str:
        """``clientConfig.caBundle``: the CA that signed the server certificate, base64."""
        return base64.b64encode(self.certs.ca_pem).decode()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, answer: Answer, delay: float = 0.0) -> None:
        self._answers[path] = (answer, delay)

    def reviews(self, path: str | None = None) -> list[dict[str, Any]]:
        """The AdmissionReviews received (on ``path``, or all), oldest first."""
        return [call.review for call in self.calls if path is None or call.path == path]

    def forget(self) -> None:
        self.calls.clear()

    async def start(self) -> WebhookServer:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.certs.ssl_context())
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> WebhookServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.calls.append(Call(request.path, request.query_string, review, dict(request.headers)))
        answer, delay = self._answers.get(request.path, (allow(), 0.0))
        if delay:
            await asyncio.sleep(delay)
        response = answer(review.get("request") or {})
        if inspect.isawaitable(response):
            response = await response
        if isinstance(response, web.Response):
            return response
        response = {"uid": (review.get("request") or {}).get("uid", ""), **response}
        version = review.get("apiVersion") or "admission.k8s.io/v1"  # v1, or v1beta1 if that was asked for
        return web.json_response({"apiVersion": version, "kind": "AdmissionReview", "response": response})

    # ------------------------------------------------------------------ configuration objects

    def webhook(
        self,
        name: str,
        path: str | None,
        rules: list[dict[str, Any]],
        *,
        url: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """One ``webhooks[]`` entry calling ``path`` on this server (or ``url``); ``fields`` adds
        or overrides (``failurePolicy``, ``timeoutSeconds``, ``namespaceSelector``, ...)."""
        hook: dict[str, Any] = {
            "name": name,
            "clientConfig": {"url": url or self.url(path or "/"), "caBundle": self.ca_bundle},
            "rules": rules,
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }
        hook.update(fields)
        return hook

    def configuration(
        self, name: str, webhooks: list[dict[str, Any]], probe: bool = True, kind: str = VALIDATING
    ) -> dict[str, Any]:
        """A ValidatingWebhookConfiguration (or, with ``kind=MUTATING``, a
        MutatingWebhookConfiguration); with ``probe``, plus a webhook that :func:`register` uses
        to see when the API server calls the configuration's webhooks."""
        hooks = list(webhooks)
        if probe:
            hooks.append(
                self.webhook(
                    "probe.webhooks.example.test",
                    "/probe",
                    [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
                    objectSelector={"matchLabels": {PROBE_LABEL: name}},
                )
            )
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": name},
            "webhooks": hooks,
        }


async def await_calls(
    kube: KubeClient,
    hook: WebhookServer,
    config_name: str,
    namespace: str,
    timeout: float = 30.0,  # noqa: ASYNC109
) -> None:
    """Wait until the API server calls the webhooks of ``config_name`` (made by
    :meth:`WebhookServer.configuration` with its probe): a real kube-apiserver picks a new
    configuration up from its informer a moment after creating it. Probes with dry-run
    ConfigMap creates in ``namespace``; forgets the probe's calls."""
    probe = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "webhook-probe", "labels": {PROBE_LABEL: config_name}},
    }
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        before = len(hook.reviews("/probe"))
        status, body = await kube.request(
            "POST", f"/api/v1/namespaces/{namespace}/configmaps", json=probe, params={"dryRun": "All"}
        )
        assert status == 201, (status, body)
        if len(hook.reviews("/probe")) > before:
            hook.calls[:] = [call for call in hook.calls if call.path != "/probe"]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"the API server did not call the webhooks of {config_name} within {timeout}s")
        await asyncio.sleep(0.1)


async def register(
    kube: KubeClient, hook: WebhookServer, config: dict[str, Any], namespace: str
) -> dict[str, Any]:
    """Create ``config`` (made by :meth:`WebhookServer.configuration`) and wait until it is called."""
    status, created = await kube.request("POST", config_path(config), json=config)
    assert status == 201, (status, created)
    await await_calls(kube, hook, config["metadata"]["name"], namespace)
    return created


async def unregister(kube: KubeClient, config: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        await kube.request("DELETE", f"{config_path(config)}/{config['metadata']['name']}")
