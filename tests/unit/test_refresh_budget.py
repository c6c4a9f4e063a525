"""The pace of queue-truth refreshes: a token bucket per target (reconciler.RefreshBudget)."""

from __future__ import annotations

from session_operator.reconciler import RefreshBudget

A, B = ("ns", "a"), ("ns", "b")


def test_a_target_spends_its_rate_then_gets_it_back_over_a_second() -> None:
    budget = RefreshBudget(20)
    assert budget.available(A, 100.0) == 20
    budget.spend(A, 20, 100.0)
    assert budget.available(A, 100.0) == 0
    assert budget.available(A, 100.5) == 10
    assert budget.available(A, 101.0) == 20
    assert budget.available(A, 130.0) == 20  # never more than one second's worth
    assert budget.available(B, 100.0) == 20  # targets are paced apart


def test_many_decisions_in_a_second_share_one_second_of_writes() -> None:
    budget = RefreshBudget(20)
    spent = 0
    now = 100.0
    for _ in range(100):  # a decision every 10 ms for a second
        take = budget.available(A, now)
        budget.spend(A, take, now)
        spent += take
        now += 0.01
    assert 20 <= spent <= 40  # the first second's writes plus the refill


def test_full_buckets_are_forgotten() -> None:
    budget = RefreshBudget(5)
    for i in range(RefreshBudget.PRUNE_ABOVE + 1):
        budget.spend(("ns", str(i)), 1, 0.0)
    budget.spend(A, 1, 10.0)
    assert len(budget) == 1
