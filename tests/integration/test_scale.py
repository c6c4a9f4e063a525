"""Start-up in a busy cluster: more objects than any internal limit, then start, then decide.

An operator that indexed through kopf never decided anything once more than 1,000
Sessions or claims existed at its start (kopf issue #1243: each object's worker waited
for the whole index, and workers past the limit never started). This test holds the
fix: more sessions and claims than kopf's old worker limit and than three LIST pages,
spread over several namespaces, half decided before the operator stops and half created
while it is down. It must become ready, decide a session created right after its start,
and decide every undecided one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from support import sessions as s

DECIDED = 1_100  # before the restart: each on its own target, so as many claims
WHILE_DOWN = 1_100  # created while the operator is down
NAMESPACES = 4


async def _create_many(kube: Any, specs: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    for start in range(0, len(specs), 100):
        await asyncio.gather(*(
            s.create(kube, namespace, name, target, **spec)
            for namespace, name, target, spec in specs[start:start + 100]
        ))


async def _undecided(kube: Any, namespaces: list[str]) -> int:
    count = 0
    for namespace in namespaces:
        count += sum(not s.decided(item) for item in (await s.all_sessions(kube, namespace)).values())
    return count


async def test_start_with_more_objects_than_any_internal_limit_decides_everything(
    kube: Any, operator_factory: Any
) -> None:
    namespaces = [await kube.create_namespace("scale") for _ in range(NAMESPACES)]
    operator = operator_factory("scale").start()
    await _create_many(kube, [
        (namespaces[i % NAMESPACES], f"held-{i:04d}", f"repo/{i}", {}) for i in range(DECIDED)
    ])

    async def first_half_decided() -> bool:
        return await _undecided(kube, namespaces) == 0

    await s.eventually(first_half_decided, within=240, interval=1.0, what=f"{DECIDED} sessions decided")
    assert operator.stop() == 0

    # While it is down: half on free targets, half behind a holder (rejected or queued).
    down: list[tuple[str, str, str, dict[str, Any]]] = []
    for i in range(WHILE_DOWN):
        if i % 2:  # behind held-(i-1), in its namespace
            policy = "Queue" if i % 4 == 1 else "Reject"
            down.append((namespaces[(i - 1) % NAMESPACES], f"late-{i:04d}", f"repo/{i - 1}", {"onConflict": policy}))
        else:
            down.append((namespaces[i % NAMESPACES], f"late-{i:04d}", f"free/{i}", {}))
    await _create_many(kube, down)
    assert await _undecided(kube, namespaces) == WHILE_DOWN

    operator.start(wait=False)
    operator.wait_ready(timeout=120)
    await s.create(kube, namespaces[0], "right-after-start", "brand/new")
    items = await s.phases_when_settled(kube, namespaces[0], ["right-after-start"], within=120)
    assert s.phase(items["right-after-start"]) == "Active"

    async def all_decided() -> bool:
        return await _undecided(kube, namespaces) == 0

    await s.eventually(all_decided, within=240, interval=1.0, what="every session decided after the restart")
    phases: dict[str, int] = {}
    for namespace in namespaces:
        for name, item in (await s.all_sessions(kube, namespace)).items():
            if name.startswith("late-"):
                phases[s.phase(item) or ""] = phases.get(s.phase(item) or "", 0) + 1
    assert phases == {"Active": WHILE_DOWN // 2, "Queued": WHILE_DOWN // 4, "Rejected": WHILE_DOWN // 4}, phases
    assert operator.metric("session_operator_oldest_undecided_seconds") == 0
