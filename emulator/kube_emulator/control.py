"""Control handles for a running emulator: the same API in-process (thread-safe) or over HTTP.

Both offer::

    add_delay(seconds, method=None, path=None, count=None, include_watches=False) -> rule id
    fail_next(count=1, status=500, method=None, path=None, retry_after=1) -> rule id
    clear_faults()
    drop_watches(abort=True) -> number of watches closed
    request_counts() -> {"counts": {"list sessions": 3, ...}, "byAgent": {...}, "total": n}
    reset_request_counts() -> the counts before the reset
    open_watches() -> {"open": n, "byResource": {"sessions": 2, ...}}
    compact()                 # forget watch history: older resourceVersions get 410 Gone
    set_watch_history(size)   # events kept per resource
    bulk_load(items, refs=False) -> {"applied": n, "resourceVersion": rv, ...}
                              # many creates / status writes at once, each stored exactly as
                              # its request would be (see Emulator.bulk_load); for loading
                              # tens of thousands of objects in seconds

In-process only: ``apply_crd(dict_or_path)``, ``set_bookmark_interval(seconds)``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .server import Emulator

T = TypeVar("T")


class EmulatorControl:
    """Drives an :class:`Emulator` that runs in another thread's event loop."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def _call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        loop = self.emulator.loop
        assert loop is not None, "the emulator is not running"
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=timeout)

    def add_delay(
        self,
        seconds: float,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
        include_watches: bool = False,
    ) -> int:
        return self._call(
            lambda: self.emulator.faults.add_delay(
                seconds, method=method, path=path, count=count, include_watches=include_watches
            )
        )

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        retry_after: int = 1,
    ) -> int:
        return self._call(
            lambda: self.emulator.faults.fail_next(
                count, status=status, method=method, path=path, retry_after=retry_after
            )
        )

    def clear_faults(self) -> None:
        self._call(self.emulator.faults.clear)

    def drop_watches(self, abort: bool = True) -> int:
        return self._call(lambda: self.emulator.drop_watches(abort=abort))

    def request_counts(self) -> dict[str, Any]:
        return self._call(self.emulator.requests.snapshot)

    def reset_request_counts(self) -> dict[str, Any]:
        def reset() -> dict[str, Any]:
            snapshot = self.emulator.requests.snapshot()
            self.emulator.requests.reset()
            return snapshot

        return self._call(reset)

    def open_watches(self) -> dict[str, Any]:
        def describe() -> dict[str, Any]:
            by_resource = self.emulator.open_watches()
            return {"open": sum(by_resource.values()), "byResource": by_resource}

        return self._call(describe)

    def compact(self) -> None:
        self._call(self.emulator.compact)

    def bulk_load(self, items: list[dict[str, Any]], refs: bool = False, timeout: float = 600.0) -> dict[str, Any]:
        return self._call(lambda: self.emulator.bulk_load(items, refs=refs), timeout=timeout)

    def apply_crd(self, crd: Any) -> None:
        """Create or replace CRDs (dict or YAML path) and serve them at once (in-process only)."""
        self._call(lambda: self.emulator.apply_crd(crd))

    def set_bookmark_interval(self, seconds: float) -> None:
        """How often open watches that allow bookmarks get one (default 30 s; in-process only)."""

        def apply() -> None:
            self.emulator.bookmark_interval = seconds

        self._call(apply)

    def set_watch_history(self, size: int) -> None:
        self._call(lambda: self.emulator.set_watch_history(size))


class HttpEmulatorControl:
    """The same API through the ``/_emulator/...`` endpoints (for an emulator in another process)."""

    def __init__(self, url: str, ca_pem: bytes | None = None) -> None:
        self.url = url.rstrip("/")
        self._context: ssl.SSLContext | None = None
        if self.url.startswith("https"):
            self._context = ssl.create_default_context(cadata=ca_pem.decode() if ca_pem else None)
            if ca_pem is None:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"{self.url}/_emulator/{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, context=self._context, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")

    def add_delay(
        self,
        seconds: float,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
        include_watches: bool = False,
    ) -> int:
        body = {"seconds": seconds, "method": method, "path": path, "count": count, "includeWatches": include_watches}
        return int(self._request("POST", "faults/delay", body)["id"])

    def fail_next(
        self,
        count: int = 1,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        retry_after: int = 1,
    ) -> int:
        body = {"count": count, "status": status, "method": method, "path": path, "retryAfter": retry_after}
        return int(self._request("POST", "faults/fail", body)["id"])

    def clear_faults(self) -> None:
        self._request("DELETE", "faults")

    def drop_watches(self, abort: bool = True) -> int:
        return int(self._request("POST", "faults/drop-watches", {"abort": abort})["dropped"])

    def request_counts(self) -> dict[str, Any]:
        return self._request("GET", "requests")

    def reset_request_counts(self) -> dict[str, Any]:
        return self._request("DELETE", "requests")

    def open_watches(self) -> dict[str, Any]:
        return self._request("GET", "watches")

    def compact(self) -> None:
        self._request("POST", "compact", {})

    def set_watch_history(self, size: int) -> None:
        self._request("POST", "history", {"size": size})

    def bulk_load(self, items: list[dict[str, Any]], refs: bool = False, timeout: float = 600.0) -> dict[str, Any]:
        """One request (the server takes up to 16 MiB a request: send big loads in batches)."""
        return self._request("POST", "bulk", {"items": items, "refs": refs}, timeout=timeout)
