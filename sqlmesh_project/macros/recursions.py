"""Macros for the recursive indicators of marts.stock_metrics.

A recursion y_i = a * y_(i-1) + x_i, started at a row s with y_s = x_s, is the weighted
sum y_i = sum over k <= i of a^(i-k) * x_k. Powers of a over a whole history overflow
(a^-6500 for a = 0.8 is about 1e630), so the rows of a ticker are cut into blocks of
BLOCK_ROWS rows (counted by `position`):

    w_k = x_k / a^p_k                       p_k: row k's place in its block, 0 .. BLOCK_ROWS-1
    y_i = a^p_i * (sum of w_k in i's block, k <= i
                   + a^BLOCK_ROWS * sum of w_k over the previous block)

Inputs two blocks back weigh at most a^(BLOCK_ROWS + 1) < 1e-60 for every recursion of
the model (slowest: a = 13/14) and are left out. The largest weight, a^-(BLOCK_ROWS - 1),
stays under 1e199 (fastest: a = 0.8), so sums of prices stay far from overflow.

The running sum within a block is a window over (ticker, block), the same window that
computes the trailing averages: a block's partition also holds the previous block's last
rows as a lead-in (their inputs zeroed), enough to fill a 50-row window, and they carry
the previous block's total, so no join brings it.
"""

from sqlglot import exp
from sqlmesh import macro

BLOCK_ROWS = 2048


def _sql(text: str) -> exp.Expression:
    return exp.maybe_parse(text, dialect="duckdb")


def _q(expression: exp.Expression) -> str:
    return expression.sql(dialect="duckdb")


@macro()
def block_of(evaluator, position: exp.Expression) -> exp.Expression:
    """The block of a row, from its 1-based position."""
    return _sql(f"(({_q(position)}) - 1) // {BLOCK_ROWS}")


@macro()
def place_of(evaluator, position: exp.Expression) -> exp.Expression:
    """A row's place p in its block, 0 .. BLOCK_ROWS-1."""
    return _sql(f"(({_q(position)}) - 1) % {BLOCK_ROWS}")


@macro()
def lead_in_place(evaluator, rows: exp.Expression) -> exp.Expression:
    """The first place whose row also leads into the next block: the last rows-1 rows of a
    block fill the next block's windows of up to `rows` rows."""
    return _sql(str(BLOCK_ROWS - int(rows.name) + 1))


@macro()
def block_cumsum(evaluator, weighted: exp.Expression) -> exp.Expression:
    """The sum of the scaled inputs of a row's block, up to the row."""
    return _sql(f"SUM({_q(weighted)}) OVER (PARTITION BY ticker, block ORDER BY date ROWS UNBOUNDED PRECEDING)")


@macro()
def block_total(evaluator, weighted: exp.Expression) -> exp.Expression:
    """The sum of the scaled inputs of the row's block."""
    return _sql(f"SUM({_q(weighted)}) OVER (PARTITION BY ticker, block)")


@macro()
def previous_block_total(evaluator, total: exp.Expression) -> exp.Expression:
    """The previous block's total in a block's window: its lead-in rows come first and carry
    their own block's total (NULL in a first block, which has no lead-in)."""
    return _sql(f"FIRST_VALUE({_q(total)}) OVER (PARTITION BY ticker, block ORDER BY date ROWS UNBOUNDED PRECEDING)")


@macro()
def unblocked(
    evaluator, block_sum: exp.Expression, previous_total: exp.Expression, decay: exp.Expression, power: exp.Expression
) -> exp.Expression:
    """y from the running block sum and the previous block's total (NULL in a first block);
    `power` is a^p for the row."""
    return _sql(
        f"{_q(power)} * (({_q(block_sum)}) + COALESCE(POW({_q(decay)}, {BLOCK_ROWS}) * ({_q(previous_total)}), 0))"
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
    power: exp.Expression,
) -> exp.Expression:
    """x at a row, scaled to its block (x / a^p, `power` = a^p). With a carried state
    (`carried_from` set): nothing before its row, the state on it, `step` after. Without:
    TA-Lib's seed, the mean of `value` over rows first_row..seed_row, enters as
    value / n * decay^(position - seed_row) on those rows (the recursion decays each into
    value / n by the seed row), then `step`."""
    a = _q(decay)
    n = int(seed_row.name) - int(first_row.name) + 1
    seed = (
        f"WHEN position < {_q(first_row)} THEN 0 "
        f"WHEN position <= {_q(seed_row)} THEN ({_q(value)}) / {n} * POW({a}, position - {_q(seed_row)}) "
    )
    return _scaled_input(_q(state), seed, _q(step), power)


