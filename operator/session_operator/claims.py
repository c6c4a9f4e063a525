"""The per-target claim Lease: the lock that decides who is Active.

One ``coordination.k8s.io/v1`` Lease per busy target, in the session's namespace, named
from the target's hash. Every change is conditional: a create that fails if the claim
exists, or a PUT / DELETE carrying the resourceVersion the decision was made on. A lost
race surfaces as ``kube.Conflict``; the caller re-reads and decides again.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

from . import kube as kube_api
from .arbiter import ClaimChange
from .model import (
    HOLDER_UID_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    TARGET_ANNOTATION,
    Claim,
    SessionView,
    claim_name,
    format_micro_time,
)


def claim_body(
    namespace: str,
    target: str,
    holder: SessionView,
    *,
    now: datetime,
    transitions: int,
    resource_version: str | None = None,
    acquire_time: str | None = None,
) -> dict[str, Any]:
    """The Lease naming ``holder``; with ``resource_version`` it is a conditional replace."""
    metadata: dict[str, Any] = {
        "name": claim_name(target),
        "namespace": namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE},
        "annotations": {TARGET_ANNOTATION: target, HOLDER_UID_ANNOTATION: holder.uid},
    }
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    stamp = format_micro_time(now)
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": holder.name,
            "acquireTime": acquire_time or stamp,
            "renewTime": stamp,
            "leaseTransitions": transitions,
        },
    }


async def read_claim(kube: kube_api.Kube, namespace: str, target: str) -> Claim | None:
    try:
        return Claim.from_body(await kube.get_lease(namespace, claim_name(target)))
    except kube_api.NotFound:
        return None


async def apply_change(
    kube: kube_api.Kube, namespace: str, target: str, change: ClaimChange, now: datetime
) -> Claim | None:
    """Make the one claim change of a plan. Raises ``kube.Conflict`` when the claim moved."""
    claim = change.claim
    if change.op == "release":
        assert claim is not None
        with contextlib.suppress(kube_api.NotFound):  # already gone: released is released
            await kube.delete_lease(namespace, claim.name, claim.resource_version)
        return None
    holder = change.holder
    assert holder is not None
    if change.op == "create":
        body = claim_body(namespace, target, holder, now=now, transitions=0)
        return Claim.from_body(await kube.create_lease(namespace, body))
    assert claim is not None
    if change.op == "transfer":
        # One conditional write moves the claim; the transition count is the fencing epoch.
        body = claim_body(
            namespace,
            target,
            holder,
            now=now,
            transitions=claim.transitions + 1,
            resource_version=claim.resource_version,
        )
    else:  # confirm: same holder, a write that bumps resourceVersion to fence concurrent transfers
        body = claim_body(
            namespace,
            target,
            holder,
            now=now,
            transitions=claim.transitions,
            resource_version=claim.resource_version,
        )
    try:
        return Claim.from_body(await kube.replace_lease(namespace, claim.name, body))
    except kube_api.NotFound as e:
        # Deleted under us: that is a lost race too; re-read and decide again.
        raise kube_api.Conflict(409, "Conflict", f"claim {claim.name} was deleted") from e
