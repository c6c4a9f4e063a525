"""Every YAML in examples/ is applied, and what its comment promises is checked.

Each example carries lines ``# expect: NAME PHASE [READY_REASON] [key=value ...]`` (or
``# expect: NAME gone``); keys are ``holder``, ``position``, ``replacedBy``, ``replaces``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from support import sessions as s

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
FIELDS = {
    "holder": lambda st: (st.get("holder") or {}).get("name"),
    "position": lambda st: str(st.get("queuePosition")),
    "replacedBy": lambda st: st.get("replacedBy"),
    "replaces": lambda st: st.get("replaces"),
}

def expectations(path: Path) -> list[list[str]]:
    found = [line.split("# expect:", 1)[1].split() for line in path.read_text().splitlines() if "# expect:" in line]
    assert found, f"{path.name} promises nothing checkable (no '# expect:' lines)"
    return found


def test_every_example_is_covered() -> None:
    assert len(EXAMPLES) >= 6
    for path in EXAMPLES:
        expectations(path)


def mismatch(items: dict[str, dict[str, Any]], expect: list[str]) -> str | None:
    name, want = expect[0], expect[1]
    obj = items.get(name)
    if want == "gone":
        return None if obj is None else f"{name} still exists ({s.phase(obj)})"
    if obj is None or not s.decided(obj):
        return f"{name} not decided yet"
    status = obj["status"]
    if status["phase"] != want:
        return f"{name} is {status['phase']}, not {want}"
    rest = expect[2:]
    if rest and "=" not in rest[0]:
        reason = s.condition(obj, "Ready")["reason"]
        if reason != rest[0]:
            return f"{name} has Ready reason {reason}, not {rest[0]}"
        rest = rest[1:]
    for pair in rest:
        key, value = pair.split("=", 1)
        if FIELDS[key](status) != value:
            return f"{name} has {key}={FIELDS[key](status)}, not {value}"
    return None


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
async def test_example(kube: Any, namespace: str, path: Path, operator: Any) -> None:
    text = path.read_text()  # noqa: ASYNC240 - a small local file
    policies = []
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") == "SessionPolicy":
            # Cluster-scoped: created first (as an admin would have), deleted afterwards.
            status, obj = await kube.request("POST", s.POLICIES, json=doc)
            assert status == 201, (status, obj)
            policies.append(doc["metadata"]["name"])
            await s.policy_in_force(operator, doc["metadata"]["name"])
    try:
        await _apply_sessions(kube, namespace, path, text)
    finally:
        for name in policies:
            await kube.request("DELETE", f"{s.POLICIES}/{name}")


async def _apply_sessions(kube: Any, namespace: str, path: Path, text: str) -> None:
    for doc in yaml.safe_load_all(text):
        if doc and doc.get("kind") == "Session":
            status, obj = await kube.request("POST", s.sessions_path(namespace), json=doc)
            assert status == 201, (status, obj)
    wanted = expectations(path)

    async def all_hold() -> bool:
        items = await s.all_sessions(kube, namespace)
        problems = [p for p in (mismatch(items, e) for e in wanted) if p]
        assert not problems, problems
        return True

    await s.eventually(all_hold, within=30, what=f"the outcome promised by {path.name}")
