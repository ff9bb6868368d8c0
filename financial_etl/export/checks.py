"""Check of the export: the target holds exactly the mart's rows, column by column.

For every year partition it covers, `reconciles_with_mart` compares between the mart and
the target the row count and, for every column, its non-NULL count and a fingerprint that
any changed value breaks: for numbers the sum and a sum weighted by the day of the month
(equal within 1e-9 of the column's magnitude: only float summation order may differ), for
dates a sum of their yyyymmdd numbers, for text the distinct count and total length. A
column missing on either side fails by name. The queries are written once in DuckDB's
dialect and sqlglot writes them for the target (PostgreSQL, SQL Server, DuckDB). In a run
it covers what the run's export sent; `financial-etl check` covers the whole table.
"""

import datetime as dt
import math
from collections.abc import Iterator, Mapping, Sequence

import pyarrow as pa
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    multi_asset_check,
)
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from sqlglot import exp

from financial_etl.export.assets import EXPORTED_RANGES, export_pipeline
from financial_etl.export.destination import ExportDestination, export_target_for
from financial_etl.runs import CHECK_START_TAG, check_range, run_window
from financial_etl.settings import Settings
from financial_etl.transform.assets import parse_ranges
from financial_etl.warehouse import MART
from financial_etl.warehouse.engines import write_sql

TOLERANCE = 1e-9
TARGET_DIALECT = {"mssql": "tsql", "postgres": "postgres"}  # else duckdb


def column_kinds(schema: pa.Schema) -> dict[str, str]:
    """Each mart column's fingerprint kind: number, date or text."""
    kinds = {}
    for field in schema:
        if pa.types.is_floating(field.type) or pa.types.is_integer(field.type) or pa.types.is_decimal(field.type):
            kinds[field.name] = "number"
        elif pa.types.is_date(field.type) or pa.types.is_timestamp(field.type):
            kinds[field.name] = "date"
        else:
            kinds[field.name] = "text"
    return kinds


def _aggregates(column: str, kind: str) -> list[tuple[str, str]]:
    c = f'"{column}"'
    value = {
        "number": f"CAST({c} AS DOUBLE)",
        "date": f"CAST(EXTRACT(YEAR FROM {c}) * 10000 + EXTRACT(MONTH FROM {c}) * 100 "
        f"+ EXTRACT(DAY FROM {c}) AS DOUBLE)",
    }.get(kind)
    aggs = [("non_null", f"COUNT({c})")]
    if value is not None:
        aggs += [
            ("sum", f"SUM({value})"),
            ("weighted_sum", f"SUM({value} * EXTRACT(DAY FROM trade_date))"),
            ("magnitude", f"SUM(ABS({value}))"),
        ]
    else:
        aggs += [("distinct", f"COUNT(DISTINCT {c})"), ("length", f"SUM(CAST(LENGTH({c}) AS DOUBLE))")]
    return aggs


def fingerprint_sql(
    table: str, kinds: Mapping[str, str], start: dt.date | None, end: dt.date | None
) -> tuple[str, list[tuple[str, str]]]:
    """One query (DuckDB's dialect, `?` parameters): per year, the row count and every
    column's aggregates; returns the SQL and the (column, aggregate) of each output."""
    names, selects = [], []
    for column, kind in kinds.items():
        for name, sql in _aggregates(column, kind):
            names.append((column, name))
            selects.append(sql)
    where = "WHERE trade_date BETWEEN ? AND ?" if start is not None else ""
    sql = (
        f"SELECT CAST(EXTRACT(YEAR FROM trade_date) AS INTEGER) AS partition_year, COUNT(*) AS row_count, "
        f"{', '.join(selects)} FROM {table} {where} GROUP BY CAST(EXTRACT(YEAR FROM trade_date) AS INTEGER)"
    )
    return sql, names


def _by_year(rows: Sequence[Sequence], names: Sequence[tuple[str, str]]) -> dict[str, dict]:
    out = {}
    for row in rows:
        year, count, *values = row
        out[str(int(year))] = {
            "rows": int(count),
            **{key: (float(v) if v is not None else None) for key, v in zip(names, values, strict=True)},
        }
    return out


