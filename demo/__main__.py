"""``make demo``: the operator against the embedded API emulator, in three short scenes.

Starts the emulator (an in-memory Kubernetes API server), registers the Session CRD,
starts ``session-operator run`` as a real process, and then walks through a conflict, a
queue promotion and a replacement, printing what ``kubectl get sess`` and the conditions
would show. With ``--keep`` it stays up afterwards so that you can point kubectl at it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from session_operator.kube import Kube, NotFound
from session_operator.model import GROUP, PLURAL, VERSION, claim_name, parse_time

ROOT = Path(__file__).resolve().parents[1]
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _age(created: str | None) -> str:
    when = parse_time(created)
    if when is None:
        return "<unknown>"
    seconds = max(0, int((datetime.now(UTC) - when).total_seconds()))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"


class Demo:
    def __init__(self, workdir: Path, namespace: str = "demo") -> None:
        self.workdir = workdir
        self.namespace = namespace
        self.kube: Kube | None = None
        self.operator: subprocess.Popen[bytes] | None = None
        self.health_port = _free_port()
        self.metrics_port = _free_port()

    # --- set-up ----------------------------------------------------------------------------

    async def connect(self, kubeconfig: Path) -> None:
        self.kube = await Kube.connect(str(kubeconfig))

    async def install_crd(self) -> None:
        assert self.kube is not None
        for name in ("sessions.session-operator.io.yaml", "sessionpolicies.session-operator.io.yaml"):
            crd = yaml.safe_load((ROOT / "crds" / name).read_text())
            await self.kube.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body=crd)
        for plural in ("sessions", "sessionpolicies"):
            for _ in range(100):
                try:
                    await self.kube.request("GET", f"/apis/{GROUP}/{VERSION}/{plural}")
                    break
                except NotFound:
                    await asyncio.sleep(0.05)
        await self.kube.request(
            "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": self.namespace}}
        )

    def start_operator(self, kubeconfig: Path) -> None:
        log = (self.workdir / "operator.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "operator") + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "session_operator", "run", "--kubeconfig", str(kubeconfig),
             "--no-leader-elect", "--bind-address", "127.0.0.1",
             "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.operator.poll() is not None:
                raise SystemExit(f"the operator exited; see {self.workdir / 'operator.log'}")
            url = f"http://127.0.0.1:{self.health_port}/readyz"
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
            time.sleep(0.1)
        raise SystemExit(f"the operator did not become ready; see {self.workdir / 'operator.log'}")

    def stop_operator(self) -> None:
        if self.operator is not None and self.operator.poll() is None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                self.operator.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.operator.kill()

    # --- acting like a user -------------------------------------------------------------------

    def _path(self, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path

    async def apply(self, example: str) -> None:
        assert self.kube is not None
        print(f"{BOLD}$ kubectl apply -f examples/{example}{RESET}")
        for doc in yaml.safe_load_all((ROOT / "examples" / example).read_text()):
            if not doc:
                continue
            if doc.get("kind") == "SessionPolicy":  # cluster-scoped, written by the cluster's owners
                await self.kube.request("POST", f"/apis/{GROUP}/{VERSION}/sessionpolicies", body=doc)
                print(f"sessionpolicy.session-operator.io/{doc['metadata']['name']} created")
                await self.policy_in_force(doc["metadata"]["name"])
                continue
            await self.kube.request("POST", self._path(), body=doc)
            print(f"session.session-operator.io/{doc['metadata']['name']} created")

    async def policy_in_force(self, name: str) -> None:
        """Until the operator reports the policy in force (its session_policies gauge)."""
        line = f'session_operator_session_policies{{name="{name}",state="in-force"}} 1.0'
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        for _ in range(200):
            text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=2).read().decode())
            if line in text:
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the operator did not report SessionPolicy {name} in force")

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        assert self.kube is not None
        patch = json.dumps({"spec": spec})
        print(f"{BOLD}$ kubectl patch sess {name} --type merge -p '{patch}'{RESET}")
        await self.kube.request("PATCH", self._path(name), body={"spec": spec},
                                content_type="application/merge-patch+json")
        print(f"session.session-operator.io/{name} patched")

    async def sessions(self) -> list[dict[str, Any]]:
        assert self.kube is not None
        return list((await self.kube.request("GET", self._path())).get("items", []))

    async def settle(self, names: list[str], within: float = 15.0) -> None:
        """Wait until the operator has decided every named session's current generation."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            items = {s["metadata"]["name"]: s for s in await self.sessions()}
            if all(
                n in items
                and (items[n].get("status") or {}).get("observedGeneration") == items[n]["metadata"]["generation"]
                for n in names
            ):
                await asyncio.sleep(0.3)  # let promotions that follow land too
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"the operator did not decide {names} in {within}s; see {self.workdir / 'operator.log'}")

    async def get_sess(self, names: list[str] | None = None) -> None:
        print(f"{BOLD}$ kubectl get sess{RESET}")
        rows = [("NAME", "TARGET", "PROFILE", "PHASE", "HOLDER", "AGE")]
        for item in await self.sessions():
            name = item["metadata"]["name"]
            if names is not None and name not in names:
                continue
            spec, status = item.get("spec") or {}, item.get("status") or {}
            rows.append((name, spec.get("target", ""), spec.get("profile", ""), status.get("phase", ""),
                         (status.get("holder") or {}).get("name", ""), _age(item["metadata"].get("creationTimestamp"))))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        print()

    async def conditions(self, name: str) -> None:
        assert self.kube is not None
        print(f"{BOLD}$ kubectl get sess {name} -o jsonpath='{{.status.conditions}}'{RESET}  (as a table)")
        item = await self.kube.request("GET", self._path(name))
        status = item.get("status") or {}
        for cond in status.get("conditions", []):
            print(f"  {cond['type']:<12} {cond['status']:<6} {cond['reason']:<17} {cond.get('message', '')}")
        extra = {k: status[k] for k in ("queuePosition", "replacedBy", "replaces") if k in status}
        if extra:
            print(f"  {DIM}{extra}{RESET}")
        print()

    async def claim(self, target: str) -> None:
        assert self.kube is not None
        name = claim_name(target)
        jsonpath = "{.spec.holderIdentity} {.spec.leaseTransitions}"
        print(f"{BOLD}$ kubectl get lease {name} -o jsonpath='{jsonpath}'{RESET}")
        try:
            lease = await self.kube.get_lease(self.namespace, name)
            print(f"{lease['spec'].get('holderIdentity')} {lease['spec'].get('leaseTransitions', 0)}\n")
        except NotFound:
            print("(no claim: the target is free)\n")

    async def events(self, names: list[str]) -> None:
        assert self.kube is not None
        print(f"{BOLD}$ kubectl get events --field-selector involvedObject.kind=Session{RESET}")
        await asyncio.sleep(0.3)
        listing = await self.kube.request("GET", f"/api/v1/namespaces/{self.namespace}/events")
        for event in sorted(listing.get("items", []), key=lambda e: int(e["metadata"].get("resourceVersion", "0"))):
            obj = event.get("involvedObject") or {}
            if obj.get("name") in names:
                print(f"  {event.get('type', ''):<8} {event.get('reason', ''):<10} session/{obj['name']:<12} "
                      f"{event.get('message', '')}")
        print()


