"""The thin adapter that extends dagster-sqlmesh 0.22.0 with what this project needs.

dagster-sqlmesh turns the SQLMesh project into a Dagster multi-asset and runs plans
through its event console. It lacks three things this project needs, added here and
nowhere else:

1. Asset keys without the DuckDB catalog (`marts/stock_metrics`, `raw/eod_prices_raw`),
   so the dlt asset's key is exactly the key the SQLMesh asset depends on. The dlt table
   is *not* declared in external_models.yaml: with dagster-sqlmesh 0.22.0 that made the
   first run fail (KeyError in MaterializationTracker.initialize_from_plan, upstream #65).
   The model casts every column instead, so SQLMesh knows its schema without it.
2. Partitions and a single-run backfill policy: its `sqlmesh_assets` wraps
   `multi_asset` without them, so we build the multi-asset from its public
   `sqlmesh_to_multi_asset_options`.
3. Runs of a date range in `prod`: SQLMesh refuses start/end on a prod plan unless it is
   a restatement. A partition range is therefore run as (a) a plain prod plan, only when
   prod is missing or behind the project, which creates or migrates the model and fills
   the intervals before the range, then (b) a restatement of exactly the range, so
   re-running a partition recomputes it from the current raw rows.
"""

from __future__ import annotations

import datetime as dt
import os
import typing as t
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    PartitionsDefinition,
    multi_asset,
)
from dagster_sqlmesh import SQLMeshContextConfig, SQLMeshDagsterTranslator, SQLMeshResource
from dagster_sqlmesh.asset import sqlmesh_to_multi_asset_options
from dagster_sqlmesh.console import ConsoleEvent, PlanBuilt
from dagster_sqlmesh.resource import DagsterSQLMeshEventHandler
from sqlglot import exp
from sqlmesh import Context
from sqlmesh.core.config import Config as MeshConfig
from sqlmesh.core.model import Model

from financial_etl.settings import Settings
from financial_etl.warehouse.engines import STATE_ENV, WAREHOUSE_ENV
from financial_etl.warehouse.project import project_config_module

PROD = "prod"


def mesh_config(
    project_dir: str,
    duckdb_path: str,
    start_date: str,
    unit_tests: bool = True,
    warehouse: str | None = None,
    metastore: str | None = None,
    state: str | None = None,
) -> MeshConfig:
    return project_config_module(project_dir).build_config(
        duckdb_path, start_date, unit_tests=unit_tests, warehouse=warehouse, metastore=metastore, state=state
    )


def lookback_rows(settings: Settings) -> int:
    """How many trading rows before its own each mart row reads (the project's variable)."""
    return int(project_config_module(str(settings.sqlmesh_project_dir)).VARIABLES["lookback_rows"])


class ProjectTranslator(SQLMeshDagsterTranslator):
    """Asset keys are [schema, table]: the catalog is the DuckDB file's name, which varies."""

    def get_asset_key_name(self, fqn: str) -> Sequence[str]:
        table = exp.to_table(fqn)
        return [table.db, table.name]

    def get_group_name(self, context: Context, model: Model) -> str:
        return "transform"


class ProjectSQLMeshConfig(SQLMeshContextConfig):
    """Carries the warehouse path and start date explicitly (handed to config.py's
    `build_config`, not read from the environment), so the config Dagster serializes into
    each step process names the same database. A server warehouse's URL holds a password,
    so the config names only the variables it is read from (FINANCIAL_ETL_WAREHOUSE,
    FINANCIAL_ETL_SQLMESH_STATE)."""

    duckdb_path: str
    start_date: str
    warehouse_env: str = ""
    spark_metastore: str = ""
    state_env: str = ""

    def get_translator(self) -> SQLMeshDagsterTranslator:
        # dagster-sqlmesh re-instantiates the translator from the config in each process.
        return ProjectTranslator()

    @property
    def sqlmesh_config(self) -> MeshConfig:
        warehouse = os.environ.get(self.warehouse_env) if self.warehouse_env else None
        return mesh_config(
            self.path,
            self.duckdb_path,
            self.start_date,
            unit_tests=False,
            warehouse=warehouse,
            metastore=self.spark_metastore or None,
            state=os.environ.get(self.state_env) if self.state_env else None,
        )


def project_sqlmesh_config(settings: Settings) -> ProjectSQLMeshConfig:
    return ProjectSQLMeshConfig(
        path=str(settings.sqlmesh_project_dir),
        gateway=project_config_module(str(settings.sqlmesh_project_dir)).GATEWAY,
        duckdb_path=str(settings.duckdb_path),
        start_date=settings.start_date.isoformat(),
        warehouse_env="" if settings.warehouse.engine == "duckdb" else WAREHOUSE_ENV,
        spark_metastore=settings.warehouse.spark_metastore or "",
        state_env=STATE_ENV if settings.warehouse.state_url else "",
    )


