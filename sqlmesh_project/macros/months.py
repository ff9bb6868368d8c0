"""Month conditions that let Spark open only the month folders a query needs.

`@in_audited_months()`: the mart's `trade_month` within the months of the interval an
audit checks. An audit's `@this_model` filters `trade_date`, which Spark cannot prune
the mart's month partitions by: with this condition too, a one-day audit opens that
month's file, not every month's (0.2 s against 0.45 s an audit on the cluster)."""

from sqlglot import exp
from sqlmesh import macro


@macro()
def in_audited_months(evaluator) -> exp.Expression:
    start, end = evaluator.locals.get("start_ds"), evaluator.locals.get("end_ds")
    if not start or not end:  # rendered without an interval: every month
        return exp.true()
    return exp.maybe_parse(f"trade_month BETWEEN DATE '{start[:7]}-01' AND DATE '{end}'", dialect="duckdb")


@macro()
def raw_months(evaluator, low: exp.Expression, high: exp.Expression) -> exp.Expression:
    """On Spark, raw's `month` (its lake's partition, 'YYYY-MM') within the months of the
    dates `low` .. `high`, which may be scalar subqueries (Spark evaluates them before
    listing the folders; a NULL bound reads none). Spark prunes raw's month folders by that
    column only, and a filter on `date` alone opens every month's file. Other engines
    have no such column: TRUE."""
    adapter = evaluator.locals.get("engine_adapter")
    if adapter is None or adapter.dialect != "spark":
        return exp.true()
    low_month, high_month = (f"STRFTIME(CAST({bound.sql(dialect='duckdb')} AS DATE), '%Y-%m')" for bound in (low, high))
    return exp.maybe_parse(f"month BETWEEN {low_month} AND {high_month}", dialect="duckdb")
