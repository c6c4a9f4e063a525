"""``kubectl session``, the real ``kubectl-session`` process, against an API server and the
real operator: every command, its machine-readable output and its errors."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from session_operator.model import claim_name
from support import sessions as s
from support.watcher import InvariantWatcher

pytestmark = pytest.mark.usefixtures("operator")

BIN = Path(sys.executable).parent  # where the console scripts of this environment are
PLUGIN = BIN / "kubectl-session"
SOURCE = Path(__file__).resolve().parents[2] / "operator"  # this checkout's package, as OperatorProcess does


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def plugin(cluster: Any) -> Any:
    """Run ``kubectl-session ARGS`` as a user would, with the cluster's kubeconfig in $KUBECONFIG."""
    if not PLUGIN.exists():
        pytest.skip(f"{PLUGIN} is not installed (make venv installs it)")

    async def run(*args: str, env: dict[str, str] | None = None, program: list[str] | None = None) -> Ran:
        environ = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), **(env or {})}
        environ["PYTHONPATH"] = str(SOURCE)
        process = await asyncio.create_subprocess_exec(
            *(program or [str(PLUGIN)]), *args, env=environ,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return Ran(process.returncode, out.decode(), err.decode())

    return run


async def queue_of_three(kube: Any, namespace: str, target: str = "repo/payments") -> None:
    await s.create(kube, namespace, "alice-1", target, profile="gpt-4o", idleTimeout="30m")
    await s.phases_when_settled(kube, namespace, ["alice-1"])
    for name, spec in (("bob-1", {}), ("carol-1", {}), ("vip-1", {"priority": 5})):
        await s.create(kube, namespace, name, target, profile="gpt-5", onConflict="Queue", **spec)
    await s.phases_when_settled(kube, namespace, ["bob-1", "carol-1", "vip-1"])


async def test_who_shows_the_holder_and_the_live_queue(kube: Any, namespace: str, plugin: Any) -> None:
    await queue_of_three(kube, namespace)
    ran = await plugin("who", "repo/payments", "-n", namespace)
    assert (ran.code, ran.err) == (0, "")
    holder_table, queue_table = ran.out.rstrip("\n").split("\n\n")
    header, row = holder_table.splitlines()
    assert header.split() == ["TARGET", "HOLDER", "OWNER", "PROFILE", "HELD", "FOR", "IDLE", "DEADLINE", "WAITING"]
    assert row.split()[:4] == ["repo/payments", "alice-1", "<none>", "gpt-4o"] and row.split()[-1] == "3"
    assert "(in 29m" in row or "(in 30m" in row
    assert [line.split()[:2] for line in queue_table.splitlines()] == [
        ["POSITION", "NAME"], ["1", "vip-1"], ["2", "bob-1"], ["3", "carol-1"],
    ]
    document = (await plugin("who", "repo/payments", "-n", namespace, "-o", "json")).json()
    assert document["holder"]["name"] == "alice-1" and document["holder"]["idleDeadline"]
    assert [(e["position"], e["name"]) for e in document["queue"]] == [(1, "vip-1"), (2, "bob-1"), (3, "carol-1")]
    everywhere = yaml.safe_load((await plugin("who", "repo/payments", "-A", "-o", "yaml")).out)
    assert namespace in [item["namespace"] for item in everywhere["items"]]
    nothing = await plugin("who", "repo/nothing", "-n", namespace)
    assert nothing.code == 0 and nothing.out == ""
    assert nothing.err.startswith(f'No sessions for target "repo/nothing" in namespace "{namespace}"')


async def test_why_explains_each_decision_in_one_paragraph(kube: Any, namespace: str, plugin: Any) -> None:
    await queue_of_three(kube, namespace)
    await s.create(kube, namespace, "dave-1", "repo/payments", profile="gpt-4o", onConflict="ReplaceIfProfileChanged")
    await s.phases_when_settled(kube, namespace, ["dave-1"])
    texts = {name: (await plugin("why", name, "-n", namespace)).out.strip() for name in ("alice-1", "bob-1", "dave-1")}
    assert all("\n" not in text for text in texts.values())
    assert texts["alice-1"].startswith(f'Session "alice-1" (namespace "{namespace}", target "repo/payments") is '
                                       "Active (reason Acquired)")
    assert "3 sessions wait behind it; next: vip-1." in texts["alice-1"]
    assert 'is Queued, number 2 of 3 in line behind "alice-1"' in texts["bob-1"]
    assert "is Rejected (reason DuplicateProfile)" in texts["dave-1"]
    assert 'To reuse the running session, use "alice-1" (still Active).' in texts["dave-1"]
    document = (await plugin("why", "dave-1", "-n", namespace, "-o", "json")).json()
    assert (document["phase"], document["reason"], document["holder"]) == ("Rejected", "DuplicateProfile", "alice-1")
    assert 'use session "alice-1"' in document["message"]


async def test_activate_makes_a_queued_session_active_and_the_holder_replaced(
    kube: Any, namespace: str, plugin: Any
) -> None:
    await queue_of_three(kube, namespace)
    before = await s.claim(kube, namespace, "repo/payments")
    assert before is not None
    async with InvariantWatcher(kube, namespace) as watcher:
        ran = await plugin("activate", "carol-1", "-n", namespace)
        assert (ran.code, ran.err) == (0, ""), ran
        assert ran.out.strip() == 'session.session-operator.io/carol-1 activated (replaced "alice-1")'
        items = await s.phases_when_settled(kube, namespace, ["alice-1", "carol-1"])
    watcher.check()  # never two Active, and Active only while holding the claim
    assert (s.phase(items["alice-1"]), s.phase(items["carol-1"])) == ("Replaced", "Active")
    replaced_at, active_at = watcher.first_seen("alice-1", "Replaced"), watcher.first_seen("carol-1", "Active")
    assert replaced_at is not None and active_at is not None and replaced_at < active_at
    moves = [v for v in watcher.seen.claim_versions[(namespace, claim_name("repo/payments"))]
             if v[0] > int(before["metadata"]["resourceVersion"])]
    assert [holder for _, holder, _ in moves] == ["carol-1"]  # one conditional write moved it
    after = await s.claim(kube, namespace, "repo/payments")
    assert after is not None and after["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
    carol = items["carol-1"]
    assert carol["spec"]["state"] == "Active"
    assert carol["status"]["activateRequest"] == carol["spec"]["activateRequest"]
    assert s.condition(carol, "Ready")["reason"] == "ReplacedPrevious"
    assert carol["status"]["replaces"] == "alice-1" and items["alice-1"]["status"]["replacedBy"] == "carol-1"
    # The queue keeps its order behind the new holder, and who shows it.
    document = (await plugin("who", "repo/payments", "-n", namespace, "-o", "json")).json()
    assert document["holder"]["name"] == "carol-1"
    assert [e["name"] for e in document["queue"]] == ["vip-1", "bob-1"]
    # The holder itself: the request is only recorded.
    again = await plugin("activate", "carol-1", "-n", namespace, "-o", "json")
    assert again.code == 0 and again.json()["status"]["phase"] == "Active"
    assert again.json()["status"]["activeSince"] == carol["status"]["activeSince"]


async def test_touch_records_activity_and_moves_the_idle_deadline(kube: Any, namespace: str, plugin: Any) -> None:
    await s.create(kube, namespace, "alice-1", "repo/idle", idleTimeout="30m")
    first = (await s.phases_when_settled(kube, namespace, ["alice-1"]))["alice-1"]
    await asyncio.sleep(1.1)  # a later second than the activation's
    ran = await plugin("touch", "alice-1", "-n", namespace)
    assert ran.code == 0 and ran.out.startswith("session.session-operator.io/alice-1 touched (last activity ")

    async def moved() -> dict[str, Any] | None:
        obj = await s.get(kube, namespace, "alice-1")
        assert obj is not None
        return obj if obj["status"]["idleDeadline"] > first["status"]["idleDeadline"] else None

    obj = await s.eventually(moved, within=10, what="the idle deadline to move")
    assert obj["metadata"]["annotations"]["session-operator.io/last-activity"] == obj["status"]["lastActivityTime"]
    assert obj["metadata"]["generation"] == first["metadata"]["generation"]  # activity decides nothing anew


async def test_complete_and_archive_release_the_target(kube: Any, namespace: str, plugin: Any) -> None:
    await queue_of_three(kube, namespace)
    ran = await plugin("complete", "alice-1", "-n", namespace)
    assert ran.out.strip() == "session.session-operator.io/alice-1 completed (spec.state Completed)"
    items = await s.phases_when_settled(kube, namespace, ["alice-1", "vip-1"])
    assert (s.phase(items["alice-1"]), s.phase(items["vip-1"])) == ("Completed", "Active")
    archived = await plugin("archive", "vip-1", "-n", namespace, "-o", "yaml")
    assert yaml.safe_load(archived.out)["spec"]["state"] == "Archived"
    items = await s.phases_when_settled(kube, namespace, ["vip-1", "bob-1"])
    assert (s.phase(items["vip-1"]), s.phase(items["bob-1"])) == ("Archived", "Active")


async def test_errors_name_the_problem_and_the_fix(kube: Any, namespace: str, plugin: Any, tmp_path: Path) -> None:
    missing = await plugin("why", "nobody", "-n", namespace)
    assert missing.code == 1 and missing.out == ""
    assert missing.err.strip() == (
        f'Error from server (NotFound): session "nobody" not found in namespace "{namespace}"; list the sessions '
        f"there with: kubectl get sess -n {namespace}"
    )
    for command in ("activate", "touch", "complete", "archive"):
        ran = await plugin(command, "nobody", "-n", namespace)
        assert ran.code == 1 and 'session "nobody" not found' in ran.err, (command, ran)
    no_config = await plugin("who", "t", env={"KUBECONFIG": str(tmp_path / "none")})
    assert no_config.code == 1
    assert no_config.err.startswith("error: no Kubernetes configuration found")
    assert "--kubeconfig PATH or the KUBECONFIG environment variable" in no_config.err
    context = await plugin("who", "t", "--context", "no-such-context")
    assert context.code == 1
    assert context.err.strip() == ('error: context "no-such-context" not found in the kubeconfig; list the contexts '
                                   "with: kubectl config get-contexts")
    usage = await plugin("why", "x", "-A")
    assert usage.code == 2 and "-A/--all-namespaces works with 'who' only" in usage.err


async def test_the_context_namespace_is_the_default(kube: Any, namespace: str, plugin: Any, cluster: Any,
                                                    tmp_path: Path) -> None:
    await s.create(kube, namespace, "alice-1", "repo/here")
    await s.phases_when_settled(kube, namespace, ["alice-1"])
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())  # noqa: ASYNC240 - a small local file
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    config["contexts"].append({"name": "here", "context": {**current["context"], "namespace": namespace}})
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    ran = await plugin("--kubeconfig", str(path), "--context", "here", "who", "repo/here", "-o", "json")
    assert ran.code == 0, ran
    assert (ran.json()["namespace"], ran.json()["holder"]["name"]) == (namespace, "alice-1")


async def test_kubectl_finds_the_plugin_on_path(kube: Any, namespace: str, plugin: Any) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    await s.create(kube, namespace, "alice-1", "repo/kubectl")
    await s.phases_when_settled(kube, namespace, ["alice-1"])
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    ran = await plugin("session", "who", "repo/kubectl", "-n", namespace, "-o", "json",
                       env={"PATH": path}, program=[kubectl])
    assert ran.code == 0, ran
    assert ran.json()["holder"]["name"] == "alice-1"