@contextmanager
def open_context(config: ProjectSQLMeshConfig) -> Iterator[Context]:
    """A SQLMesh context on the warehouse, closed with all its connections after use:
    `Context.close()` leaves the engine adapter's DuckDB connection open when no plan
    ran, and DuckDB then refuses a read-only connection from the same process."""
    context = Context(paths=config.path, gateway=config.gateway, config=config.sqlmesh_config)
    try:
        yield context
    finally:
        context.close()
        for adapter in context.engine_adapters.values():
            adapter.close()


def sqlmesh_context(settings: Settings):
    return open_context(project_sqlmesh_config(settings))


@dataclass
class Recomputed:
    """What SQLMesh's own plans in one transform step recomputed: each model's intervals
    (inclusive dates, merged) and the models the plans changed, with SQLMesh's change
    category ("breaking", "non_breaking", "metadata", ...) and the new table version."""

    intervals: dict[str, list[tuple[dt.date, dt.date]]] = field(default_factory=dict)
    changes: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def add_plan(self, plan) -> None:
        for snapshot_intervals in plan.missing_intervals:
            name = short_name(snapshot_intervals.snapshot_id.name)
            days = self.intervals.get(name, []) + [_days(s, e) for s, e in snapshot_intervals.intervals]
            self.intervals[name] = merge_ranges(days)
        modified = set(plan.directly_modified)
        for ids in plan.indirectly_modified.values():
            modified |= set(ids)
        for snapshot_id in modified:
            snapshot = plan.context_diff.snapshots.get(snapshot_id)
            if snapshot is not None and snapshot.change_category is not None:
                self.changes[short_name(snapshot.name)] = snapshot.change_category.name.lower()
        if plan.environment.name == PROD:
            for table in plan.environment.snapshots:
                self.versions[short_name(table.name)] = table.version


def short_name(fqn: str) -> str:
    """`"catalog"."schema"."table"` as `schema.table`, the project's names (warehouse/)."""
    table = exp.to_table(fqn)
    return f"{table.db}.{table.name}"


def _days(start_ms: int, end_ms: int) -> tuple[dt.date, dt.date]:
    """A SQLMesh interval [start, end) in epoch milliseconds as inclusive dates."""
    first = dt.datetime.fromtimestamp(start_ms / 1000, dt.UTC).date()
    last = dt.datetime.fromtimestamp(end_ms / 1000, dt.UTC).date() - dt.timedelta(days=1)
    return first, max(first, last)


