"""Run an :class:`Emulator` in its own event loop on a background thread (for pytest fixtures)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import threading
from typing import Any

from .control import EmulatorControl
from .server import Emulator


class EmulatorThread:
    """``with EmulatorThread(tls=True) as emu: emu.url, emu.write_kubeconfig(p), emu.control``.

    Keyword arguments go to :class:`Emulator`.
    """

    def __init__(self, **kwargs: Any) -> None:
        self.emulator = Emulator(**kwargs)
        self.control = EmulatorControl(self.emulator)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.emulator.url

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> pathlib.Path:
        return self.emulator.write_kubeconfig(path)

    def start(self, timeout: float = 30.0) -> EmulatorThread:
        self._thread = threading.Thread(target=self._run, name="k8s-api-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the API emulator did not start")
        if self._error is not None:
            raise RuntimeError("the API emulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.emulator.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.emulator.stop()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
