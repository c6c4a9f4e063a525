"""Run the real ``session-operator`` process for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OperatorProcess:
    def __init__(
        self,
        kubeconfig: Path,
        log_dir: Path,
        *,
        name: str = "operator",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        leader_elect: bool | None = False,
    ) -> None:
        """``leader_elect``: True, with short timings and the Lease in ``default``; False,
        without; None, neither: ``args`` carry the leader-election flags (say, the chart's)."""
        self.kubeconfig = kubeconfig
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.args = args
        self.env = env or {}
        self.leader_elect = leader_elect
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        cmd = [
            sys.executable, "-m", "session_operator", "run",
            "--kubeconfig", str(self.kubeconfig),
            "--metrics-port", str(self.metrics_port),
            "--health-port", str(self.health_port),
            "--bind-address", "127.0.0.1",
            "--log-level", "INFO",
        ]
        if self.leader_elect:
            cmd += [
                "--leader-elect", "--identity", self.name,
                "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5",
                "--leader-election-namespace", "default",
            ]
        elif self.leader_elect is False:
            cmd += ["--no-leader-elect"]
        return [*cmd, *self.args]

    def start(self, wait: bool = True) -> OperatorProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        env = {**os.environ, **self.env}
        src = str(Path(__file__).resolve().parents[2] / "operator")
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def _get(self, port: int, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> bool:
        """Serving: ready, and leading (or running without leader election)."""
        status, _ = self._get(self.health_port, "/readyz")
        return status == 200 and "session_operator_leader 1.0" in self.metrics()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready and leading: the session index is filled and reconciling has started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited with {self.proc.returncode}:\n{self.logs()[-4000:]}")
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"operator not ready after {timeout}s:\n{self.logs()[-4000:]}")

    def metrics(self) -> str:
        return self._get(self.metrics_port, "/metrics")[1]

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample (0 when absent)."""
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        needle = f"{name}{{{want}}}" if want else name
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == needle:
                return float(value)
        return 0.0

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode
