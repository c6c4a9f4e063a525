"""Flux and other kstatus readers judge a Session from its conditions alone.

kstatus's rules for custom resources are in support/kstatus.py (with where they come
from in cli-utils). The contract says what they must compute for each phase: Active ->
Current, Pending/Queued -> InProgress, Rejected/Invalid -> Failed, every other phase ->
Current. The Sessions are the Argo CD check's testdata, which carry the conditions the
operator writes, and, for every phase, the conditions built by the operator's own
``build_conditions``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from session_operator.conditions import Reason, build_conditions
from session_operator.model import Phase
from support.chart import CHART_DIR
from support.kstatus import CURRENT, FAILED, IN_PROGRESS, TERMINATING, compute

TESTDATA = CHART_DIR / "argocd" / "resource_customizations" / "session-operator.io" / "Session" / "testdata"

EXPECTED = {
    "Active": CURRENT,
    "Pending": IN_PROGRESS,
    "Queued": IN_PROGRESS,
    "Rejected": FAILED,
    "Invalid": FAILED,
    "Inactive": CURRENT,
    "Replaced": CURRENT,
    "Completed": CURRENT,
    "Abandoned": CURRENT,
    "Archived": CURRENT,
}
# The Ready reason the operator gives each phase (one of them where there are several).
READY_REASON = {
    Phase.ACTIVE: Reason.ACQUIRED,
    Phase.PENDING: Reason.PENDING,
    Phase.QUEUED: Reason.QUEUED,
    Phase.REJECTED: Reason.TARGET_BUSY,
    Phase.INVALID: Reason.INVALID_SPEC,
    Phase.INACTIVE: Reason.INACTIVE,
    Phase.REPLACED: Reason.REPLACED,
    Phase.COMPLETED: Reason.COMPLETED,
    Phase.ABANDONED: Reason.IDLE_TIMEOUT,
    Phase.ARCHIVED: Reason.REQUESTED,
}


def session(phase: Phase, generation: int = 4, observed: int = 4) -> dict[str, Any]:
    conditions = build_conditions(
        phase=phase,
        reason=READY_REASON[phase],
        message=f"message for {phase.value}",
        generation=observed,
        now=datetime(2026, 11, 21, tzinfo=UTC),
        replaced_reason=Reason.REPLACED if phase is Phase.REPLACED else None,
        archived_reason=Reason.REQUESTED if phase is Phase.ARCHIVED else None,
    )
    return {
        "apiVersion": "session-operator.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "s", "namespace": "team-a", "generation": generation},
        "spec": {"target": "repo/payments"},
        # No phase: kstatus never reads it, and this shows it.
        "status": {"observedGeneration": observed, "conditions": conditions},
    }


def test_every_phase_is_covered() -> None:
    assert set(EXPECTED) == {phase.value for phase in Phase}


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
def test_conditions_alone_give_the_contracts_status(phase: Phase) -> None:
    result = compute(session(phase))
    assert result.status == EXPECTED[phase.value]
    if result.status != CURRENT:
        assert result.message == f"message for {phase.value}"  # the condition's message


@pytest.mark.parametrize("path", sorted(TESTDATA.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_testdata_sessions(path: Any) -> None:
    obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    result = compute(obj)
    status = obj.get("status") or {}
    if obj["metadata"].get("deletionTimestamp"):
        assert result.status == TERMINATING
    elif status and status["observedGeneration"] != obj["metadata"]["generation"]:
        assert result.status == IN_PROGRESS
        assert result.message == "Session generation is 2, but latest observed generation is 1"
    elif not status:
        # kstatus assumes a custom resource without status is current; only the
        # operator's first status write tells it otherwise.
        assert result.status == CURRENT
    else:
        assert result.status == EXPECTED[status["phase"]], path.name


def test_a_spec_change_is_in_progress_until_observed() -> None:
    for phase in Phase:
        assert compute(session(phase, generation=5, observed=4)).status == IN_PROGRESS


def test_the_rules_themselves() -> None:
    """kstatus's generic rules on plain objects (core.go/generic.go behaviour)."""
    assert compute({"kind": "X", "metadata": {}}).status == CURRENT
    assert compute({"kind": "X", "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}).status == TERMINATING
    stalled_then_reconciling = {
        "kind": "X",
        "metadata": {"generation": 1},
        "status": {
            "conditions": [
                {"type": "Stalled", "status": "True", "message": "a"},
                {"type": "Reconciling", "status": "True", "message": "b"},
            ]
        },
    }
    assert compute(stalled_then_reconciling) == (FAILED, "a")  # the first one found wins
    ready_false = {"kind": "X", "metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert compute(ready_false).status == CURRENT  # kstatus does not read Ready
