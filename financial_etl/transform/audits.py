"""Evaluate a SQLMesh model's audits against the table people read, one result each.

SQLMesh runs audits inside a plan and reports only pass/fail; here each audit is rendered
with the model's own arguments and run against the prod view for a date range, giving the
violating-row count, a sample of the rows and the query (what an asset check shows).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd
from sqlglot import exp
from sqlmesh import Context


@dataclass(frozen=True)
class AuditOutcome:
    name: str
    blocking: bool
    violations: int
    sample: pd.DataFrame
    query: str
    dates: tuple[dt.date, ...] = ()  # distinct trade_dates of the violating rows, when known

    @property
    def passed(self) -> bool:
        return self.violations == 0


def audit_names(context: Context, model_name: str) -> list[tuple[str, bool]]:
    """(audit name, blocking) for each audit of the model, in the model's order."""
    model = context.get_model(model_name, raise_if_missing=True)
    return [(audit.name, _blocking(audit, args)) for audit, args in model.audits_with_args]


def _blocking(audit, args: dict) -> bool:
    flag = args.get("blocking")
    return flag == exp.true() if flag is not None else bool(audit.blocking)


def evaluate_audits(
    context: Context,
    model_name: str,
    start: dt.date,
    end: dt.date,
    *,
    table: str | None = None,
    sample_rows: int = 5,
) -> list[AuditOutcome]:
    """Run every audit of `model_name` over [start, end] of `table` (default: the model's view)."""
    model = context.get_model(model_name, raise_if_missing=True)
    adapter = context.engine_adapter
    outcomes = []
    for audit, args in model.audits_with_args:
        args = dict(args)
        blocking = _blocking(audit, args)
        args.pop("blocking", None)
        query = model.render_audit_query(
            audit,
            start=start.isoformat(),
            end=end.isoformat(),
            this_model=table or model.name,
            engine_adapter=adapter,
            **args,
        )
        count = adapter.fetchone(exp.select("COUNT(*)").from_(query.subquery("audit")), quote_identifiers=True)[0]
        sample = adapter.fetchdf(query.limit(sample_rows), quote_identifiers=True) if count else pd.DataFrame()
        dates: tuple[dt.date, ...] = ()
        if count and "trade_date" in sample.columns:
            rows = adapter.fetchall(
                exp.select("trade_date").distinct().from_(query.subquery("audit")).order_by("trade_date"),
                quote_identifiers=True,
            )
            dates = tuple(pd.Timestamp(r[0]).date() for r in rows)
        outcomes.append(
            AuditOutcome(
                name=audit.name,
                blocking=blocking,
                violations=int(count),
                sample=sample,
                query=query.sql(dialect=model.dialect, pretty=True),
                dates=dates,
            )
        )
    return outcomes
