"""Macros for the recursive indicators of marts.stock_metrics.

A recursion y_i = a * y_(i-1) + x_i, started at a row s with y_s = x_s, is the weighted
sum y_i = sum over k <= i of a^(i-k) * x_k. Powers of a over a whole history overflow
(a^-6500 for a = 11/13 is about 1e470), so the rows of a ticker are cut into blocks of
BLOCK_ROWS rows (counted by `position`):

    w_k = x_k * a^-p_k                      p_k: row k's place in its block, 0 .. BLOCK_ROWS-1
    y_i = a^p_i * (sum of w_k in i's block, k <= i)
        + a^(p_i + BLOCK_ROWS) * (sum of w_k over the previous block)

Inputs two blocks back weigh at most a^(BLOCK_ROWS + 1) < 1e-16 for every recursion of
the model (slowest: a = 13/14), below a double's precision, and are left out. The
largest weight, a^-(BLOCK_ROWS - 1), stays under 1e50 (fastest: a = 0.8).
"""

from sqlglot import exp
from sqlmesh import macro

BLOCK_ROWS = 512


def _sql(text: str) -> exp.Expression:
    return exp.maybe_parse(text, dialect="duckdb")


def _q(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")


BLOCK = f"((position - 1) // {BLOCK_ROWS})"  # a row's block
PLACE = f"((position - 1) % {BLOCK_ROWS})"  # its place p in the block


@macro()
def block_of(evaluator, position: exp.Expression) -> exp.Expression:
    """The block of a row, from its 1-based position."""
    return _sql(f"(({_q(position)}) - 1) // {BLOCK_ROWS}")


@macro()
def block_cumsum(evaluator, weighted: exp.Expression) -> exp.Expression:
    """The sum of the scaled inputs of a row's block, up to the row."""
    return _sql(
        f"SUM({_q(weighted)}) OVER (PARTITION BY ticker, {BLOCK} "
        "ORDER BY date ROWS UNBOUNDED PRECEDING)"
    )


@macro()
def unblocked(evaluator, block_sum: exp.Expression, previous_total: exp.Expression, decay: exp.Expression) -> exp.Expression:
    """y from the running block sum and the previous block's total (NULL in a first block)."""
    a = _q(decay)
    return _sql(
        f"POW({a}, {PLACE}) * ({_q(block_sum)}) "
        f"+ COALESCE(POW({a}, {PLACE} + {BLOCK_ROWS}) * ({_q(previous_total)}), 0)"
    )


@macro()
def recursion_input(
    evaluator,
    state: exp.Expression,
    value: exp.Expression,
    first_row: exp.Expression,
    seed_row: exp.Expression,
    decay: exp.Expression,
    step: exp.Expression,
) -> exp.Expression:
    """x at a row, scaled to its block (x * a^-p). With a carried state (`carried_from`
    set): nothing before its row, the state on it, `step` after. Without: TA-Lib's seed,
    the mean of `value` over rows first_row..seed_row, enters as
    value / n * decay^(position - seed_row) on those rows (the recursion decays each into
    value / n by the seed row), then `step`."""
    a = _q(decay)
    n = int(seed_row.name) - int(first_row.name) + 1
    x = (
        f"CASE WHEN carried_from IS NOT NULL THEN CASE WHEN position < carried_from THEN 0 "
        f"WHEN position = carried_from THEN {_q(state)} ELSE {_q(step)} END "
        f"WHEN position < {_q(first_row)} THEN 0 "
        f"WHEN position <= {_q(seed_row)} THEN ({_q(value)}) / {n} * POW({a}, position - {_q(seed_row)}) "
        f"ELSE {_q(step)} END"
    )
    return _sql(f"({x}) * POW({a}, -{PLACE})")
