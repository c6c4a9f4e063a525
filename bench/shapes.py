"""What the benchmark writes: sessions, claims, and statuses shaped like the operator's.

The floors write the status the operator would write, of the same size, and the start-up
case loads decided sessions with it. Rather than keep a copy of that shape here (which
would drift from the operator's), ``calibrate`` runs the operator once on the run's first
server, lets it decide three sessions (Active, Rejected, Queued), and keeps what it wrote
as templates; names, target, holder uid and queue position are filled in per session.
If that fails, ``BUILTIN`` (the shape as of this writing) is used and the run says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .cluster import Server, sessions_path
from .process import Operator
from .watch import SessionWatch

API_VERSION = "session-operator.io/v1alpha1"
MERGE_PATCH = "application/merge-patch+json"
MANAGED_BY = {"app.kubernetes.io/managed-by": "session-operator"}
TARGET_ANNOTATION = "session-operator.io/target"
HOLDER_UID_ANNOTATION = "session-operator.io/holder-uid"

# The calibration sessions' names and target: distinct strings, none inside another, so
# that they can be found in the JSON the operator wrote and replaced.
CAL_TARGET = "calib/target-x"
CAL_HOLDER, CAL_REJECTED, CAL_QUEUED = "calibholder", "calibrejected", "calibqueued"


def claim_name(target: str) -> str:
    return "session-target-" + hashlib.sha256(target.encode()).hexdigest()[:20]


def session_body(name: str, target: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "Session", "metadata": {"name": name},
            "spec": {"target": target, **spec}}


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def claim_body(target: str, holder: str, holder_uid: str) -> dict[str, Any]:
    """The claim Lease as the operator creates it (``executor.claim_body``)."""
    stamp = micro_now()
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": claim_name(target), "labels": dict(MANAGED_BY),
                     "annotations": {TARGET_ANNOTATION: target, HOLDER_UID_ANNOTATION: holder_uid}},
        "spec": {"holderIdentity": holder, "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0},
    }


def guarded_status(status: dict[str, Any], resource_version: str) -> dict[str, Any]:
    """The body of a status merge patch conditional on ``resource_version`` (as the operator sends)."""
    return {"metadata": {"resourceVersion": resource_version}, "status": status}


class Template:
    """One status, as JSON text with placeholders for the values that vary per session."""

    def __init__(self, status: dict[str, Any], subs: dict[str, str]) -> None:
        text = json.dumps(status, separators=(",", ":"))
        for actual, key in sorted(subs.items(), key=lambda kv: -len(kv[0])):
            if actual:
                text = text.replace(actual, f"@@{key}@@")
        self.text = text
        self.position_in_message = "at position 1 of" in text

    def render(self, position: int | None = None, **values: str) -> dict[str, Any]:
        text = self.text
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        if position is not None and self.position_in_message:
            text = text.replace("at position 1 of", f"at position {position} of")
        status: dict[str, Any] = json.loads(text)
        if position is not None and "queuePosition" in status:
            status["queuePosition"] = position
        return status

    def size(self) -> int:
        return len(self.text)


@dataclass
class Templates:
    active: Template
    rejected: Template
    queued: Template
    source: str  # "operator" (calibrated in this run) or "builtin"
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_statuses(cls, statuses: dict[str, dict[str, Any]], holder_uid: str, source: str) -> Templates:
        def subs(own: str) -> dict[str, str]:
            return {CAL_TARGET: "TARGET", CAL_HOLDER: "HOLDER", holder_uid: "HOLDER_UID", own: "NAME"}

        return cls(
            active=Template(statuses["Active"], subs(CAL_HOLDER)),
            rejected=Template(statuses["Rejected"], subs(CAL_REJECTED)),
            queued=Template(statuses["Queued"], subs(CAL_QUEUED)),
            source=source,
        )

    def active_status(self, name: str, target: str) -> dict[str, Any]:
        # the holder is the session itself
        return self.active.render(TARGET=target, HOLDER=name, NAME=name, HOLDER_UID="")

    def rejected_status(self, name: str, target: str, holder: str, holder_uid: str) -> dict[str, Any]:
        return self.rejected.render(TARGET=target, HOLDER=holder, NAME=name, HOLDER_UID=holder_uid)

    def queued_status(self, name: str, target: str, holder: str, holder_uid: str, position: int) -> dict[str, Any]:
        return self.queued.render(position, TARGET=target, HOLDER=holder, NAME=name, HOLDER_UID=holder_uid)


def _builtin_statuses() -> dict[str, dict[str, Any]]:
    """The operator's status shape as of this writing (six conditions, holder, deadlines)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    busy = (f'target "{CAL_TARGET}" is held by session "{CAL_HOLDER}" (profile "", active since {stamp}); '
            "archive it, or set spec.onConflict to Queue or Replace")
    queued = (f'target "{CAL_TARGET}" is held by session "{CAL_HOLDER}" (profile "", active since {stamp}); '
              "waiting at position 1 of its queue, to become Active when the holder is released")

    def conditions(phase: str, ready: tuple[str, str, str], conflicted: bool, reconciling: bool, stalled: bool,
                   message: str) -> list[dict[str, Any]]:
        def cond(kind: str, on: bool, reason: str, text: str) -> dict[str, Any]:
            return {"type": kind, "status": "True" if on else "False", "reason": reason if on else phase,
                    "message": text if on else "", "lastTransitionTime": stamp, "observedGeneration": 1}

        out = [{"type": "Ready", "status": ready[0], "reason": ready[1], "message": ready[2],
                "lastTransitionTime": stamp, "observedGeneration": 1}]
        out.append(cond("Conflicted", conflicted, ready[1], message))
        out.append(cond("Replaced", False, "", ""))
        out.append(cond("Archived", False, "", ""))
        out.append(cond("Reconciling", reconciling, ready[1], message))
        out.append(cond("Stalled", stalled, ready[1], message))
        return out

    holder = {"name": CAL_HOLDER, "uid": "HOLDER-UID", "profile": "", "activeSince": stamp}
    return {
        "Active": {"lastActivityTime": stamp, "observedGeneration": 1, "activeSince": stamp,
                   "conditions": conditions("Active", ("True", "Acquired",
                                                       f'session "{CAL_HOLDER}" holds target "{CAL_TARGET}"'),
                                            False, False, False, ""), "phase": "Active"},
        "Rejected": {"endedAt": stamp, "observedGeneration": 1,
                     "conditions": conditions("Rejected", ("False", "TargetBusy", busy), True, False, True, busy),
                     "phase": "Rejected", "holder": holder},
        "Queued": {"observedGeneration": 1,
                   "conditions": conditions("Queued", ("False", "Queued", queued), True, True, False, queued),
                   "phase": "Queued", "holder": holder, "queuePosition": 1},
    }


