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

import json
import logging
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from . import __version__, model
from .errors import ApiError, Conflict, NotFound

__all__ = ["ApiError", "Conflict", "Kube", "NotFound"]

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
# Bounded so that a hung connection never stalls a reconcile worker for long.
REQUEST_TIMEOUT = 30.0


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


class Kube:
    """An authenticated connection to one API server."""

    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self._api = api_client

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        """Standard rules: an explicit file, else $KUBECONFIG / ~/.kube/config, else in-cluster."""
        configuration = k8s_client.Configuration()
        if kubeconfig:
            await k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                await k8s_config.load_kube_config(client_configuration=configuration)
            except (k8s_config.ConfigException, FileNotFoundError, TypeError):
                k8s_config.load_incluster_config(client_configuration=configuration)
        api_client = k8s_client.ApiClient(configuration)
        api_client.user_agent = f"session-operator/{__version__}"  # what audit logs show
        return cls(api_client)

    async def close(self) -> None:
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

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            # _preload_content=False hands back the raw response: the generated client would
            # otherwise try to deserialise into models (and drops the body without a type).
            response = await self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            try:
                data = await response.read()
                status = response.status
            finally:
                response.release()
        except ApiException as e:
            raise _error_from(int(e.status or 0), str(e.reason or ""), e.body) from e
        except (TimeoutError, OSError, aiohttp.ClientError) as e:
            raise ApiError(0, "ConnectionError", str(e) or type(e).__name__) from e
        if status >= 400:
            raise _error_from(status, str(status), data)
        parsed: dict[str, Any] = json.loads(data) if data else {}
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
            response = await self._api.call_api(
                path,
                "GET",
                query_params=[*query.items(), ("watch", "true")],
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except ApiException as e:
            raise _error_from(int(e.status or 0), str(e.reason or ""), e.body) from e
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
                        yield json.loads(line)
            if buffer.strip():
                yield json.loads(buffer)
        except (TimeoutError, OSError, aiohttp.ClientError) as e:
            raise ApiError(0, "ConnectionError", str(e) or type(e).__name__) from e
        finally:
            response.release()

    # Sessions ---------------------------------------------------------------------------

    @staticmethod
    def _session_path(namespace: str, name: str = "", subresource: str = "") -> str:
        path = f"/apis/{model.GROUP}/{model.VERSION}/namespaces/{namespace}/{model.PLURAL}"
        if name:
            path += f"/{quote(name)}"
        if subresource:
            path += f"/{subresource}"
        return path

    async def get_session(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", self._session_path(namespace, name))

    async def patch_session_status(
        self, namespace: str, name: str, status_patch: Mapping[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Merge-patch status, conditional on the resourceVersion the decision was made on."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": dict(status_patch)}
        return await self.request(
            "PATCH", self._session_path(namespace, name, "status"), body=body, content_type=MERGE_PATCH
        )

    async def set_session_finalizers(
        self, namespace: str, name: str, finalizers: list[str], resource_version: str
    ) -> dict[str, Any]:
        """Replace the finalizer list, conditional on the resourceVersion it was read at."""
        body = {"metadata": {"resourceVersion": resource_version, "finalizers": finalizers or None}}
        return await self.request(
            "PATCH", self._session_path(namespace, name), body=body, content_type=MERGE_PATCH
        )

    async def delete_session(self, namespace: str, name: str, uid: str, resource_version: str) -> None:
        """Delete exactly the object that was decided on (uid and resourceVersion preconditions)."""
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid, "resourceVersion": resource_version},
        }
        await self.request("DELETE", self._session_path(namespace, name), body=body)

    # Leases (claims and leader election) --------------------------------------------------

    @staticmethod
    def _lease_path(namespace: str, name: str = "") -> str:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{path}/{name}" if name else path

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", self._lease_path(namespace, name))

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create; raises Conflict (AlreadyExists) if another writer was first."""
        return await self.request("POST", self._lease_path(namespace), body=dict(body))

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PUT; ``body.metadata.resourceVersion`` must be the one read, or Conflict."""
        if not (body.get("metadata") or {}).get("resourceVersion"):
            raise ValueError("a Lease replace must carry metadata.resourceVersion")
        return await self.request("PUT", self._lease_path(namespace, name), body=dict(body))

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": resource_version},
        }
        await self.request("DELETE", self._lease_path(namespace, name), body=body)

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
        return await self.request("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
