"""Watch sessions and claims for a whole test and check rule 1 over everything seen.

Two watches (sessions, leases) deliver independently, so "is the Active session the
claim holder" is judged after the fact on the global resourceVersion order: every
version of a session that shows Active must fall inside a span where the target's claim
named that session (by name and uid).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from session_operator.model import HOLDER_UID_ANNOTATION, TARGET_ANNOTATION, claim_name


@dataclass
class Seen:
    session_versions: list[tuple[int, str, str, str, str | None, bool]] = field(default_factory=list)
    # (rv, namespace, target, uid/name, phase, deleted)
    claim_versions: dict[tuple[str, str], list[tuple[int, str | None, str | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )  # (namespace, claim name) -> [(rv, holder name, holder uid)]


class InvariantWatcher:
    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.seen = Seen()
        self.names: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.violations: list[str] = []
        self._active_now: dict[tuple[str, str], set[str]] = defaultdict(set)

    async def __aenter__(self) -> InvariantWatcher:
        base = f"/apis/session-operator.io/v1alpha1/namespaces/{self.namespace}/sessions"
        leases = f"/apis/coordination.k8s.io/v1/namespaces/{self.namespace}/leases"
        self._tasks = [
            asyncio.create_task(self._follow(base, self._on_session)),
            asyncio.create_task(self._follow(leases, self._on_lease)),
        ]
        await asyncio.sleep(0.3)  # let both watches open before the test acts
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.5)  # let trailing events arrive
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _follow(self, path: str, handler: Any) -> None:
        rv = "0"
        while True:
            try:
                async for event in self.kube.watch(path, {"resourceVersion": rv, "timeoutSeconds": "60"}):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        rv = "0"
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                        handler(event["type"], obj)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.1)

    def _on_session(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        target = (obj.get("spec") or {}).get("target", "")
        phase = (obj.get("status") or {}).get("phase")
        deleted = kind == "DELETED"
        self.names[meta["uid"]] = meta["name"]
        self.seen.session_versions.append(
            (int(meta["resourceVersion"]), meta["namespace"], target, meta["uid"], phase, deleted)
        )
        key = (meta["namespace"], target)
        if phase == "Active" and not deleted:
            self._active_now[key].add(meta["uid"])
        else:
            self._active_now[key].discard(meta["uid"])
        if len(self._active_now[key]) > 1:
            names = sorted(self.names[u] for u in self._active_now[key])
            self.violations.append(f"two Active sessions for {key}: {names} at rv {meta['resourceVersion']}")

    def _on_lease(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if TARGET_ANNOTATION not in (meta.get("annotations") or {}):
            return
        holder = None if kind == "DELETED" else (obj.get("spec") or {}).get("holderIdentity")
        uid = None if kind == "DELETED" else (meta.get("annotations") or {}).get(HOLDER_UID_ANNOTATION)
        rv = int(meta["resourceVersion"])
        self.seen.claim_versions[(meta["namespace"], meta["name"])].append((rv, holder, uid))

    def first_seen(self, name: str, phase: str) -> int | None:
        """The resourceVersion at which ``name`` was first seen in ``phase``."""
        for rv, _, _, uid, seen_phase, deleted in sorted(self.seen.session_versions):
            if self.names.get(uid) == name and seen_phase == phase and not deleted:
                return rv
        return None

    def check(self) -> None:
        """Raise if rule 1 was broken at any moment seen: while a session shows Active
        (from that version until its next one), every claim version must name it."""
        problems = list(self.violations)
        history: dict[str, list[tuple[int, str, str, str | None, bool]]] = defaultdict(list)
        for rv, namespace, target, uid, phase, deleted in self.seen.session_versions:
            history[uid].append((rv, namespace, target, phase, deleted))
        for uid, versions in history.items():
            versions.sort()
            for i, (rv, namespace, target, phase, deleted) in enumerate(versions):
                if phase != "Active" or deleted:
                    continue
                end = versions[i + 1][0] if i + 1 < len(versions) else None
                claims = sorted(self.seen.claim_versions.get((namespace, claim_name(target)), []))
                in_force = [c for c in claims if c[0] <= rv]
                during = [c for c in claims if rv < c[0] and (end is None or c[0] < end)]
                for claim_rv, holder, holder_uid in ([in_force[-1]] if in_force else [(None, None, None)]) + during:
                    if holder_uid != uid:
                        problems.append(
                            f"session {self.names.get(uid)} shows Active (rv {rv}..{end}) while the claim "
                            f"names {holder!r} (claim rv {claim_rv})"
                        )
                        break
        if problems:
            raise AssertionError("rule 1 broken:\n" + "\n".join(problems[:20]))
