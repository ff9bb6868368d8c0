"""The warehouse's names: every table, schema and asset key is defined here and only here.

Assets, checks, sensors, the CLI and the benchmarks import these names; the SQL they run
is built from them, so renaming a table is a one-line change.
"""

from __future__ import annotations

from dagster import AssetKey

RAW_DATASET = "raw"  # dlt's dataset (the DuckDB schema) of the extract
RAW_TABLE = "eod_prices_raw"
QUARANTINE_TABLE = "eod_prices_quarantine"
ACTIONS_TABLE = "corporate_actions"  # the source's dividends and splits, one row per (ticker, date)
RAW = f"{RAW_DATASET}.{RAW_TABLE}"
QUARANTINE = f"{RAW_DATASET}.{QUARANTINE_TABLE}"
ACTIONS = f"{RAW_DATASET}.{ACTIONS_TABLE}"

MART_SCHEMA = "marts"
MART_TABLE = "stock_metrics"
MART = f"{MART_SCHEMA}.{MART_TABLE}"  # also the SQLMesh model's name

RAW_KEY = AssetKey([RAW_DATASET, RAW_TABLE])
MART_KEY = AssetKey([MART_SCHEMA, MART_TABLE])

# The merge keys: one row per ticker and session in raw, mart and export.
RAW_KEY_COLUMNS = ("ticker", "date")
MART_KEY_COLUMNS = ("ticker", "trade_date")


def export_key(schema: str, table: str) -> AssetKey:
    """The export asset's key is the target's schema and table (FINANCIAL_ETL_EXPORT_*)."""
    return AssetKey([schema, table])
