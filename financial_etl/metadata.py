"""What the UI shows about each asset: column schemas, column lineage, markdown tables.

Built from the same sources of truth the pipeline uses (the raw Arrow schema, the SQLMesh
model's columns and descriptions, sqlglot lineage), so the UI cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from dagster import (
    AssetKey,
    TableColumn,
    TableColumnDep,
    TableColumnLineage,
    TableSchema,
)
from sqlmesh import Context

from financial_etl.lineage import column_lineage
from financial_etl.sources.prices import RAW_SCHEMA

RAW_DESCRIPTIONS = {
    "ticker": "Ticker symbol",
    "date": "Trading session date",
    "open_price": "Opening price",
    "high_price": "Session high",
    "low_price": "Session low",
    "close_price": "Closing price (adjusted when the source adjusts)",
    "volume": "Shares traded",
}
_ARROW_TO_SQL = {"string": "text", "date32[day]": "date", "double": "double", "int64": "bigint"}


def raw_table_schema() -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(f.name, _ARROW_TO_SQL.get(str(f.type), str(f.type)), RAW_DESCRIPTIONS.get(f.name))
            for f in RAW_SCHEMA
        ]
    )


def model_table_schema(context: Context, model_name: str) -> TableSchema:
    model = context.get_model(model_name, raise_if_missing=True)
    descriptions = model.column_descriptions or {}
    return TableSchema(
        columns=[
            TableColumn(name, dtype.sql(dialect=model.dialect).lower(), descriptions.get(name))
            for name, dtype in (model.columns_to_types or {}).items()
        ]
    )


def model_column_lineage(
    context: Context, model_name: str, asset_keys_by_table: Mapping[str, AssetKey]
) -> TableColumnLineage:
    """SQLMesh/sqlglot lineage as Dagster's column lineage (source table -> asset key)."""
    deps = {}
    for column, sources in column_lineage(context, model_name).items():
        deps[column] = [
            TableColumnDep(asset_key=asset_keys_by_table[table], column_name=name)
            for table, name in sources
            if table in asset_keys_by_table
        ]
    return TableColumnLineage(deps_by_column=deps)


def markdown_table(frame: pd.DataFrame, max_rows: int = 10) -> str:
    """A small DataFrame as a markdown table (no extra dependency)."""
    if frame.empty:
        return "_no rows_"
    frame = frame.head(max_rows)

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.6g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)
