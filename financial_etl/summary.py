"""The closing summary of `financial-etl run`: rows per asset and where the data is."""

from __future__ import annotations

import datetime as dt

from pathlib import Path

import duckdb

from financial_etl.errors import FinancialEtlError
from financial_etl.export_target import export_target_for
from financial_etl.settings import Settings
from financial_etl.warehouse_lock import warehouse_lock


def _count(path: str, sql: str, params: list) -> int | str:
    # Under the warehouse lock: another run may be writing the file right now.
    try:
        with warehouse_lock(Path(path)), duckdb.connect(path, read_only=True) as con:
            return con.execute(sql, params).fetchone()[0]
    except (duckdb.Error, FinancialEtlError):
        return "?"


def print_summary(settings: Settings, result, start: dt.date, end: dt.date) -> None:
    db = str(settings.duckdb_path)
    target = export_target_for(settings)  # description only: no secret is printed
    raw = _count(db, "SELECT count(*) FROM raw.eod_prices_raw WHERE date BETWEEN ? AND ?", [start, end])
    mart = _count(db, "SELECT count(*) FROM marts.stock_metrics WHERE trade_date BETWEEN ? AND ?", [start, end])
    exported: int | str = "?"
    for mat in result.get_asset_materialization_events():
        m = mat.materialization
        if m.asset_key.path == [target.schema, target.table]:
            exported = m.metadata["rows_exported"].value
    print(f"\nfinancial-etl: run {result.run_id} succeeded, {start} to {end}")
    print(f"  raw.eod_prices_raw      {raw:>9} rows in range   {db}")
    print(f"  marts.stock_metrics     {mart:>9} rows in range   {db}")
    print(f"  {target.schema}.{target.table:<20} {exported:>6} rows exported  {target.description}")