def merge_ranges(ranges) -> list[tuple[dt.date, dt.date]]:
    """Inclusive date ranges, sorted, with overlapping or adjacent ones merged."""
    merged: list[tuple[dt.date, dt.date]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + dt.timedelta(days=1):
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


_RECORDING: ContextVar[Recomputed | None] = ContextVar("financial_etl_sqlmesh_plans", default=None)


@contextmanager
def recording_plans() -> Iterator[Recomputed]:
    """Collects every plan SQLMesh builds inside the block (through the event handler)."""
    recorded = Recomputed()
    token = _RECORDING.set(recorded)
    try:
        yield recorded
    finally:
        _RECORDING.reset(token)


class QuietEventHandler(DagsterSQLMeshEventHandler):
    """dagster-sqlmesh logs each SQLMesh console event as a dict of plan objects at INFO:
    several KB of Python reprs per run. They go to DEBUG (the UI's debug filter, the
    CLI's --verbose); errors stay errors. Each plan SQLMesh builds is also recorded
    (`recording_plans`): what it recomputes is what the export must re-send."""

    def process_events(self, event: ConsoleEvent) -> None:
        if isinstance(event, PlanBuilt) and (recorded := _RECORDING.get()) is not None:
            recorded.add_plan(event.plan)
        super().process_events(event)

    def log(self, level: str | int, message: str, obj: dict[str, t.Any] | None = None) -> None:
        super().log("error" if level == "error" else "debug", message, obj)


class ProjectSQLMeshResource(SQLMeshResource):
    """SQLMeshResource with the quiet event handler."""

    def create_event_handler(
        self,
        *,
        context: AssetExecutionContext,
        config: SQLMeshContextConfig,
        dag,
        models_map: dict[str, Model],
        prefix: str,
        is_testing: bool,
        materializations_enabled: bool,
    ) -> DagsterSQLMeshEventHandler:
        return QuietEventHandler(
            context=context,
            dag=dag,
            models_map=models_map,
            prefix=prefix,
            translator=config.get_translator(),
            is_testing=is_testing,
            materializations_enabled=materializations_enabled,
        )


def sqlmesh_multi_asset(
    *,
    config: ProjectSQLMeshConfig,
    partitions_def: PartitionsDefinition | None,
    name: str = "sqlmesh_models",
    check_specs: Sequence[AssetCheckSpec] = (),
) -> t.Callable[[t.Callable[..., t.Any]], AssetsDefinition]:
    """`sqlmesh_assets`, plus partitions, a single-run backfill policy and check specs.
    Other attributes go on the result through `AssetsDefinition.map_asset_specs`."""
    options = sqlmesh_to_multi_asset_options(environment=PROD, config=config)
    outs = dict(options.to_asset_outs())
    return multi_asset(
        name=name,
        outs=outs,
        deps=list(options.to_asset_deps()),
        internal_asset_deps=options.to_internal_asset_deps(),
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run() if partitions_def else None,
        check_specs=list(check_specs),
    )


def model_columns(settings: Settings, model_name: str) -> list[str]:
    """A model's columns, in its order, as SQLMesh knows them (no warehouse access)."""
    with sqlmesh_context(settings) as context:
        return list(context.get_model(model_name, raise_if_missing=True).columns_to_types or {})


def model_names(context: Context) -> list[str]:
    return [model.name for model in context.models.values() if not model.kind.is_external]


def code_version(context: Context, model_name: str) -> str:
    """The model's data fingerprint: it changes when the SQL (or a macro it uses) changes,
    so Dagster flags the mart as changed."""
    # model.data_hash needs no database (definitions load must not touch the warehouse).
    return context.get_model(model_name, raise_if_missing=True).data_hash


def prod_matches_project(context: Context) -> bool:
    """True when prod exists and runs exactly the project's current models, so a range can
    be restated without a deploying plan first (that no-op plan costs more than a day's
    restatement)."""
    return _prod_state(context) == "current"


def _prod_state(context: Context) -> str:
    """ "missing" (no prod yet), "behind" (prod runs other models) or "current"."""
    env = context.state_reader.get_environment(PROD)
    if env is None:
        return "missing"
    local = {s.name: s.fingerprint for s in context.snapshots.values() if not s.is_external}
    deployed = {s.name: s.fingerprint for s in env.snapshots}
    return "current" if local == deployed else "behind"


def prod_version(settings: Settings, model: str) -> str | None:
    """The version of `model`'s table that prod serves (it changes when a plan rebuilds the
    model), or None before the first plan."""
    with sqlmesh_context(settings) as context:
        env = context.state_reader.get_environment(PROD)
    return next((s.version for s in env.snapshots if short_name(s.name) == model), None) if env else None


def _prod_state_of(config: ProjectSQLMeshConfig) -> str:
    with open_context(config) as context:
        return _prod_state(context)


def run_range(
    context: AssetExecutionContext,
    sqlmesh: SQLMeshResource,
    config: ProjectSQLMeshConfig,
    start: dt.date,
    end: dt.date,
    restate: Sequence[str],
) -> Iterator[MaterializeResult]:
    """Bring prod up to date before the range, then recompute exactly [start, end]."""
    # SQLMesh runs only intervals that have ended, so a plan's execution time is the day
    # after the range (the evening run includes today). SQLMesh's unit tests run in CI
    # and `sqlmesh test`, not on every production plan.
    after = (end + dt.timedelta(days=1)).isoformat()
    state = _prod_state_of(config)
    if state == "missing" and start.isoformat() == config.start_date:
        # The first run of a warehouse from the models' start: one plain prod plan creates
        # the model and fills exactly [start, end], the same rows a restatement would.
        context.log.info("SQLMesh prod does not exist yet: creating it and filling the range in one plan")
        yield from sqlmesh.run(
            context,
            config=config,
            environment=PROD,
            plan_options={"execution_time": after, "skip_tests": True},
            skip_run=True,
        )
        return
    # Only when prod is missing or behind the project: a plain prod plan that sees "now"
    # as the range's first day, so it creates or migrates the model and fills missing
    # intervals before the range; the range itself is computed once, by the restatement.
    if state != "current":
        context.log.info("SQLMesh prod is missing or behind the project: applying a prod plan first")
        for _ in sqlmesh.run(
            context,
            config=config,
            environment=PROD,
            plan_options={"execution_time": start.isoformat(), "skip_tests": True},
            run_options={"execution_time": start.isoformat()},
            materializations_enabled=False,
        ):
            pass
    yield from sqlmesh.run(
        context,
        config=config,
        environment=PROD,
        start=start.isoformat(),
        end=end.isoformat(),
        restate_models=list(restate),
        plan_options={"execution_time": after, "skip_tests": True},
        skip_run=True,
    )
