"""A small raw async Kubernetes client for tests: the same code talks to the emulator
and to a real cluster, so what a test asserts is what the wire carries.

    status, body = await kube.request("GET", "/api/v1/namespaces/default")
    reply = await kube.request_with_headers("POST", path, json=obj)   # .status, .body, .headers
    async for event in kube.watch(path, {"resourceVersion": rv, "timeoutSeconds": "5"}): ...
    await kube.apply_crd("crds/sessions.session-operator.io.yaml")
    ns = await kube.create_namespace("test")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import secrets
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from multidict import CIMultiDictProxy


class KubeConfig:
    """The parts of a kubeconfig's current context a client needs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        config = yaml.safe_load(self.path.read_text())
        context_name = config.get("current-context")
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        context = contexts[context_name] if context_name else next(iter(contexts.values()))
        clusters = {c["name"]: c["cluster"] for c in config.get("clusters") or []}
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        cluster = clusters[context["cluster"]]
        self.user = users.get(context.get("user", ""), {})
        self.server: str = cluster["server"].rstrip("/")
        self.namespace: str = context.get("namespace", "default")
        self.insecure = bool(cluster.get("insecure-skip-tls-verify"))
        self.ca_data = self._read(cluster, "certificate-authority")
        self.token: str | None = self.user.get("token")
        if not self.token and self.user.get("tokenFile"):
            self.token = Path(self.user["tokenFile"]).read_text().strip()
        self.cert_data = self._read(self.user, "client-certificate")
        self.key_data = self._read(self.user, "client-key")

    def _read(self, section: dict[str, Any], key: str) -> bytes | None:
        if section.get(f"{key}-data"):
            return base64.b64decode(section[f"{key}-data"])
        if section.get(key):
            path = Path(section[key])
            if not path.is_absolute():
                path = self.path.parent / path
            return path.read_bytes()
        return None

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cadata=self.ca_data.decode() if self.ca_data else None)
        if self.cert_data and self.key_data:
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "c.pem"), Path(tmp, "k.pem")
                cert.write_bytes(self.cert_data)
                key.write_bytes(self.key_data)
                context.load_cert_chain(str(cert), str(key))
        return context


@dataclass(frozen=True)
class Reply:
    """An API answer with its headers (see :meth:`KubeClient.request_with_headers`)."""

    status: int
    body: dict[str, Any]
    headers: CIMultiDictProxy[str]

    @property
    def warning_headers(self) -> list[str]:
        """The ``Warning`` header values as sent, in order (``299 - "text"``; the texts alone:
        :meth:`KubeClient.request_with_warnings`)."""
        return list(self.headers.getall("Warning", []))


