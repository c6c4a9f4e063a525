"""The real ``session-operator run`` process, as the integration tests start it
(``tests/support/operator_process.py``), plus what a benchmark reads of it: the time to
``/readyz`` 200 (polled without blocking the benchmark's loop), its resident memory and
its CPU time (from ``/proc``), and its ``/metrics``."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp

from support.operator_process import OperatorProcess

AGENT_PREFIX = "session-operator/"  # the operator's user agent (kube.py), as the emulator counts it


class Operator:
    def __init__(self, kubeconfig: Path, log_dir: Path, name: str, args: tuple[str, ...] = ()) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.process = OperatorProcess(kubeconfig, log_dir, name=name, args=args)
        self.started_at = 0.0

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def start(self) -> Operator:
        self.started_at = time.perf_counter()
        self.process.start(wait=False)
        return self

    def running(self) -> bool:
        return self.process.running()

    def exited(self) -> str | None:
        """Why waiting for it is pointless (it exited), or None while it runs."""
        if self.running():
            return None
        return f"the operator exited; its log ends:\n{self.process.logs()[-2000:]}"

    async def wait_ready(self, timeout: float, interval: float = 0.02) -> float:
        """Seconds from the start until ``/readyz`` answers 200."""
        url = f"http://127.0.0.1:{self.process.health_port}/readyz"
        deadline = self.started_at + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.perf_counter() < deadline:
                if not self.running():
                    raise RuntimeError(f"the operator exited:\n{self.process.logs()[-3000:]}")
                try:
                    async with http.get(url) as response:
                        if response.status == 200:
                            return time.perf_counter() - self.started_at
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                await asyncio.sleep(interval)
        raise TimeoutError(f"the operator was not ready within {timeout:.0f}s")

    async def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.process.metrics_port}/metrics"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http, http.get(url) as response:
            return await response.text()

    def rss_bytes(self) -> int:
        """VmRSS from /proc/<pid>/status (the process's resident memory now)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time so far, from /proc/<pid>/stat."""
        return process_cpu_seconds(self.pid)

    def stop(self) -> None:
        self.process.stop()

    def logs(self) -> str:
        return self.process.logs()


def process_cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