def compare(
    mart: dict[str, dict], target: dict[str, dict], names: Sequence[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """(columns that differ, partitions that differ) between two fingerprints."""
    columns, partitions = [], set()
    for year in sorted(set(mart) | set(target)):
        m, t = mart.get(year), target.get(year)
        if m is None or t is None or m["rows"] != t["rows"]:
            partitions.add(year)
        if m is None or t is None:
            continue
        for column, agg in names:
            if agg == "magnitude":  # the tolerance's scale, not a fingerprint
                continue
            a, b = m[(column, agg)], t[(column, agg)]
            if a is None or b is None:
                same = a is None and b is None
            else:
                scale = (m.get((column, "magnitude")) or 0.0) * (31 if agg == "weighted_sum" else 1)
                same = math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE * max(scale, 1.0))
            if not same:
                partitions.add(year)
                if column not in columns:
                    columns.append(column)
    return columns, sorted(partitions)


def build_export_check(settings: Settings, partitions_def: TimeWindowPartitionsDefinition, export_key: AssetKey):
    spec_target = export_target_for(settings)

    @multi_asset_check(
        specs=[
            AssetCheckSpec(
                "reconciles_with_mart",
                asset=export_key,
                description=f"{spec_target.description}: per year, the mart's row count and every "
                "column's non-NULL count and value fingerprint.",
            )
        ],
        name="export_reconciliation",
    )
    def export_reconciliation(
        context: AssetCheckExecutionContext, export_destination: ExportDestination
    ) -> Iterator[AssetCheckResult]:
        target = export_destination.target(settings)
        start, end = _covered(context, settings, partitions_def, export_key)
        warehouse = settings.warehouse
        with warehouse.reader_lock(log=context.log.warning), warehouse.connect() as con:
            schema = next(con.arrow_batches(f"SELECT * FROM {MART} WHERE 1 = 0", [], 1)).schema
            kinds = column_kinds(schema)
            sql, names = fingerprint_sql(MART, kinds, start, end)
            params = [start, end] if start else []
            mart = _by_year(con.execute(sql, params).fetchall(), names)
        missing, extra, target_fp = [], [], {}
        try:
            # Under the export's lock: creating the pipeline beside a load can wipe its folder.
            with (
                warehouse.stage_lock("export", log=context.log.warning),
                export_pipeline(settings, target).sql_client() as client,
            ):
                present = {
                    row[0]
                    for row in client.execute_sql(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = %s AND table_name = %s",
                        target.schema,
                        target.table,
                    )
                }
                missing = [c for c in kinds if c not in present]
                extra = sorted(c for c in present if c not in kinds and not c.startswith("_dlt"))
                shared = {c: k for c, k in kinds.items() if c in present}
                # dlt's dataset is the target's schema; quoted, so its case holds on every dialect.
                table = exp.table_(target.table, db=target.schema, quoted=True).sql(dialect="duckdb")
                tsql, tnames = fingerprint_sql(table, shared, start, end)
                # dlt's client binds the parameters with the target's driver.
                tsql = write_sql(tsql, TARGET_DIALECT.get(target.kind, "duckdb"))
                target_fp = _by_year(client.execute_sql(tsql, *params) or [], tnames)
        except DatabaseUndefinedRelation:
            missing = list(kinds)  # nothing exported yet
        names = [n for n in names if n[0] not in missing]
        differing, partitions = compare(mart, target_fp, names)
        differing = missing + extra + [c for c in differing if c not in missing]
        yield AssetCheckResult(
            check_name="reconciles_with_mart",
            passed=not differing and not partitions,
            metadata={
                "range": "whole table" if start is None else f"{start} to {end}",
                "columns_differing": MetadataValue.text(", ".join(differing)),
                "columns_missing_in_target": MetadataValue.text(", ".join(missing)),
                "columns_only_in_target": MetadataValue.text(", ".join(extra)),
                "partitions_differing": MetadataValue.text(", ".join(partitions)),
                "mart_rows": sum(p["rows"] for p in mart.values()),
                "target_rows": sum(p["rows"] for p in target_fp.values()),
                "columns_compared": len(kinds),
                "target": target.description,
            },
        )

    return export_reconciliation


def _covered(
    context: AssetCheckExecutionContext, settings: Settings, partitions_def, export_key: AssetKey
) -> tuple[dt.date | None, dt.date | None]:
    """The dates the check compares (None: the whole table): `financial-etl check --start/
    --end`; else the run's range, widened to what the run's export sent (everything after
    a replace); else, the check run alone, the whole table."""
    tags = context.run.tags
    if CHECK_START_TAG in tags:
        return check_range(tags, partitions_def, settings)
    window = run_window(tags, partitions_def, settings)
    if window is None:
        return None, None
    start, end = window
    event = context.instance.get_latest_materialization_event(export_key)
    if event is not None and event.run_id == context.run.run_id and event.asset_materialization is not None:
        sent = event.asset_materialization.metadata.get(EXPORTED_RANGES)
        if sent is not None and str(sent.value) == "all":
            return None, None
        if sent is not None and (ranges := parse_ranges(str(sent.value))):
            start, end = min(start, ranges[0][0]), max(end, ranges[-1][1])
    return start, end
