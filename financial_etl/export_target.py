"""Where the mart is exported: SQL Server when configured, else a local DuckDB stand-in.

The stand-in lets the whole graph run on a fresh machine; the log and the asset's
metadata say which target was used. Credentials are held here and never rendered: the
`describe()` text carries host and database, never the password.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dlt

from financial_etl.settings import Settings

MSSQL_PREFIX = "FINANCIAL_ETL_MSSQL_"


@dataclass(frozen=True)
class ExportTarget:
    kind: str  # "mssql" or "duckdb-standin"
    schema: str
    table: str
    description: str
    _destination_args: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def is_standin(self) -> bool:
        return self.kind != "mssql"

    def destination(self):
        if self.kind == "mssql":
            return dlt.destinations.mssql(
                credentials=dict(self._destination_args), naming_convention="sql_cs_v1"
            )
        return dlt.destinations.duckdb(self._destination_args["path"], naming_convention="sql_cs_v1")


def export_target_for(settings: Settings, env: Mapping[str, str] | None = None) -> ExportTarget:
    env = os.environ if env is None else env
    host = env.get(MSSQL_PREFIX + "HOST")
    if host:
        database = env.get(MSSQL_PREFIX + "DATABASE", "FINANCIAL_MART")
        port = int(env.get(MSSQL_PREFIX + "PORT", "1433"))
        query = {}
        if env.get(MSSQL_PREFIX + "TRUST_SERVER_CERTIFICATE", "").lower() in ("1", "true", "yes"):
            query["TrustServerCertificate"] = "yes"
        args = {
            "host": host,
            "port": port,
            "database": database,
            "username": env.get(MSSQL_PREFIX + "USERNAME"),
            "password": env.get(MSSQL_PREFIX + "PASSWORD"),
            "driver": env.get(MSSQL_PREFIX + "DRIVER", "ODBC Driver 18 for SQL Server"),
            "query": query,
        }
        return ExportTarget(
            kind="mssql",
            schema=settings.export_schema,
            table=settings.export_table,
            description=f"SQL Server {host}:{port}/{database} table {settings.export_schema}.{settings.export_table}",
            _destination_args=args,
        )
    path = str(settings.export_duckdb_path)
    return ExportTarget(
        kind="duckdb-standin",
        schema=settings.export_schema,
        table=settings.export_table,
        description=(
            f"local stand-in {path} table {settings.export_schema}.{settings.export_table} "
            f"(no SQL Server configured: set FINANCIAL_ETL_MSSQL_HOST)"
        ),
        _destination_args={"path": path},
    )
