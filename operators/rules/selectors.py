"""How a rule's selector, a silence or an inhibition picks alerts by their dims.

A pattern is an exact value, a list of values (any of them) or ``"*"`` (any value). One
function decides a match, so rules, silences and inhibition agree on what a pattern
means.

For a rule's ``where``, ``"*"`` on a rollup dim (`model_version`, `segment`,
`endpoint`) means *each value separately*, like ``pulse query --by``: the rule reads the
rows where that dim is set, not its rollup row. A rollup dim the selector does not name
reads its rollup row (aggregated over that dim). `tenant`, `model_id`, `deployment` and
extra dims are never rolled up, so leaving them out means each value separately.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

ANY = "*"
ROLLUP = "*"  # the value a rollup dim reads in the rows that aggregate over it
ROLLUP_DIMS = ("model_version", "segment", "endpoint")  # operators.cells.ROLLUP_DIMS

Pattern = str | Sequence[str]


def value_matches(pattern: Pattern, value: str) -> bool:
    """An exact value, one of a list, or ``"*"`` for any value."""
    if isinstance(pattern, str):
        return pattern in (ANY, value)
    return value in pattern


def dims_match(patterns: Mapping[str, Pattern], dims: Mapping[str, str]) -> bool:
    """Every named dim is present and matches (silences, inhibition: plain matching)."""
    return all(name in dims and value_matches(p, dims[name]) for name, p in patterns.items())


def selects_cell(
    where: Mapping[str, Pattern], cell: Mapping[str, str], rollup_dims: Iterable[str] = ROLLUP_DIMS
) -> bool:
    """Whether a rule with selector `where` reads this `metrics` cell (see the module doc):
    named dims match (``"*"`` on a rollup dim excludes its rollup row), unnamed rollup
    dims must be rolled up."""
    rollup = set(rollup_dims)
    if not all(selects_value(where.get(name), cell.get(name, ROLLUP), True) for name in rollup):
        return False
    return all(
        name in cell and selects_value(pattern, cell[name], False)
        for name, pattern in where.items()
        if name not in rollup
    )


def selects_value(pattern: Pattern | None, value: str, rollup_dim: bool) -> bool:
    """One dim of :func:`selects_cell`: `pattern` None when the selector does not name the
    dim. The rules stage applies it to each distinct value of a dims column at once."""
    if not rollup_dim:
        return pattern is None or value_matches(pattern, value)
    if pattern is None:
        return value == ROLLUP
    return value != ROLLUP and value_matches(pattern, value)
