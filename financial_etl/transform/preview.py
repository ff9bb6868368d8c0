"""`financial-etl plan`: what a change of the SQLMesh project will do, before it runs in prod.

SQLMesh compares the working copy of `sqlmesh_project/` with prod: the models changed and
how (breaking, non-breaking, metadata), their columns added, removed or retyped, and the
intervals a deploy recomputes (a prod plan built, never applied). It then builds the
changed models in an isolated SQLMesh environment on the same warehouse and diffs its
numbers against prod (SQLMesh's table diff on the mart's key). Prod, the export and the
Dagster instance are never touched. The next `financial-etl run` deploys the change, and
the export follows it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from financial_etl.errors import ConfigError
from financial_etl.metadata import column_changes
from financial_etl.settings import Settings
from financial_etl.transform.sqlmesh_adapter import PROD, Recomputed, short_name, sqlmesh_context
from financial_etl.warehouse import MART, MART_KEY_COLUMNS
from financial_etl.warehouse.storage import storage_errors, warehouse_file

PREVIEW_ENV = "preview"


@dataclass
class ModelChange:
    model: str
    category: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: list[str] = field(default_factory=list)


@dataclass
class Preview:
    changes: list[ModelChange]
    recompute: dict[str, list[tuple[dt.date, dt.date]]]
    rows: dict[str, int] = field(default_factory=dict)  # prod, preview, matched, only_prod, only_preview
    columns: list[tuple[str, float]] = field(default_factory=list)  # (column, % of matched rows that differ)


def _changes(plan) -> list[ModelChange]:
    out = []
    modified = dict(plan.context_diff.modified_snapshots)
    for name, (new, old) in sorted(modified.items()):
        category = new.change_category.name.lower() if new.change_category is not None else "unknown"
        if new.is_model and old.is_model:
            added, removed, retyped = column_changes(old.model.columns_to_types or {}, new.model.columns_to_types or {})
            change = ModelChange(short_name(name), category, added, removed, retyped)
        else:
            change = ModelChange(short_name(name), category)
        out.append(change)
    for snapshot in plan.context_diff.added:
        out.append(ModelChange(short_name(snapshot.name), "added"))
    return out


@contextmanager
def _statements_unlogged() -> Iterator[None]:
    """SQLMesh's table diff logs each statement at its context logger's own level, so at
    any setting they print (several KB each): its engine adapter's logger drops them."""
    adapter_log = logging.getLogger("sqlmesh.core.engine_adapter")
    level = adapter_log.level
    adapter_log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        adapter_log.setLevel(level)


def build_preview(settings: Settings, end: dt.date, log: Callable[[str], None] = print) -> Preview:
    """Plan the working copy against prod, build it in the preview environment and diff
    the mart's numbers. Raises ConfigError when prod does not exist yet."""
    warehouse = settings.warehouse
    after = (end + dt.timedelta(days=1)).isoformat()
    with (
        warehouse.stage_lock("sqlmesh", log=log),
        storage_errors("the plan preview", warehouse_file(warehouse)),
        sqlmesh_context(settings) as context,
    ):
        if context.state_reader.get_environment(PROD) is None:
            raise ConfigError("there is no prod to compare with yet: run `financial-etl run` first")
        # What a deploy would do: a prod plan, built and never applied.
        plan = context.plan_builder(PROD, skip_tests=True, execution_time=after).build()
        recorded = Recomputed()
        recorded.add_plan(plan)
        preview = Preview(_changes(plan), recorded.intervals)
        if not preview.changes:
            return preview
        log(f"building the change in SQLMesh environment {PREVIEW_ENV!r} (prod untouched)…")
        context.plan(
            PREVIEW_ENV,
            skip_tests=True,
            no_prompts=True,
            auto_apply=True,
            execution_time=after,
            include_unmodified=False,
        )
        if any(c.model == MART and c.category != "added" for c in preview.changes):
            with _statements_unlogged():
                diff = context.table_diff(
                    PROD,
                    PREVIEW_ENV,
                    on=list(MART_KEY_COLUMNS),
                    select_models=[MART],
                    show=False,
                    skip_grain_check=True,
                    decimals=9,
                )[0]
                row_diff = diff.row_diff()
            preview.rows = {
                "prod": row_diff.source_count,
                "preview": row_diff.target_count,
                "matched": row_diff.join_count,
                "only_prod": row_diff.s_only_count,
                "only_preview": row_diff.t_only_count,
            }
            stats = row_diff.column_stats
            for column, row in stats.iterrows():
                pct = float(row.get("pct_match", 100.0))
                if pct < 100.0:
                    preview.columns.append((str(column), 100.0 - pct))
    return preview


def format_preview(preview: Preview, project: str) -> list[str]:
    lines = [f"financial-etl plan: {project} against prod"]
    if not preview.changes:
        return lines + ["  no model changes: prod runs exactly this project"]
    lines.append("  models changed:")
    for change in preview.changes:
        lines.append(f"    {change.model:<24} {change.category}")
        for what, columns in (("added", change.added), ("removed", change.removed), ("retyped", change.retyped)):
            if columns:
                lines.append(f"      columns {what}: {', '.join(columns)}")
    lines.append("  a deploy recomputes:")
    for model, ranges in sorted(preview.recompute.items()):
        lines.append(f"    {model:<24} " + (", ".join(f"{a} to {b}" for a, b in ranges) or "nothing (metadata only)"))
    if preview.rows:
        r = preview.rows
        lines.append(f"  numbers, prod vs {PREVIEW_ENV} ({MART}, on {', '.join(MART_KEY_COLUMNS)}):")
        lines.append(
            f"    rows: prod {r['prod']}, preview {r['preview']}, matched {r['matched']}, "
            f"only in prod {r['only_prod']}, only in preview {r['only_preview']}"
        )
        if preview.columns:
            for column, pct in preview.columns:
                lines.append(f"    {column:<24} differs in {pct:.1f}% of matched rows")
        else:
            lines.append("    every shared column equal on every matched row")
    lines.append("  nothing was applied to prod or the export: `financial-etl run` deploys it")
    return lines
