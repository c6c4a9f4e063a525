"""The only module that talks to the Kubernetes API.

A thin layer over kubernetes_asyncio's ApiClient that speaks plain dicts (no generated
models), maps failures to a few exception types the rest of the operator can act on, and
sends every merge patch with the merge-patch content type (the client's default for a
dict body is JSON Patch, which the API server answers with 400).

Conditional writes are the point of most calls here: a write carries the resourceVersion
it was decided on, and a 409 comes back as ``Conflict`` so the caller can re-read and
decide again.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp.helpers import get_env_proxy_for_url
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from yarl import URL

from . import __version__, model, paths
from .errors import ApiError, Conflict, NotFound

__all__ = ["ApiError", "Conflict", "Kube", "NotFound"]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
USER_AGENT = f"session-operator/{__version__}"
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# Bounded so that a hung connection never stalls a reconcile worker for long.
REQUEST_TIMEOUT = 30.0
_REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
CONNECTIONS = 32


def _error_from(status: int, reason: str, body: str | bytes | None) -> ApiError:
    """Map an API failure (a Status body, usually) to the exception the operator acts on."""
    message = ""
    if body:
        try:
            parsed = json.loads(body)
            reason = parsed.get("reason") or reason
            message = parsed.get("message") or ""
        except (ValueError, AttributeError):
            message = (body.decode(errors="replace") if isinstance(body, bytes) else str(body))[:500]
    if status == 409:
        return Conflict(status, reason, message)
    if status == 404:
        return NotFound(status, reason, message)
    return ApiError(status, reason, message)


def _context_namespace(loader: Any) -> str:
    """The namespace of the kubeconfig context in use ("default" when it names none)."""

    def plain(node: Any) -> Any:  # the loader hands out dicts, or ConfigNodes around them
        return getattr(node, "value", node)

    context = plain(getattr(loader, "current_context", None))
    inner = plain(context.get("context")) if isinstance(context, Mapping) else None
    namespace = inner.get("namespace") if isinstance(inner, Mapping) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def _service_account_namespace() -> str:
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


class Kube:
    """An authenticated connection to one API server.

    The configuration (kubeconfig or in-cluster; TLS; tokens, refreshed as they rotate)
    comes from kubernetes_asyncio; requests go out on an aiohttp session of our own over
    the same TLS connector. That session does not read the environment on every request:
    the client library's does (a netrc lookup and a proxy lookup, each on a worker thread,
    twice per request), which cost more than the rest of a write. The environment's proxy
    for the API server is resolved once, at connection time, instead.
    """

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        proxy: str | None = None,
        *,
        namespace: str = "default",
        user_agent: str = USER_AGENT,
    ) -> None:
        self._api = api_client
        configuration = api_client.configuration
        self._host = str(configuration.host or "").rstrip("/")
        self._proxy = configuration.proxy or proxy
        self._server_hostname = getattr(configuration, "tls_server_name", None) or None
        self._user_agent = user_agent  # what audit logs show
        # The namespace of the kubeconfig context (or of the in-cluster service account):
        # what kubectl uses when no -n is given.
        self.namespace = namespace
        pool = api_client.rest_client.pool_manager
        self._session = aiohttp.ClientSession(
            connector=pool.connector, connector_owner=False, trust_env=False, read_bufsize=2**21
        )

    @classmethod
    async def connect(
        cls, kubeconfig: str | None = None, context: str | None = None, *, user_agent: str = USER_AGENT
    ) -> Kube:
        """Standard rules: an explicit file, else $KUBECONFIG / ~/.kube/config, else in-cluster.

        ``context`` picks a kubeconfig context other than the current one (as kubectl's
        ``--context``); then there is no in-cluster fallback.
        """
        configuration = k8s_client.Configuration()
        if kubeconfig or context:
            loader = await k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
            namespace = _context_namespace(loader)
        else:
            try:
                loader = await k8s_config.load_kube_config(client_configuration=configuration)
                namespace = _context_namespace(loader)
            except (k8s_config.ConfigException, FileNotFoundError, TypeError):
                k8s_config.load_incluster_config(client_configuration=configuration)
                namespace = _service_account_namespace()
        # Each pooled TLS connection keeps a 128 KiB read buffer; 32 in flight keep a
        # burst near the API server's own speed (the library's default is 100).
        configuration.connection_pool_maxsize = CONNECTIONS
        api_client = k8s_client.ApiClient(configuration)
        api_client.user_agent = user_agent
        proxy = None
        if not configuration.proxy:
            with contextlib.suppress(LookupError):
                env_proxy, _ = get_env_proxy_for_url(URL(str(configuration.host)))
                proxy = str(env_proxy)
        return cls(api_client, proxy, namespace=namespace, user_agent=user_agent)

    @property
    def server(self) -> str:
        """The API server's URL, as the kubeconfig names it (for messages)."""
        return self._host

    async def close(self) -> None:
        await self._session.close()
        await self._api.close()

    async def credentials(self) -> dict[str, Any]:
        """Server and credentials as loaded here, so kopf logs in exactly as we do."""
        config = self._api.configuration
        hook = getattr(config, "refresh_api_key_hook", None)
        if hook is not None:
            result = hook(config)
            if hasattr(result, "__await__"):
                await result
        token = (config.api_key or {}).get("authorization") or (config.api_key or {}).get("BearerToken")
        if token and token.lower().startswith("bearer "):
            token = token[7:]
        return {
            "server": config.host,
            "ca_path": config.ssl_ca_cert,
            "insecure": not config.verify_ssl,
            "token": token or None,
            "certificate_path": config.cert_file,
            "private_key_path": config.key_file,
        }

    async def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: Any,
        content_type: str,
        limits: aiohttp.ClientTimeout,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json", "User-Agent": self._user_agent}
        queries: list[tuple[str, str]] = list((query or {}).items())
        # The configured credentials, with the token refreshed when it rotates.
        await self._api.update_params_for_auth(headers, queries, ["BearerToken"])
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = orjson.dumps(body)
        return await self._session.request(
            method,
            self._host + path,
            params=queries or None,
            data=data,
            headers=headers,
            timeout=limits,
            proxy=self._proxy,
            server_hostname=self._server_hostname,
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        try:
            response = await self._send(method, path, query, body, content_type, _REQUEST_TIMEOUT)
            try:
                data = await response.read()
                status = response.status
            finally:
                response.release()
        except (TimeoutError, OSError, aiohttp.ClientError) as e:
            raise ApiError(0, "ConnectionError", str(e) or type(e).__name__) from e
        if status >= 400:
            raise _error_from(status, str(status), data)
        parsed: dict[str, Any] = orjson.loads(data) if data else {}
        return parsed

    async def watch(
        self, path: str, query: Mapping[str, str], *, idle_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream a watch: one decoded event (``{"type", "object"}``) at a time.

        Ends when the server closes the stream (``timeoutSeconds``); raises ``ApiError``
        for an error answer, and for a stream silent for ``idle_timeout`` seconds.
        """
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=idle_timeout)
        try:
            response = await self._send("GET", path, {**query, "watch": "true"}, None, "", timeout)
        except (TimeoutError, OSError, aiohttp.ClientError) as e:
            raise ApiError(0, "ConnectionError", str(e) or type(e).__name__) from e
        try:
            if response.status >= 400:
                raise _error_from(response.status, str(response.status), await response.read())
            buffer = b""
            # Lines can be longer than aiohttp's line limit; split them ourselves.
            async for chunk in response.content.iter_any():
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line, buffer = buffer[:end], buffer[end + 1 :]
                    if line.strip():
                        yield orjson.loads(line)
            if buffer.strip():
                yield orjson.loads(buffer)
        except (TimeoutError, OSError, aiohttp.ClientError) as e:
            raise ApiError(0, "ConnectionError", str(e) or type(e).__name__) from e
        finally:
            response.release()

    # Sessions ---------------------------------------------------------------------------

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", paths.sessions(namespace, name))

    async def patch_session_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch status, conditional on the resourceVersion the decision was made on."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status_patch)}
        return await self.request(
            "PATCH", paths.sessions(namespace, name, "status"), body=body, content_type=MERGE_PATCH
        )

    async def set_session_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        """Replace the finalizer list, conditional on the resourceVersion it was read at."""
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers or None}}
        return await self.request(
            "PATCH", paths.sessions(namespace, name), body=body, content_type=MERGE_PATCH
        )

    async def delete_session(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete exactly the object that was decided on (uid and resourceVersion preconditions)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid, "resourceVersion": resource_version},
        }
        await self.request("DELETE", paths.sessions(namespace, name), body=body)

    # Leases (claims and leader election) --------------------------------------------------

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", paths.leases(namespace, name))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create; raises Conflict (AlreadyExists) if another writer was first."""
        return await self.request("POST", paths.leases(namespace), body=dict(body))

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT; ``body.metadata.resourceVersion`` must be the one read, or Conflict."""
        if not (body.get("metadata") or {}).get("resourceVersion"):
            raise ValueError("a Lease replace must carry metadata.resourceVersion")
        return await self.request("PUT", paths.leases(namespace, name), body=dict(body))

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": resource_version},
        }
        await self.request("DELETE", paths.leases(namespace, name), body=body)

    # Authorization ------------------------------------------------------------------------

    async def may(
        self, namespace: str, user: str, groups: Sequence[str], verb: str, resource: str, group: str = model.GROUP
    ) -> bool:
        """Whether ``user`` (with ``groups``) may ``verb`` ``resource`` in ``namespace``, as the
        API server's authorizer answers a LocalSubjectAccessReview (namespaced, so a Role in
        that namespace can grant it)."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "LocalSubjectAccessReview",
            "metadata": {"namespace": namespace},
            "spec": {
                "user": user,
                "groups": list(groups),
                "resourceAttributes": {"namespace": namespace, "verb": verb, "group": group, "resource": resource},
            },
        }
        answer = await self.request("POST", paths.local_subject_access_reviews(namespace), body=body)
        return bool((answer.get("status") or {}).get("allowed"))

    # Events -------------------------------------------------------------------------------

    async def create_event(
        self,
        involved: Mapping[str, str],
        *,
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "session-operator",
        instance: str = "",
    ) -> dict[str, Any]:
        """Post a core/v1 Event about a session (what `kubectl describe` shows)."""
        now = datetime.now(UTC)
        namespace = involved["namespace"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name'][:200]}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": model.API_VERSION,
                "kind": model.KIND,
                "name": involved["name"],
                "namespace": namespace,
                "uid": involved["uid"],
            },
            "reason": reason,
            "message": message[:1024],
            "type": event_type,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": instance or component,
            "firstTimestamp": model.format_time(now),
            "lastTimestamp": model.format_time(now),
            "count": 1,
        }
        return await self.request("POST", paths.events(namespace), body=body)
