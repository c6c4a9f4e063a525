"""The HTTP side: routing, discovery, watch streaming, auth, faults, control endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pathlib
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from . import openapi, protobuf, tls
from .admission import Admission, AdmissionRequired, WebhookClient, warning_headers
from .api import CRD_KEY, Api
from .errors import (
    ApiError,
    bad_request,
    conflict,
    internal_error,
    method_not_allowed,
    path_not_found,
    too_many_requests,
    unauthorized,
    unsupported_media_type,
)
from .faults import Faults, RequestCounter
from .resources import ResourceType, storage_version_hash
from .store import Store, Watcher
from .table import to_table, wants_table
from .tls import ServerCerts

log = logging.getLogger("kube_emulator")

VERSION_INFO = {
    "major": "1",
    "minor": "24",
    "gitVersion": "v1.24.0-emulator",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "1970-01-01T00:00:00Z",
    "goVersion": "go1.18",
    "compiler": "gc",
    "platform": "linux/amd64",
}
CONTROL_PREFIX = "/_emulator"
# A write is attempted again after each round of webhook calls (see admission.py); it settles
# unless other writes keep changing what it admits.
_ADMISSION_ROUNDS = 1000
_CR_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=_dumps(obj), status=status, content_type="application/json", headers=headers)


def _error_response(err: ApiError) -> web.Response:
    response = _json_response(err.status(), status=err.code, headers=err.headers or None)
    _add_warnings(response, err.warnings)
    return response


def _add_warnings(response: web.StreamResponse, texts: list[str]) -> None:
    for header in warning_headers(texts):
        response.headers.add("Warning", header)


@dataclass
class Route:
    group: str
    version: str
    plural: str
    namespace: str | None
    name: str | None
    sub: str | None


def parse_route(path: str) -> Route | str | None:
    """Returns a Route for resource paths, a discovery key (str) or None (404)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "api":
        if len(parts) == 1:
            return "api"
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) == 1:
            return "apis"
        if len(parts) == 2:
            return "group:" + parts[1]
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return f"version:{group}/{version}"
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        if len(rest) > 5:
            return None
        return Route(
            group, version, rest[2], rest[1], rest[3] if len(rest) > 3 else None, rest[4] if len(rest) > 4 else None
        )
    if len(rest) > 3:
        return None
    return Route(group, version, rest[0], None, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


class Emulator:
    """An in-memory Kubernetes API server for tests (see the package docstring)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool = False,
        watch_history: int = 2000,
        token: str | None = None,
        bookmark_interval: float = 30.0,
        default_watch_timeout: tuple[float, float] = (1800.0, 3600.0),
        crds: Iterable[str | os.PathLike[str] | dict[str, Any]] = (),
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the emulator only binds loopback addresses")
        self.host = host
        self.port = port
        self.tls = tls
        self.token = token or secrets.token_hex(16)
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.store = Store(history_size=watch_history)
        self.api = Api(self.store)
        self.faults = Faults()
        self.requests = RequestCounter()
        self.webhooks = WebhookClient()
        self.certs: ServerCerts | None = None
        self._initial_crds = list(crds)
        self._runner: web.AppRunner | None = None
        self._controller_wake: asyncio.Event | None = None
        self._controller_task: asyncio.Task[None] | None = None
        self._watch_tasks: set[Watcher] = set()
        self._watch_routes: dict[Watcher, str] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> bytes | None:
        return self.certs.ca_pem if self.certs is not None else None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._controller_wake = asyncio.Event()
        self.api.on_change = self._controller_wake.set
        self._controller_task = asyncio.create_task(self._controllers())
        for crd in self._initial_crds:
            self.apply_crd(crd)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        ssl_context = None
        if self.tls:
            self.certs = tls.make_certs()
            ssl_context = self.certs.ssl_context()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=ssl_context, backlog=1024)
        await site.start()
        server = site._server
        if server is not None and self.port == 0:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for watcher in list(self._watch_tasks):
            watcher.close()
        if self._controller_task is not None:
            self._controller_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._controller_task
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.webhooks.close()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> pathlib.Path:
        return tls.write_kubeconfig(path, self.url, self.token, self.ca_pem)

    def apply_crd(self, crd: str | os.PathLike[str] | dict[str, Any]) -> None:
        """Create (or replace) CRDs from a dict or a YAML file, in-process (no HTTP)."""
        docs: list[dict[str, Any]] = (
            [crd] if isinstance(crd, dict) else [d for d in yaml.safe_load_all(pathlib.Path(crd).read_text()) if d]
        )
        rt = self.api.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for doc in docs:
            name = doc["metadata"]["name"]
            existing = self.store.bucket(CRD_KEY).get("", name)
            if existing is None:
                self.api.create(rt, "v1", None, doc)
            else:
                body = dict(doc)
                body["metadata"] = dict(doc["metadata"], resourceVersion=existing["metadata"]["resourceVersion"])
                self.api.update(rt, "v1", None, name, body)
            self.api.establish(name)

    async def _controllers(self) -> None:
        assert self._controller_wake is not None
        while True:
            pending = False
            try:
                pending = self.api.run_controllers()
            except Exception:  # never let a controller bug kill the loop
                log.exception("Emulated controllers failed")
            self._controller_wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5 if pending else None):
                    await self._controller_wake.wait()

    # ------------------------------------------------------------------ control API (in-loop)

    def drop_watches(self, abort: bool = True) -> int:
        """Close every open watch now (``abort``: cut the connection instead of ending the stream)."""
        watchers = list(self._watch_tasks)
        for watcher in watchers:
            watcher.close(abort=abort)
        return len(watchers)

    def open_watches(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for watcher in self._watch_tasks:
            key = self._watch_routes.get(watcher, "?")
            out[key] = out.get(key, 0) + 1
        return out

    def compact(self) -> None:
        self.store.compact()

    def set_watch_history(self, size: int) -> None:
        self.store.set_history_size(size)

    def bulk_load(self, items: list[dict[str, Any]], refs: bool = False) -> dict[str, Any]:
        """Apply many writes at once, each exactly as its API request would (no HTTP).

        Each item is ``{"path": <collection path>, "body": {...}}`` (a create, as a POST to
        that path: uid, resourceVersion, creationTimestamp, generation, defaulting and
        validation as usual), optionally with ``"status": {...}``, which is then written
        through the status subresource as a PUT to ``.../status`` would (generation
        unchanged); or ``{"op": "status", "path": <object path>, "status": {...}}``,
        optionally with ``"resourceVersion"`` (409 if stale), for an object that exists.
        Watchers see the same events as for the requests. Stops at the first failure.

        Returns ``{"applied": n, "resourceVersion": rv, "refs": [[namespace, name, uid,
        resourceVersion], ...] (with ``refs``), "error": {"index": i, "status": Status}
        (only on failure)}``. Not counted as requests; blocks the server while it runs.
        """
        applied = 0
        out: list[list[str]] = []
        result: dict[str, Any] = {}
        for index, item in enumerate(items):
            try:
                obj = self._bulk_one(item)
            except ApiError as err:
                result["error"] = {"index": index, "status": err.status()}
                break
            applied += 1
            if refs:
                meta = obj["metadata"]
                out.append([meta.get("namespace", ""), meta["name"], meta["uid"], meta["resourceVersion"]])
        result.update(applied=applied, resourceVersion=str(self.store.rv))
        if refs:
            result["refs"] = out
        return result

    def _bulk_one(self, item: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise bad_request("each bulk item needs a path")
        route = parse_route(item["path"])
        if not isinstance(route, Route):
            raise path_not_found()
        rt = self.api.resolve(route.group, route.version, route.plural)
        self.api.field_validation = ""
        self.api.warnings = []
        op = item.get("op", "create")
        if op == "create":
            if route.name is not None or route.sub is not None or (rt.namespaced and route.namespace is None):
                raise method_not_allowed()
            obj = self.api.create(rt, route.version, route.namespace, item.get("body"))
            if "status" in item:
                obj = self._bulk_status(rt, route, obj, item["status"], None)
            return obj
        if op == "status":
            if route.name is None or route.sub not in (None, "status"):
                raise path_not_found()
            existing = self.api.get(rt, route.version, route.namespace, route.name)
            return self._bulk_status(rt, route, existing, item.get("status"), item.get("resourceVersion"))
        raise bad_request(f"unknown bulk op {op!r} (use create or status)")

    def _bulk_status(
        self, rt: ResourceType, route: Route, obj: dict[str, Any], status: Any, resource_version: str | None
    ) -> dict[str, Any]:
        if not (rt.has_status(route.version) if not rt.builtin else "status" in rt.subresources):
            raise path_not_found()
        meta = dict(obj["metadata"])
        if resource_version:
            meta["resourceVersion"] = resource_version
        body = {**obj, "metadata": meta, "status": status}
        _, written = self.api.update(rt, route.version, route.namespace, meta["name"], body, "status")
        return written

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(CONTROL_PREFIX + "/") or path == CONTROL_PREFIX:
            try:
                return await self._control(request)
            except ApiError as err:
                return _error_response(err)
        try:
            if not self._authorized(request):
                raise unauthorized()
            return await self._api_request(request)
        except ApiError as err:
            return _error_response(err)
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # a bug in the emulator: answer like an apiserver would
            log.exception("Emulator failed on %s %s", request.method, request.path_qs)
            return _error_response(internal_error(f"emulator: {exc!r}"))

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header == f"Bearer {self.token}"

    async def _api_request(self, request: web.Request) -> web.StreamResponse:
        method = request.method.upper()
        params = dict(request.query)
        agent = request.headers.get("User-Agent", "").split(" ")[0] or "-"
        route = parse_route(request.path)
        if route is None and request.path in ("/version", "/version/"):
            self.requests.add("get version", agent)
            await self._inject(method, request.path, False, None, None)
            return _json_response(VERSION_INFO)
        if route is None or isinstance(route, str):
            if route is not None and method == "GET":
                self.requests.add("get discovery", agent)
                await self._inject(method, request.path, False, None, None)
                return _json_response(self._discovery(route, request))
            if request.path in ("/healthz", "/readyz", "/livez"):
                return web.Response(text="ok")
            if method == "GET" and request.path.rstrip("/").startswith("/openapi/v3"):
                self.requests.add("get openapi", agent)
                return self._openapi(request.path.rstrip("/"))
            raise path_not_found()
        rt = self.api.resolve(route.group, route.version, route.plural)
        if route.sub is not None:
            if route.sub != "status" or not (
                rt.has_status(route.version) if not rt.builtin else "status" in rt.subresources
            ):
                raise path_not_found()
            if route.name is None:
                raise path_not_found()
        if rt.namespaced and route.namespace is None and route.name is not None:
            raise path_not_found()
        if not rt.namespaced and route.namespace is not None:
            raise path_not_found()
        watch = method == "GET" and route.name is None and params.get("watch") in ("true", "1")
        verb = self._verb(method, route, watch)
        resource = route.plural + (f"/{route.sub}" if route.sub else "")
        self.requests.add(f"{verb} {resource}", agent)
        await self._inject(method, request.path, watch, rt, route.name)
        dry_run = params.get("dryRun") == "All"
        self.api.field_validation = params.get("fieldValidation", "")
        self.api.warnings = []
        return await self._dispatch(request, rt, route, params, method, watch, dry_run)

    async def _dispatch(
        self,
        request: web.Request,
        rt: ResourceType,
        route: Route,
        params: dict[str, str],
        method: str,
        watch: bool,
        dry_run: bool,
    ) -> web.StreamResponse:
        version, namespace, name = route.version, route.namespace, route.name
        if watch:
            return await self._watch(request, rt, route, params)
        if method == "GET":
            if name is None:
                result = self.api.list(rt, version, namespace, params)
                if wants_table(request.headers.get("Accept", "")):
                    return _json_response(to_table(rt, version, result, is_list=True))
                return _json_response(result)
            obj = self.api.get(rt, version, namespace, name)
            if wants_table(request.headers.get("Accept", "")):
                return _json_response(to_table(rt, version, obj, is_list=False))
            return _json_response(obj)
        body = await self._body(request)
        raw = await request.read() if method == "PATCH" else b""
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            raise method_not_allowed()

        def write() -> web.Response:
            if method == "POST":
                if name is not None or (rt.namespaced and namespace is None):
                    raise method_not_allowed()
                return _json_response(self.api.create(rt, version, namespace, body, dry_run=dry_run), status=201)
            if name is None:
                if method == "DELETE":
                    options = dict(body) if isinstance(body, dict) else {}
                    return _json_response(
                        self.api.delete_collection(rt, version, namespace, params, options, dry_run=dry_run)
                    )
                raise method_not_allowed()
            if method == "PUT":
                code, obj = self.api.update(rt, version, namespace, name, body, route.sub, dry_run=dry_run)
                return _json_response(obj, status=code)
            if method == "PATCH":
                content_type = request.headers.get("Content-Type", "")
                return _json_response(
                    self.api.patch(rt, version, namespace, name, content_type, raw, route.sub, dry_run)
                )
            if route.sub is not None:
                raise method_not_allowed()
            options = dict(body) if isinstance(body, dict) else {}
            for key in ("propagationPolicy", "gracePeriodSeconds"):
                if key in params:
                    options.setdefault(key, params[key])
            return _json_response(self.api.delete(rt, version, namespace, name, options, dry_run=dry_run))

        return await self._admitted(write, params, dry_run)

    async def _admitted(
        self, write: Callable[[], web.Response], params: dict[str, str], dry_run: bool
    ) -> web.Response:
        """Run a write, calling the validating webhooks it needs between attempts (admission.py);
        answers the warnings of the write and of the webhooks as Warning headers."""
        admission = Admission(self.api, self.webhooks, params, dry_run)
        field_validation = params.get("fieldValidation", "")
        for _ in range(_ADMISSION_ROUNDS):
            # the per-request state is set again: other requests ran while the webhooks were called
            self.api.field_validation = field_validation
            self.api.warnings = []
            self.api.admission = admission
            try:
                response = write()
            except AdmissionRequired as need:
                pending = need
            except ApiError as err:
                err.warnings = list(admission.warnings)
                raise
            else:
                _add_warnings(response, self.api.warnings + admission.warnings)
                return response
            finally:
                self.api.admission = None
            await admission.call(pending)
        raise internal_error("admission did not settle: the object kept changing while its webhooks were called")

    def _openapi(self, path: str) -> web.Response:
        docs = openapi.all_documents(self.api)
        if path == "/openapi/v3":
            return _json_response(openapi.root_document(self.api.group_versions(), docs))
        doc = docs.get(path[len("/openapi/v3/") :])
        if doc is None:
            raise path_not_found()
        return _json_response(doc)

    @staticmethod
    def _verb(method: str, route: Route, watch: bool) -> str:
        if watch:
            return "watch"
        if method == "GET":
            return "list" if route.name is None else "get"
        if method == "POST":
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if route.name is not None else "deletecollection"
        return method.lower()

    async def _body(self, request: web.Request) -> Any:
        if request.method.upper() == "PATCH":
            return None
        raw = await request.read()
        if not raw.strip():
            if request.method.upper() in ("DELETE",):
                return {}
            raise bad_request("the body of the request was empty")
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if content_type == "application/vnd.kubernetes.protobuf":
            try:
                return protobuf.decode(raw)
            except (protobuf.ProtobufError, UnicodeDecodeError) as exc:
                raise unsupported_media_type(
                    content_type, ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
                ) from exc
        try:
            if content_type in ("application/yaml", "application/x-yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except ValueError as exc:
            raise bad_request(f"error decoding request body: {exc}") from exc

    async def _inject(self, method: str, path: str, watch: bool, rt: ResourceType | None, name: str | None) -> None:
        delay, failure = self.faults.match(method, path, watch)
        if delay:
            await asyncio.sleep(delay)
        if failure is None:
            return
        if failure.status == 429:
            raise too_many_requests(failure.retry_after)
        if failure.status == 409 and rt is not None:
            raise conflict(rt.names, name or "")
        if failure.status in (503, 504):
            code = failure.status
            reason = "ServiceUnavailable" if code == 503 else "Timeout"
            raise ApiError(code, reason, "injected fault", {})
        raise internal_error("injected fault")

    # ------------------------------------------------------------------ discovery

    def _discovery(self, key: str, request: web.Request) -> dict[str, Any]:
        if key == "api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                ],
            }
        groups = self.api.group_versions()
        if key == "apis":
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._group(g, vs) for g, vs in groups.items() if g],
            }
        if key.startswith("group:"):
            group = key.split(":", 1)[1]
            if group not in groups or not group:
                raise path_not_found()
            return dict(kind="APIGroup", apiVersion="v1", **self._group(group, groups[group]))
        group, version = key.split(":", 1)[1].split("/")
        if group == "" and version != "v1":
            raise path_not_found()
        if group and version not in groups.get(group, []):
            raise path_not_found()
        resources = []
        for rt in self.api.resources_in(group, version):
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": "" if rt.builtin else rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs if rt.builtin else _CR_VERBS),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            entry["storageVersionHash"] = storage_version_hash(rt.group, rt.storage_version, rt.kind)
            resources.append(entry)
            has_status = rt.has_status(version) if not rt.builtin else "status" in rt.subresources
            if has_status:
                resources.append(
                    {
                        "name": f"{rt.plural}/status",
                        "singularName": "",
                        "namespaced": rt.namespaced,
                        "kind": rt.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        _ = request
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": resources,
        }

    @staticmethod
    def _group(group: str, versions: list[str]) -> dict[str, Any]:
        return {
            "name": group,
            "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
            "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]},
        }

    # ------------------------------------------------------------------ watch

    async def _watch(
        self, request: web.Request, rt: ResourceType, route: Route, params: dict[str, str]
    ) -> web.StreamResponse:
        predicate = self.api.selector(rt, params)
        rv_text = params.get("resourceVersion", "")
        since: int | None
        if rv_text in ("", "0"):
            since = None
        else:
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {rv_text}") from exc
        if params.get("timeoutSeconds"):
            try:
                timeout = float(params["timeoutSeconds"])
            except ValueError as exc:
                raise bad_request(f"invalid timeoutSeconds: {params['timeoutSeconds']}") from exc
        else:
            timeout = random.uniform(*self.default_watch_timeout)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        namespace = route.namespace if rt.namespaced else None
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher, backlog = self.store.watch(rt.storage_key, namespace, predicate, since)
        except ApiError as err:
            await response.prepare(request)
            await response.write(_dumps({"type": "ERROR", "object": err.status()}) + b"\n")
            await response.write_eof()
            return response
        self._watch_tasks.add(watcher)
        self._watch_routes[watcher] = route.plural
        version = route.version
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + self.bookmark_interval
        try:
            await response.prepare(request)
            as_table = wants_table(request.headers.get("Accept", ""))
            headers_sent = False

            def render(obj: dict[str, Any]) -> dict[str, Any]:
                nonlocal headers_sent
                shown = self.api.present(rt, version, obj)
                if not as_table:
                    return shown
                table = to_table(rt, version, shown, is_list=False)
                if headers_sent:
                    table["columnDefinitions"] = []
                headers_sent = True
                return table

            for kind, obj in backlog:
                await response.write(_event_line(kind, render(obj)))
            while not watcher.closed or not watcher.queue.empty():
                now = time.monotonic()
                if now >= deadline:
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline, now + 1.0) - now
                item: tuple[str, dict[str, Any]] | None
                try:
                    async with asyncio.timeout(max(wait, 0.0)):
                        item = await watcher.queue.get()
                except TimeoutError:
                    transport = request.transport
                    if transport is None or transport.is_closing():
                        break
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await response.write(_event_line("BOOKMARK", self._bookmark(rt, version)))
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                if item is None:
                    break
                kind, obj = item
                await response.write(_event_line(kind, render(obj)))
            if watcher.abort:
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return response
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            watcher.close()
            self.store.unwatch(rt.storage_key, watcher)
            self._watch_tasks.discard(watcher)
            self._watch_routes.pop(watcher, None)
        return response

    def _bookmark(self, rt: ResourceType, version: str) -> dict[str, Any]:
        if rt.builtin:
            return {
                "kind": rt.kind,
                "apiVersion": rt.api_version(version),
                "metadata": {"resourceVersion": str(self.store.rv), "creationTimestamp": None},
            }
        return {
            "apiVersion": rt.api_version(version),
            "kind": rt.kind,
            "metadata": {"resourceVersion": str(self.store.rv)},
        }

    # ------------------------------------------------------------------ control endpoints

    async def _control(self, request: web.Request) -> web.Response:
        sub = request.path[len(CONTROL_PREFIX) :].strip("/")
        method = request.method.upper()
        body: dict[str, Any] = {}
        if method in ("POST", "PUT"):
            raw = await request.read()
            if raw.strip():
                body = json.loads(raw)
        if sub == "healthz":
            return _json_response({"ok": True, "url": self.url})
        if sub == "requests":
            if method == "GET":
                return _json_response(self.requests.snapshot())
            if method in ("DELETE", "POST"):
                snapshot = self.requests.snapshot()
                self.requests.reset()
                return _json_response(snapshot)
        if sub == "faults":
            if method == "GET":
                return _json_response({"rules": self.faults.describe()})
            if method == "DELETE":
                self.faults.clear()
                return _json_response({"rules": []})
        if sub == "faults/delay" and method == "POST":
            rule = self.faults.add_delay(
                float(body.get("seconds", 0)),
                method=body.get("method"),
                path=body.get("path"),
                count=body.get("count"),
                include_watches=bool(body.get("includeWatches", False)),
            )
            return _json_response({"id": rule})
        if sub == "faults/fail" and method == "POST":
            try:
                rule = self.faults.fail_next(
                    int(body.get("count", 1)),
                    status=int(body.get("status", 500)),
                    method=body.get("method"),
                    path=body.get("path"),
                    retry_after=int(body.get("retryAfter", 1)),
                )
            except ValueError as exc:
                raise bad_request(str(exc)) from exc
            return _json_response({"id": rule})
        if sub == "faults/drop-watches" and method == "POST":
            return _json_response({"dropped": self.drop_watches(abort=bool(body.get("abort", True)))})
        if sub == "watches" and method == "GET":
            return _json_response({"open": len(self._watch_tasks), "byResource": self.open_watches()})
        if sub == "compact" and method == "POST":
            self.compact()
            return _json_response({"resourceVersion": str(self.store.rv)})
        if sub == "history" and method in ("POST", "PUT"):
            self.set_watch_history(int(body["size"]))
            return _json_response({"size": self.store.history_size})
        if sub == "bulk" and method == "POST":
            items = body.get("items")
            if not isinstance(items, list):
                raise bad_request("bulk: items must be a list")
            return _json_response(self.bulk_load(items, refs=bool(body.get("refs", False))))
        if sub == "state" and method == "GET":
            return _json_response(
                {
                    "resourceVersion": str(self.store.rv),
                    "objects": {"/".join(k) or "core": b.count for k, b in self.store.buckets.items()},
                }
            )
        raise path_not_found()


def _event_line(kind: str, obj: dict[str, Any]) -> bytes:
    return _dumps({"type": kind, "object": obj}) + b"\n"
