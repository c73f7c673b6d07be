"""The section timer counts each section's own CPU (a nested section's is not counted
twice) and wraps sections of modules imported after it is installed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.section_timer import SectionTimer


def _burn(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i
    return total


def test_a_section_does_not_count_the_sections_it_calls() -> None:
    timer = SectionTimer()
    inner = timer.wrap("inner", _burn)

    def outer_body() -> int:
        return inner(2_000_000) + _burn(1_000)

    outer = timer.wrap("outer", outer_body)
    outer()
    outer()
    assert timer.calls == {"inner": 2, "outer": 2}
    # The outer section's own work is ~1/2000 of the inner's: counting the inner's CPU
    # in the outer's too would make it at least as large.
    assert timer.seconds["outer"] < 0.2 * timer.seconds["inner"]
    assert timer.seconds["inner"] > 0


@pytest.fixture
def target_module(tmp_path: Path) -> Iterator[str]:
    name = "section_timer_target"
    (tmp_path / f"{name}.py").write_text(
        "class Stage:\n"
        "    def step(self, n):\n"
        "        return Stage.helper(n) + 1\n"
        "    @staticmethod\n"
        "    def helper(n):\n"
        "        return n * 2\n"
        "def free(n):\n"
        "    return Stage().step(n)\n"
    )
    sys.path.insert(0, str(tmp_path))
    finders = list(sys.meta_path)
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        sys.meta_path[:] = finders
        sys.modules.pop(name, None)


def test_sections_of_a_module_imported_later_are_wrapped(target_module: str) -> None:
    import importlib

    assert target_module not in sys.modules
    timer = SectionTimer()
    timer.install(
        [f"{target_module}:{name}" for name in ("Stage.step", "Stage.helper", "free", "gone")]
    )
    module = importlib.import_module(target_module)
    assert module.free(3) == 7  # behaviour unchanged
    assert module.Stage().step(1) == 3
    assert timer.calls == {
        f"{target_module}:free": 1,
        f"{target_module}:Stage.step": 2,
        f"{target_module}:Stage.helper": 2,
    }
    assert timer.missing == [f"{target_module}:gone"]
    report = timer.report(1.0)
    assert f"{target_module}:Stage.step" in report and "not in its module" in report
