"""Helpers for integration tests: create sessions, read them, wait for outcomes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from session_operator.model import claim_name

API = "session-operator.io/v1alpha1"


def sessions_path(namespace: str, name: str = "") -> str:
    path = f"/apis/session-operator.io/v1alpha1/namespaces/{namespace}/sessions"
    return f"{path}/{name}" if name else path


def body(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Session", "metadata": {"name": name}, "spec": {"target": target, **spec}}


async def create(kube: Any, namespace: str, name: str, target: str, **spec: Any) -> dict[str, Any]:
    status, obj = await kube.request("POST", sessions_path(namespace), json=body(name, target, **spec))
    assert status == 201, (status, obj)
    return obj


async def patch_spec(kube: Any, namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    status, obj = await kube.request(
        "PATCH", sessions_path(namespace, name), json={"spec": spec}, content_type="application/merge-patch+json"
    )
    assert status == 200, (status, obj)
    return obj


async def annotate(kube: Any, namespace: str, name: str, annotations: dict[str, str]) -> dict[str, Any]:
    status, obj = await kube.request(
        "PATCH",
        sessions_path(namespace, name),
        json={"metadata": {"annotations": annotations}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, (status, obj)
    return obj


async def delete(kube: Any, namespace: str, name: str) -> None:
    status, obj = await kube.request("DELETE", sessions_path(namespace, name))
    assert status in (200, 202), (status, obj)


async def get(kube: Any, namespace: str, name: str) -> dict[str, Any] | None:
    status, obj = await kube.request("GET", sessions_path(namespace, name))
    if status == 404:
        return None
    assert status == 200, (status, obj)
    return obj


async def all_sessions(kube: Any, namespace: str) -> dict[str, dict[str, Any]]:
    status, obj = await kube.request("GET", sessions_path(namespace))
    assert status == 200, (status, obj)
    return {item["metadata"]["name"]: item for item in obj["items"]}


async def claim(kube: Any, namespace: str, target: str) -> dict[str, Any] | None:
    status, obj = await kube.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{claim_name(target)}"
    )
    return obj if status == 200 else None


def phase(obj: dict[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("status") or {}).get("phase")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    raise AssertionError(f"no {type_} condition in {obj.get('status')}")


def decided(obj: dict[str, Any] | None) -> bool:
    return (
        obj is not None
        and (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        and phase(obj) not in (None, "Pending")
    )


async def eventually(
    check: Callable[[], Awaitable[Any]], within: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``check`` until it returns a truthy value (or stops raising AssertionError)."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        try:
            result = await check()
            if result:
                return result
            last = result
        except AssertionError as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or check}: last {last!r}")
        await asyncio.sleep(interval)


async def phases_when_settled(
    kube: Any, namespace: str, names: list[str], within: float = 30.0
) -> dict[str, dict[str, Any]]:
    """Wait until every named session is decided for its generation; return them all."""

    async def settled() -> dict[str, dict[str, Any]] | None:
        items = await all_sessions(kube, namespace)
        if all(decided(items.get(n)) for n in names):
            return items
        return None

    return await eventually(settled, within=within, what=f"decisions for {names}")


async def events_for(kube: Any, namespace: str, name: str) -> list[tuple[str, str]]:
    status, obj = await kube.request("GET", f"/api/v1/namespaces/{namespace}/events")
    assert status == 200, (status, obj)
    items = sorted(obj["items"], key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [(e["type"], e["reason"]) for e in items if e["involvedObject"].get("name") == name]


async def wait_events(
    kube: Any, namespace: str, name: str, expected: list[tuple[str, str]], within: float = 10.0
) -> list[tuple[str, str]]:
    """Wait until the events about ``name`` are exactly ``expected`` (in order)."""

    async def arrived() -> bool:
        seen = await events_for(kube, namespace, name)
        assert seen == expected, seen
        return True

    await eventually(arrived, within=within, what=f"events {expected} for {name}")
    return expected


async def wait_event(kube: Any, namespace: str, name: str, event: tuple[str, str], within: float = 10.0) -> None:
    """Wait until ``event`` is among the events about ``name``."""

    async def arrived() -> bool:
        seen = await events_for(kube, namespace, name)
        assert event in seen, seen
        return True

    await eventually(arrived, within=within, what=f"event {event} for {name}")


POLICIES = "/apis/session-operator.io/v1alpha1/sessionpolicies"


class SessionPolicy:
    """A SessionPolicy for one test (cluster-scoped: it is deleted again on the way out)."""

    def __init__(self, kube: Any, name: str, **spec: Any) -> None:
        self.kube, self.name, self.spec = kube, name, spec

    async def __aenter__(self) -> SessionPolicy:
        obj = {"apiVersion": API, "kind": "SessionPolicy", "metadata": {"name": self.name}, "spec": self.spec}
        status, answer = await self.kube.request("POST", POLICIES, json=obj)
        assert status == 201, (status, answer)
        return self

    async def in_force(self, operator: Any, within: float = 20.0) -> None:
        """Wait until ``operator`` reports the policy in force (its metrics), so that what
        the test creates next is decided under it."""
        await policy_in_force(operator, self.name, within)

    async def update(self, **spec: Any) -> None:
        status, answer = await self.kube.request(
            "PATCH", f"{POLICIES}/{self.name}", json={"spec": spec}, content_type="application/merge-patch+json"
        )
        assert status == 200, (status, answer)

    async def __aexit__(self, *_: Any) -> None:
        await self.kube.request("DELETE", f"{POLICIES}/{self.name}")


async def policy_in_force(operator: Any, name: str, within: float = 20.0, state: str = "in-force") -> None:
    line = f'session_operator_session_policies{{name="{name}",state="{state}"}} 1.0'

    async def reported() -> bool:
        return line in await asyncio.to_thread(operator.metrics)

    await eventually(reported, within=within, what=f"SessionPolicy {name} {state} for the operator")


def owner(username: str) -> dict[str, Any]:
    """spec.owner as admission records it (for servers where no admission sets it)."""
    return {"username": username, "groups": ["system:authenticated"]}