def _scaled_input(state: str, seed: str, step: str, power: exp.Expression) -> exp.Expression:
    """An input scaled to its block (/ `power`): with a carried state, 0 before its row, the
    state on it; without, the `seed` WHEN branches; then `step`."""
    x = (
        f"CASE WHEN carried_from IS NOT NULL THEN CASE WHEN position < carried_from THEN 0 "
        f"WHEN position = carried_from THEN {state} ELSE {step} END "
        f"{seed}ELSE {step} END"
    )
    return _sql(f"({x}) / {_q(power)}")


# MACD(12, 26, 9). The signal z is an EMA (decay s) of the line f - e, where the fast EMA f
# (decay a) and the slow EMA e (decay b) are recursions over the closes. After a row r where
# z, f and e are known, by linearity:
#     z_i = K_FAST * f_i - K_SLOW * e_i + q_i,   K_c = (1 - s) * c / (c - s)
# where q is one more recursion, decay s, over the closes: q_r = z_r - K_FAST * f_r
# + K_SLOW * e_r, then q_i = s * q_(i-1) + STEP * close_i. So the signal needs no pass over
# the line: q runs beside the other recursions, and z follows from f and e on the same row.
FAST, SLOW, SIGNAL = 12, 26, 9
A_FAST, A_SLOW, A_SIGNAL = 1 - 2 / (FAST + 1), 1 - 2 / (SLOW + 1), 1 - 2 / (SIGNAL + 1)
K_FAST = (1 - A_SIGNAL) * A_FAST / (A_FAST - A_SIGNAL)
K_SLOW = (1 - A_SIGNAL) * A_SLOW / (A_SLOW - A_SIGNAL)
STEP = A_SIGNAL * (1 - A_SIGNAL) * ((1 - A_SLOW) / (A_SLOW - A_SIGNAL) - (1 - A_FAST) / (A_FAST - A_SIGNAL))
SEED_ROW = SLOW + SIGNAL - 1  # 34: TA-Lib's first signal


def _seed_weights() -> list[float]:
    """q at the seed row as weights of closes 1..34, from TA-Lib's seeding: e is seeded at row
    26 with the mean of closes 1..26, f at row 26 with the mean of closes 15..26, and z at
    row 34 with the mean of the line over rows 26..34."""
    weights = []
    for j in range(1, SEED_ROW + 1):
        close = [0.0] * (SEED_ROW + 1)
        close[j] = 1.0  # the response to close j alone
        slow = {SLOW: sum(close[1 : SLOW + 1]) / SLOW}
        fast = {SLOW: sum(close[SLOW - FAST + 1 : SLOW + 1]) / FAST}
        for k in range(SLOW + 1, SEED_ROW + 1):
            slow[k] = A_SLOW * slow[k - 1] + (1 - A_SLOW) * close[k]
            fast[k] = A_FAST * fast[k - 1] + (1 - A_FAST) * close[k]
        signal = sum(fast[k] - slow[k] for k in range(SLOW, SEED_ROW + 1)) / SIGNAL
        weights.append(signal - K_FAST * fast[SEED_ROW] + K_SLOW * slow[SEED_ROW])
    return weights


SEED_WEIGHTS = _seed_weights()


@macro()
def macd_signal_input(
    evaluator,
    close: exp.Expression,
    state_signal: exp.Expression,
    state_fast: exp.Expression,
    state_slow: exp.Expression,
    power: exp.Expression,
) -> exp.Expression:
    """q's input at a row, scaled to its block (see recursion_input). With a carried state:
    q_r from the carried signal and EMAs on its row. Without: q at row 34 from TA-Lib's
    seeds, entered as weighted closes 1..34 decayed back to their rows."""
    c = _q(close)
    weights = "CASE position " + " ".join(f"WHEN {row} THEN {w!r}" for row, w in enumerate(SEED_WEIGHTS, 1)) + " END"
    state = f"{_q(state_signal)} - {K_FAST!r} * ({_q(state_fast)}) + {K_SLOW!r} * ({_q(state_slow)})"
    seed = f"WHEN position <= {SEED_ROW} THEN ({weights}) * {c} * POW({A_SIGNAL!r}, position - {SEED_ROW}) "
    return _scaled_input(state, seed, f"{STEP!r} * {c}", power)


@macro()
def macd_signal(evaluator, fast: exp.Expression, slow: exp.Expression, q: exp.Expression) -> exp.Expression:
    """The signal from the fast and slow EMAs and q on the same row."""
    return _sql(f"{K_FAST!r} * ({_q(fast)}) - {K_SLOW!r} * ({_q(slow)}) + ({_q(q)})")