def _scene(title: str, text: str) -> None:
    print(f"\n{BOLD}== {title} =={RESET}\n{text}\n")


async def _walkthrough(demo: Demo) -> None:
    _scene("1. A conflict", "Two previews for one shop, applied at the same instant. One wins; the other is "
           "rejected and told who is in the way.")
    await demo.apply("02-rejected-conflict.yaml")
    await demo.settle(["preview-a", "preview-b"])
    await demo.get_sess(["preview-a", "preview-b"])
    await demo.conditions("preview-b")

    _scene("2. A queue", "A device held by one deploy; three more wait, highest priority first. When the "
           "holder completes, the head of the queue takes over at once.")
    await demo.apply("03-queue-with-priorities.yaml")
    queue = ["deploy-main", "deploy-a", "deploy-b", "deploy-c"]
    await demo.settle(queue)
    await demo.get_sess(queue)
    await demo.patch_spec("deploy-main", {"state": "Completed"})
    await demo.settle(queue)
    await demo.get_sess(queue)
    print(f"{DIM}deploy-b, now first in line, is written with the promotion; sessions further back are\n"
          f"refreshed after it, at most --queue-refresh-rate writes a second per target, so a promotion's\n"
          f"own path costs a few writes however long the queue, and every waiting session shows the truth\n"
          f"within seconds.{RESET}\n")
    await demo.conditions("deploy-a")
    await demo.claim("device/7")

    _scene("3. A replacement", "A newer chat for the same user replaces the active one: the old session is "
           "written Replaced before the claim moves, then the new one shows Active.")
    await demo.apply("04-replace.yaml")
    await demo.settle(["chat-1", "chat-2"])
    await demo.get_sess(["chat-1", "chat-2"])
    await demo.conditions("chat-1")
    await demo.claim("user/alice")

    _scene("4. Governed targets", "A SessionPolicy written by the cluster's owners: at most one Active staging "
           "environment per owner, and no Replace. A second one of the same owner is rejected for the cap, and a "
           "Replace is Invalid, each message naming the policy and its rule.")
    await demo.apply("08-session-policy.yaml")
    staging = ["staging-1", "staging-2", "staging-3"]
    await demo.settle(staging)
    await demo.get_sess(staging)
    await demo.conditions("staging-2")
    await demo.events(["chat-1", "chat-2", "preview-b", "deploy-a", "staging-2"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--keep", action="store_true", help="stay up after the walkthrough until Ctrl-C")
    parser.add_argument("--workdir", default=str(ROOT / ".demo"), help="where the kubeconfig and logs go")
    args = parser.parse_args(argv)

    from kube_emulator import EmulatorThread

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo as Ctrl-C does: operator first

    signal.signal(signal.SIGTERM, interrupt)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    demo = Demo(workdir)
    # TLS: kubectl (client-go) sends a bearer token only over HTTPS.
    with EmulatorThread(tls=True) as emulator:
        emulator.write_kubeconfig(kubeconfig)
        print(f"API emulator serving on {emulator.url} (kubeconfig: {kubeconfig})")

        async def run() -> None:
            await demo.connect(kubeconfig)
            try:
                await demo.install_crd()
                demo.start_operator(kubeconfig)
                print(f"Operator running (log: {workdir / 'operator.log'})")
                await _walkthrough(demo)
                if args.keep:
                    print(f"Still running. Try:  KUBECONFIG={kubeconfig} kubectl -n demo get sess   (Ctrl-C stops)")
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.Event().wait()
            finally:
                assert demo.kube is not None
                await demo.kube.close()

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            pass
        finally:
            demo.stop_operator()
    print("Stopped the operator and the emulator. That was the demo.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
