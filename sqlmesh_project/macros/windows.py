"""Window macros for marts.stock_metrics.

`@trailing(expr, n)` is `expr` over the ticker's last n trading rows, the current one
included; n = 0 gives the ticker's ordered window with no frame (for ROW_NUMBER, LAG).
`@trailing(expr, n, block)` also partitions by the rows' block (macros/recursions.py),
whose partition holds enough of the previous block's rows to fill the window.
Written out inline (not as a named WINDOW) so SQLMesh's column lineage sees
that every windowed indicator also depends on ticker and date.
"""

from sqlglot import exp
from sqlmesh import macro


@macro()
def trailing(
    evaluator, expression: exp.Expression, rows: exp.Expression, block: exp.Expression | None = None
) -> exp.Expression:
    n = int(rows.name)
    if n < 0:
        raise ValueError(f"@trailing needs a row count >= 0, got {n}")
    frame = f" ROWS BETWEEN {n - 1} PRECEDING AND CURRENT ROW" if n else ""
    partition = "ticker" + (f", {block.sql(dialect='duckdb')}" if block is not None else "")
    sql = f"{expression.sql(dialect='duckdb')} OVER (PARTITION BY {partition} ORDER BY date{frame})"
    return exp.maybe_parse(sql, dialect="duckdb")
