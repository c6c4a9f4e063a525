"""Governed targets through the real operator process: SessionPolicy caps, static rules,
defaults and the protection window. (The preempt permission is asked of the API
server's authorizer: see test_governance_rbac.py, on a server that has one.)

Sessions carry spec.owner as admission would record it: here no admission runs, so the
tests write it themselves, as a MutatingAdmissionPolicy or the operator's webhook would.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from support import sessions as s
from support.watcher import InvariantWatcher


async def test_fifty_racing_creates_against_a_cap_of_three(kube: Any, namespace: str, operator: Any) -> None:
    cap = {"maxActive": 3}
    async with s.SessionPolicy(kube, f"cap-{namespace}", namespaces=[namespace], perOwner=cap) as policy:
        await policy.in_force(operator)
        names = [f"run-{i:02d}" for i in range(50)]
        async with InvariantWatcher(kube, namespace) as watcher:
            await asyncio.gather(*(
                s.create(kube, namespace, name, f"task/{name}", owner=s.owner("ci")) for name in names
            ))
            items = await s.phases_when_settled(kube, namespace, names, within=90)
        watcher.check()
        active = sorted(n for n, o in items.items() if s.phase(o) == "Active")
        assert len(active) == 3, active
        # The owner's sessions take the cap in queue order (age, then name), as a burst on
        # one target is applied in it, whichever target's decision ran first.
        order = sorted(items, key=lambda n: (items[n]["metadata"]["creationTimestamp"], n))
        assert active == sorted(order[:3])
        rejected = [o for o in items.values() if s.phase(o) == "Rejected"]
        assert len(rejected) == 47
        assert {s.condition(o, "Ready")["reason"] for o in rejected} == {"OwnerLimit"}
        assert f'SessionPolicy "cap-{namespace}"' in s.condition(rejected[0], "Ready")["message"]
        # Another owner is not held back by ci's cap.
        await s.create(kube, namespace, "other", "task/other", owner=s.owner("alice"))
        assert s.phase((await s.phases_when_settled(kube, namespace, ["other"]))["other"]) == "Active"


async def test_a_waiting_session_is_promoted_when_its_owner_is_under_the_cap(
    kube: Any, namespace: str, operator: Any
) -> None:
    cap = {"maxActive": 1}
    async with s.SessionPolicy(kube, f"cap-{namespace}", namespaces=[namespace], perOwner=cap) as policy:
        await policy.in_force(operator)
        await s.create(kube, namespace, "first", "repo/a", owner=s.owner("ci"))
        await s.phases_when_settled(kube, namespace, ["first"])
        await s.create(kube, namespace, "second", "repo/b", owner=s.owner("ci"), onConflict="Queue")
        items = await s.phases_when_settled(kube, namespace, ["second"])
        assert s.phase(items["second"]) == "Queued"  # on a free target: its owner is at the cap
        assert "passed over while" in s.condition(items["second"], "Ready")["message"]
        await s.patch_spec(kube, namespace, "first", state="Completed")

        async def promoted() -> bool:
            return s.phase(await s.get(kube, namespace, "second")) == "Active"

        await s.eventually(promoted, within=20, what="the waiting session promoted on another target")


async def test_static_rules_defaults_and_a_policy_change(kube: Any, namespace: str, operator: Any) -> None:
    async with s.SessionPolicy(
        kube, f"rules-{namespace}", namespaces=[namespace], targetPrefixes=["repo/"],
        allowedOnConflict=["Reject", "Queue"], idleTimeout={"default": "30m", "max": "2h"},
    ) as policy:
        await policy.in_force(operator)
        await s.create(kube, namespace, "fine", "repo/a", owner=s.owner("ci"))
        await s.create(kube, namespace, "greedy", "repo/b", owner=s.owner("ci"), idleTimeout="5h")
        await s.create(kube, namespace, "pushy", "repo/c", owner=s.owner("ci"), onConflict="Replace")
        await s.create(kube, namespace, "elsewhere", "doc/d", owner=s.owner("ci"), onConflict="Replace")
        items = await s.phases_when_settled(kube, namespace, ["fine", "greedy", "pushy", "elsewhere"])
        assert s.phase(items["fine"]) == "Active"
        assert items["fine"]["status"]["limits"] == {"idleTimeout": "30m", "policy": f"rules-{namespace}"}
        assert s.phase(items["elsewhere"]) == "Active"  # the prefix does not select it
        assert "limits" not in items["elsewhere"]["status"]
        for name, rule in (("greedy", "spec.idleTimeout up to 2h"), ("pushy", 'spec.onConflict "Replace"')):
            assert s.phase(items[name]) == "Invalid"
            ready = s.condition(items[name], "Ready")
            assert ready["reason"] == "PolicyViolation" and rule in ready["message"], ready
        await s.wait_event(kube, namespace, "greedy", ("Warning", "Invalid"))
        # A stricter policy never ends a running session by itself.
        await policy.update(idleTimeout={"default": "1m", "max": "1m"})

        async def seen() -> bool:  # a session decided after the change gets the new default
            name = f"probe-{time.monotonic_ns()}"
            await s.create(kube, namespace, name, f"repo/{name}", owner=s.owner("probe"))
            probe = (await s.phases_when_settled(kube, namespace, [name]))[name]
            await s.delete(kube, namespace, name)
            return probe["status"].get("limits", {}).get("idleTimeout") == "1m"

        await s.eventually(seen, within=20, what="the operator deciding under the changed policy")
        fine = await s.get(kube, namespace, "fine")
        assert s.phase(fine) == "Active" and fine["status"]["limits"]["idleTimeout"] == "30m"


async def test_the_protection_window(kube: Any, namespace: str, operator: Any) -> None:
    window = "1h"
    async with s.SessionPolicy(kube, f"protect-{namespace}", namespaces=[namespace], protectionWindow=window) as policy:
        await policy.in_force(operator)
        await s.create(kube, namespace, "alice-1", "repo/a", owner=s.owner("alice"))
        await s.phases_when_settled(kube, namespace, ["alice-1"])
        await s.create(kube, namespace, "bob-1", "repo/a", owner=s.owner("bob"), onConflict="Replace")
        await s.create(kube, namespace, "alice-2", "repo/a", owner=s.owner("alice"), onConflict="Replace")
        items = await s.phases_when_settled(kube, namespace, ["bob-1", "alice-2"])
        bob = s.condition(items["bob-1"], "Ready")
        assert s.phase(items["bob-1"]) == "Rejected" and bob["reason"] == "Protected", bob
        assert "another owner may not replace it until" in bob["message"]
        # Its own owner may take over at any time.
        assert s.phase(items["alice-2"]) == "Active"