def builtin_templates(reason: str) -> Templates:
    templates = Templates.from_statuses(_builtin_statuses(), "HOLDER-UID", "builtin")
    templates.info["fallback_reason"] = reason
    return templates


@dataclass
class Calibration:
    templates: Templates
    ready_s: float  # time to /readyz on this (empty) server
    rss_bytes: int  # resident memory once ready, before any session
    cpu_s: float


async def calibrate(server: Server, log_dir: Path, *, settle: float = 1.0) -> Calibration:
    """Start the operator on ``server`` (expected empty of sessions), read its memory once
    ready, let it decide three sessions to learn its status shape, and stop it."""
    client = server.client()
    operator = Operator(server.kubeconfig, log_dir, name="operator-calibrate").start()
    try:
        ready_s = await operator.wait_ready(timeout=60)
        await asyncio.sleep(settle)
        rss = operator.rss_bytes()
        namespace = await server.new_namespace(client, "calibrate")
        watch = await SessionWatch(client, namespace, keep_objects=True).start()
        try:
            path = sessions_path(namespace)
            holder = await client.ok("POST", path, json=session_body(CAL_HOLDER, CAL_TARGET))
            key = (namespace, CAL_HOLDER)
            if not await watch.until(lambda: watch.phase.get(key) == "Active", 30):
                raise TimeoutError("the operator did not make the calibration holder Active within 30s")
            await client.ok("POST", path, json=session_body(CAL_REJECTED, CAL_TARGET, onConflict="Reject"))
            await client.ok("POST", path, json=session_body(CAL_QUEUED, CAL_TARGET, onConflict="Queue"))
            want = {(namespace, CAL_REJECTED): "Rejected", (namespace, CAL_QUEUED): "Queued"}
            if not await watch.until(lambda: all(watch.phase.get(k) == v for k, v in want.items()), 30):
                raise TimeoutError("the operator did not decide the calibration sessions within 30s")
            await asyncio.sleep(0.3)  # a trailing status write (e.g. queue position) lands
            statuses = {
                "Active": watch.objects[key]["status"],
                "Rejected": watch.objects[(namespace, CAL_REJECTED)]["status"],
                "Queued": watch.objects[(namespace, CAL_QUEUED)]["status"],
            }
        finally:
            await watch.stop()
        templates = Templates.from_statuses(statuses, holder["metadata"]["uid"], "operator")
        cpu = operator.cpu_seconds()
    finally:
        operator.stop()
        await client.close()
    return Calibration(templates=templates, ready_s=ready_s, rss_bytes=rss, cpu_s=cpu)
