"""Markdown tables for check and asset metadata (no extra dependency)."""

from __future__ import annotations

import pandas as pd


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
