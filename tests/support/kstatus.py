"""kstatus's status computation for a custom resource, in Python.

kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) is what Flux, `kubectl` apply-and-wait
tools and Helm 4's `--wait` use to decide whether an applied object is done. For a kind
it has no built-in rules for (every custom resource), ``status.Compute`` does only this
(cli-utils, pkg/kstatus/status/status.go ``Compute`` and generic.go
``checkGenericProperties`` / ``checkGeneration``; the rules are documented in
pkg/kstatus/README.md, "Conditions"):

1. ``metadata.deletionTimestamp`` set -> Terminating.
2. ``metadata.generation`` and ``status.observedGeneration`` both present and different
   -> InProgress ("<Kind> generation is G, but latest observed generation is O").
3. The first condition in ``status.conditions`` that is ``Reconciling=True`` ->
   InProgress, or ``Stalled=True`` -> Failed, with that condition's message.
4. Otherwise -> Current ("Resource is current"): with no conditions, or no status at all,
   kstatus assumes the resource is current.

Nothing here reads ``status.phase``: readers that follow kstatus see a Session only
through its ``Reconciling`` and ``Stalled`` conditions and ``observedGeneration``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

IN_PROGRESS = "InProgress"
FAILED = "Failed"
CURRENT = "Current"
TERMINATING = "Terminating"


class Result(NamedTuple):
    status: str
    message: str


def _int(value: Any) -> int | None:
    # unstructured.NestedInt64 finds only integers; anything else counts as absent here.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def compute(obj: Mapping[str, Any]) -> Result:
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return Result(TERMINATING, "Resource scheduled for deletion")
    generation = _int(metadata.get("generation"))
    observed = _int(status.get("observedGeneration")) if isinstance(status, Mapping) else None
    if generation is not None and observed is not None and generation != observed:
        return Result(
            IN_PROGRESS,
            f"{obj.get('kind')} generation is {generation}, but latest observed generation is {observed}",
        )
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    for condition in conditions or ():
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return Result(IN_PROGRESS, condition.get("message", ""))
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return Result(FAILED, condition.get("message", ""))
    return Result(CURRENT, "Resource is current")
