"""A recording proxy on loopback, between a client under test and a real API server.

    proxy = RecordingProxy(admin_kubeconfig).start()      # plain HTTP on 127.0.0.1
    proxy.write_kubeconfig(path, token)                   # the client's own credentials
    ...                                                   # run the client with that file
    proxy.records()                                       # [Recorded(method, path, query, status, ...)]
    proxy.stop()

Every request is forwarded as it came, watch streams included (chunk by chunk, for as
long as either side keeps them open), with the client's own Authorization header: the
proxy adds no credentials of its own, so the API server authenticates and authorizes the
client, and a 403 in the record is the server's answer to that client. Only the upstream
server's address and its TLS trust are read from ``admin_kubeconfig``.

Runs on a thread and event loop of its own, so that a test may block (waiting for a
process) without stalling the streams it records.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from yarl import URL

from support.kubeclient import KubeConfig

# Hop-by-hop headers, and the ones aiohttp sets itself for the new connection.
_REQUEST_SKIP = {"host", "connection", "keep-alive", "content-length", "transfer-encoding", "te", "trailer", "upgrade"}
_RESPONSE_SKIP = {"connection", "keep-alive", "content-length", "transfer-encoding", "trailer", "upgrade"}


@dataclass(frozen=True)
class Recorded:
    index: int
    method: str
    path: str  # decoded, without the query
    query: str  # raw query string
    status: int  # the upstream answer (502: the upstream could not be reached)
    user_agent: str
    authorized: bool  # the client sent an Authorization header
    at: float  # time.monotonic() when the answer's headers arrived


class RecordingProxy:
    def __init__(self, upstream_kubeconfig: str | os.PathLike[str]) -> None:
        config = KubeConfig(upstream_kubeconfig)
        self._upstream = config.server
        self._ssl = _trust_only(config)
        self._records: list[Recorded] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> RecordingProxy:
        self._thread = threading.Thread(target=self._run, name="recording-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError("the recording proxy did not start") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as e:  # reported to start()
            self._error = e
            self._ready.set()
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=None),
            auto_decompress=False,  # bytes pass through as the server encoded them
            trust_env=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept", "Content-Type"),
        )
        app = web.Application(client_max_size=64 * 2**20)

        async def forward(request: web.Request) -> web.StreamResponse:
            return await self._forward(client, request)

        app.router.add_route("*", "/{tail:.*}", forward)
        # A client that goes away ends its handler, and with it the upstream stream.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = int(runner.addresses[0][1])
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()
            await client.close()

    # Forwarding --------------------------------------------------------------------------

    async def _forward(self, client: aiohttp.ClientSession, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_SKIP]
        url = URL(self._upstream + request.raw_path, encoded=True)
        response: web.StreamResponse | None = None
        try:
            async with client.request(
                request.method, url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                self._record(request, upstream.status)
                response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
                for key, value in upstream.headers.items():
                    if key.lower() not in _RESPONSE_SKIP:
                        response.headers.add(key, value)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientError, OSError) as e:
            if response is not None:  # the stream broke after its answer was recorded
                return response
            self._record(request, 502)
            return web.Response(status=502, text=f"recording proxy: upstream failed: {e}")

    def _record(self, request: web.Request, status: int) -> None:
        with self._lock:
            self._records.append(Recorded(
                index=len(self._records),
                method=request.method,
                path=request.path,
                query=request.query_string,
                status=status,
                user_agent=request.headers.get("User-Agent", ""),
                authorized="Authorization" in request.headers,
                at=time.monotonic(),
            ))

    # Reading -----------------------------------------------------------------------------

    def records(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    def write_kubeconfig(self, path: str | os.PathLike[str], token: str, namespace: str = "default") -> Path:
        """A kubeconfig for the client under test: this proxy, and ``token``."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "recorded", "cluster": {"server": self.url}}],
            "users": [{"name": "client", "user": {"token": token}}],
            "contexts": [
                {"name": "recorded", "context": {"cluster": "recorded", "user": "client", "namespace": namespace}}
            ],
            "current-context": "recorded",
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


def _trust_only(config: KubeConfig) -> ssl.SSLContext | bool:
    """TLS to the upstream with its CA (or none, as the kubeconfig says), and never a
    client certificate: the only credentials on the wire are the client's."""
    if not config.server.startswith("https"):
        return False
    if config.insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cadata=config.ca_data.decode() if config.ca_data else None)
