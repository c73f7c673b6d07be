"""The early rows' budget shared by the window specs (operators/early_budget.py)."""

from __future__ import annotations

from operators.early_budget import EarlyBudget


def test_one_spec_waits_its_work_times_one_minus_budget_over_budget() -> None:
    budget = EarlyBudget(1, 0.25)
    assert budget.ready(0, 0.0)
    assert budget.spend(0, 100.0, 0.0) == 300.0
    assert not budget.ready(0, 299.0)
    assert budget.ready(0, 300.0)


def test_specs_in_debt_share_the_rate_and_a_paid_ones_part_goes_to_the_other() -> None:
    """Rate 1/3 per ms (budget 0.25): over 60 ms, 20 ms of credit. Spec 0 owes 5 and
    spec 1 owes 100: spec 0 takes its 5, spec 1 the other 15, not a fixed half (10)."""
    budget = EarlyBudget(3, 0.25)
    budget.ready(0, 0.0)
    budget.spend(0, 5.0, 0.0)
    budget.spend(1, 100.0, 0.0)
    assert budget.ready(0, 60.0) and budget.ready(2, 60.0)  # spec 2 never spent
    assert not budget.ready(1, 60.0)
    # 85 ms owed at 1/3 per ms, alone in debt: paid 255 ms later.
    assert not budget.ready(1, 314.0)
    assert budget.ready(1, 315.0)


def test_credit_is_not_banked_while_no_spec_is_in_debt() -> None:
    budget = EarlyBudget(2, 0.25)
    budget.ready(0, 0.0)
    assert budget.ready(0, 1_000_000.0)  # a long quiet spell
    budget.spend(0, 100.0, 1_000_000.0)
    assert not budget.ready(0, 1_000_299.0)  # still the whole pause


def test_a_whole_budget_never_waits() -> None:
    budget = EarlyBudget(2, 1.0)
    budget.ready(0, 0.0)
    assert budget.spend(0, 1_000.0, 0.0) == 0.0
    assert budget.ready(0, 0.0)
