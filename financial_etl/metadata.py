"""Helpers for check and asset metadata: markdown tables (no extra dependency) and what
changed between two versions of a table's columns."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def column_changes(old: Mapping[str, object], new: Mapping[str, object]) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, retyped) between two {column: type} mappings, in their orders."""
    return (
        [c for c in new if c not in old],
        [c for c in old if c not in new],
        [c for c in new if c in old and old[c] != new[c]],
    )


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