class KubeClient:
    def __init__(self, kubeconfig: str | os.PathLike[str]) -> None:
        self.config = KubeConfig(kubeconfig)
        self._session: aiohttp.ClientSession | None = None
        self.created_namespaces: list[str] = []

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "session-operator-tests/1 (kubeclient)", "Accept": "application/json"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            connector = aiohttp.TCPConnector(ssl=self.config.ssl_context(), limit=100)
            self._session = aiohttp.ClientSession(headers=headers, connector=connector)
        return self._session

    def url(self, path: str) -> str:
        return self.config.server + "/" + path.lstrip("/")

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One API call; returns the status code and the decoded JSON body (``{}`` if none)."""
        reply = await self.request_with_headers(
            method, path, json=json, params=params, content_type=content_type, headers=headers
        )
        return reply.status, reply.body

    async def request_with_headers(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        """Like :meth:`request`, with the response headers too (``Warning``, ``Retry-After``, ...)."""
        all_headers = dict(headers or {})
        data = None
        if json is not None:
            data = _dumps(json)
            all_headers.setdefault("Content-Type", content_type)
        async with self.session.request(
            method,
            self.url(path),
            data=data,
            params=params,
            headers=all_headers,
            timeout=aiohttp.ClientTimeout(total=60),
        ) as response:
            raw = await response.read()
        if not raw:
            return Reply(response.status, {}, response.headers)
        try:
            return Reply(response.status, _loads(raw), response.headers)
        except ValueError:
            return Reply(response.status, {"raw": raw.decode(errors="replace")}, response.headers)

    async def request_with_warnings(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], list[str]]:
        """Like :meth:`request`, with the texts of the answer's ``Warning`` headers (RFC 7234
        ``299 - "text"``, as the API server sends admission warnings and kubectl prints them)."""
        reply = await self.request_with_headers(method, path, json=json, params=params)
        return reply.status, reply.body, [_warning_text(value) for value in reply.warning_headers]

    async def watch(self, path: str, params: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Stream watch events (dicts with ``type`` and ``object``) until the server ends the stream.

        A non-200 answer is yielded as one ``{"type": "ERROR", "object": <Status>}`` event."""
        query = {"watch": "true", **(params or {})}
        async with self.session.get(
            self.url(path), params=query, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
        ) as response:
            if response.status != 200:
                raw = await response.read()
                try:
                    body = _loads(raw)
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                yield {"type": "ERROR", "object": body}
                return
            async for line in response.content:
                if line.strip():
                    yield _loads(line)

    async def apply_crd(
        self,
        crd: str | os.PathLike[str] | dict[str, Any],
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> list[dict[str, Any]]:
        """Create or replace CRDs (a dict or a YAML file), then wait until each is Established and served."""
        text = "" if isinstance(crd, dict) else await asyncio.to_thread(Path(crd).read_text)
        docs = [crd] if isinstance(crd, dict) else [d for d in yaml.safe_load_all(text) if d]
        results = []
        for doc in docs:
            name = doc["metadata"]["name"]
            path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            for _ in range(10):
                status, current = await self.request("GET", path)
                if status == 404:
                    status, body = await self.request(
                        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=doc
                    )
                else:
                    assert status == 200, (status, current)
                    if current["metadata"].get("deletionTimestamp"):
                        await asyncio.sleep(0.2)
                        continue
                    replacement = dict(doc)
                    replacement["metadata"] = dict(
                        doc["metadata"], resourceVersion=current["metadata"]["resourceVersion"]
                    )
                    status, body = await self.request("PUT", path, json=replacement)
                if status in (200, 201):
                    break
                if status not in (409,):
                    raise AssertionError(f"applying CRD {name} failed: {status} {body}")
            else:
                raise AssertionError(f"applying CRD {name} kept conflicting")
            results.append(await self._wait_served(doc, timeout))
        return results

    async def _wait_served(self, doc: dict[str, Any], limit: float) -> dict[str, Any]:
        name = doc["metadata"]["name"]
        spec = doc["spec"]
        plural = spec["names"]["plural"]
        served = [v["name"] for v in spec["versions"] if v.get("served", True)]
        deadline = asyncio.get_running_loop().time() + limit
        while True:
            status, crd = await self.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conditions = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
            if status == 200 and conditions.get("Established") == "True":
                ok = True
                for version in served:
                    status, listing = await self.request("GET", f"/apis/{spec['group']}/{version}")
                    names = [r["name"] for r in listing.get("resources", [])] if status == 200 else []
                    if plural not in names:
                        ok = False
                        break
                    status, _ = await self.request(
                        "GET", f"/apis/{spec['group']}/{version}/{plural}", params={"limit": "1"}
                    )
                    if status != 200:
                        ok = False
                        break
                if ok:
                    return crd
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"CRD {name} was not served in {limit}s (conditions: {conditions})")
            await asyncio.sleep(0.05)

    async def create_namespace(self, prefix: str = "test") -> str:
        """Create a fresh namespace (deleted again by :meth:`close`)."""
        base = "".join(c if c.isalnum() or c == "-" else "-" for c in prefix.lower()).strip("-")[:40] or "test"
        name = f"{base}-{secrets.token_hex(4)}"
        status, body = await self.request(
            "POST", "/api/v1/namespaces", json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        )
        assert status == 201, (status, body)
        self.created_namespaces.append(name)
        return name

    async def delete_namespace(self, name: str) -> None:
        await self.request("DELETE", f"/api/v1/namespaces/{name}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            for name in self.created_namespaces:
                await self.delete_namespace(name)
        self.created_namespaces.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None


def _warning_text(header: str) -> str:
    """``299 - "will queue behind \\"alice-1\\""`` -> ``will queue behind "alice-1"``."""
    match = re.fullmatch(r'\d{3} \S+ "((?:[^"\\]|\\.)*)"(?: .*)?', header.strip())
    if match is None:
        return header
    return re.sub(r"\\(.)", r"\1", match.group(1))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _loads(raw: bytes) -> Any:
    return json.loads(raw)
