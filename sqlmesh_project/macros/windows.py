"""Window macros for marts.stock_metrics.

`@trailing(expr, n)` is `expr` over the ticker's last n trading rows, the current one
included. Written out inline (not as a named WINDOW) so SQLMesh's column lineage sees
that every windowed indicator also depends on ticker and date.
"""

from sqlglot import exp
from sqlmesh import macro


@macro()
def trailing(evaluator, expression: exp.Expression, rows: exp.Expression) -> exp.Expression:
    n = int(rows.name)
    if n < 1:
        raise ValueError(f"@trailing needs a positive row count, got {n}")
    sql = (
        f"{expression.sql(dialect='duckdb')} OVER (PARTITION BY ticker ORDER BY date "
        f"ROWS BETWEEN {n - 1} PRECEDING AND CURRENT ROW)"
    )
    return exp.maybe_parse(sql, dialect="duckdb")
