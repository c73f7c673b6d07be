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


def test_a_quiet_spell_banks_at_most_the_bursts_credit() -> None:
    """Budget 0.25 and a 300 ms burst: at most 100 ms of work banked, however long the
    quiet; an emission within it does not wait, only the part beyond it does."""
    budget = EarlyBudget(2, 0.25, burst_ms=300.0)
    budget.ready(0, 0.0)
    assert budget.ready(0, 1_000_000.0)  # a long quiet spell
    assert budget.spend(0, 100.0, 1_000_000.0) == 0.0  # the bank pays for it
    assert budget.ready(0, 1_000_000.0)
    assert budget.spend(0, 50.0, 1_000_000.0) == 150.0  # nothing left: 50 ms owed
    assert not budget.ready(0, 1_000_149.0)
    assert budget.ready(0, 1_000_150.0)


def test_a_bank_fills_again_only_up_to_the_burst() -> None:
    budget = EarlyBudget(1, 0.25, burst_ms=300.0)
    budget.ready(0, 0.0)
    budget.spend(0, 40.0, 0.0)  # owes 40: paid at 120 ms, banked 100 by 420 ms
    assert budget.spend(0, 100.0, 420.0) == 0.0
    budget.ready(0, 10_000.0)
    assert budget.spend(0, 130.0, 10_000.0) == 90.0  # 100 banked, 30 owed


def test_debts_are_paid_before_any_bank_is_filled() -> None:
    """Spec 0 owes 20 ms; in 60 ms the budget earns 20: all of it pays spec 0's debt,
    none goes to filling spec 1's bank (shared, spec 0 would still owe 10)."""
    budget = EarlyBudget(2, 0.25, burst_ms=300.0)
    budget.ready(0, 0.0)
    budget.spend(0, 20.0, 0.0)
    assert budget.ready(0, 60.0)
    assert budget.spend(1, 1.0, 60.0) == 3.0  # and spec 1 had banked nothing


def test_a_whole_budget_never_waits() -> None:
    budget = EarlyBudget(2, 1.0)
    budget.ready(0, 0.0)
    assert budget.spend(0, 1_000.0, 0.0) == 0.0
    assert budget.ready(0, 0.0)
