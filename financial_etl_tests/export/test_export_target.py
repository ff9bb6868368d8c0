"""Which export target and credentials are used, in the order a user expects, and the
password never shown."""

import json

import duckdb
import pytest

from financial_etl.definitions import build_definitions
from financial_etl.errors import (
    ConfigError,
    DestinationUnreachableError,
    LoginFailedError,
    MissingDatabaseError,
    NoOdbcDriverError,
    WarehouseUnavailableError,
)
from financial_etl.export.destination import ExportDestination, classify, export_target_for
from financial_etl.settings import load_settings
from financial_etl_tests.helpers import held_open

SECRET = "Sup3r-Secret-Pw"


def _seed_credentials(path, server="seed.example.internal"):
    path.write_text(
        json.dumps(
            {
                "ms_target_01": {
                    "info": {
                        "server": server,
                        "port": 1433,
                        "database": "FINANCIAL_MART",
                        "username": "etl",
                        "password": SECRET,
                    }
                }
            }
        )
    )
    return path


def test_no_server_configured_means_the_local_standin(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = export_target_for(load_settings(), env={})
    assert target.is_standin and "local stand-in" in target.description


def test_env_settings_win_over_dlt_config_and_credentials_json(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _seed_credentials(tmp_path / "credentials.json")
    env = {
        "FINANCIAL_ETL_MSSQL_HOST": "env.example.internal",
        "FINANCIAL_ETL_MSSQL_USERNAME": "etl",
        "FINANCIAL_ETL_MSSQL_PASSWORD": SECRET,
        "DESTINATION__MSSQL__CREDENTIALS__HOST": "dlt.example.internal",
    }
    target = export_target_for(load_settings(), env=env)
    assert target.kind == "mssql" and "env.example.internal:1433/FINANCIAL_MART" in target.description
    assert target._credentials["query"] == {}  # TrustServerCertificate stays off unless asked for
    assert SECRET not in target.description and SECRET not in repr(target)


def test_dlt_config_comes_before_credentials_json(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _seed_credentials(tmp_path / "credentials.json")
    target = export_target_for(load_settings(), env={"DESTINATION__MSSQL__CREDENTIALS": "mssql://etl:x@dlt.example/db"})
    assert target.kind == "mssql" and target._credentials is None  # dlt resolves its own config
    assert "dlt's configuration" in target.description


def test_the_seeds_credentials_json_is_read(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _seed_credentials(tmp_path / "credentials.json")
    target = export_target_for(load_settings(), env={})
    assert target.kind == "mssql" and "seed.example.internal:1433/FINANCIAL_MART" in target.description
    assert target._credentials["username"] == "etl" and target.redact(f"x {SECRET} y") == "x *** y"


def test_a_malformed_credentials_json_is_a_clear_error_without_the_password(workdir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "credentials.json").write_text(
        json.dumps({"ms_target_01": {"info": {"server": "x", "password": SECRET}}})
    )
    with pytest.raises(ConfigError) as excinfo:
        export_target_for(load_settings(), env={})
    assert "credentials.json" in str(excinfo.value) and "database" in str(excinfo.value)
    assert SECRET not in str(excinfo.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"HOST": "h", "USERNAME": "u", "PASSWORD": SECRET, "DRIVER": "FreeTDS"}, "FreeTDS is not supported"),
        ({"HOST": "h", "USERNAME": "u"}, "no password"),
        ({"HOST": "h", "USERNAME": "u", "PASSWORD": SECRET, "PORT": "14x3"}, "FINANCIAL_ETL_MSSQL_PORT"),
        ({"URL": "postgres://h/db"}, "must start with mssql://"),
        ({"HOST": "h", "USERNAME": "u", "PASSWORD": SECRET, "PORT": "0"}, "FINANCIAL_ETL_MSSQL_PORT='0'"),
        (
            {"HOST": "h", "USERNAME": "u", "PASSWORD": SECRET, "CONNECT_TIMEOUT": "0"},
            "FINANCIAL_ETL_MSSQL_CONNECT_TIMEOUT",
        ),
        ({"HOST": "h", "USERNAME": "u", "PASSWORD": SECRET, "TRUST_SERVER_CERTIFICATE": "si"}, "is not a boolean"),
        ({"USERNAME": "u", "PASSWORD": SECRET}, "set without FINANCIAL_ETL_MSSQL_HOST"),
        ({"URL": f"mssql://u:{SECRET}@h/db", "DATABASE": "other"}, "FINANCIAL_ETL_MSSQL_URL is set beside"),
        ({"URL": f"mssql://u:{SECRET}@h:14x3/db"}, "FINANCIAL_ETL_MSSQL_URL has a port"),
        ({"URL": f"mssql://u:{SECRET}@h/db?TrustServerCertificate=maybe"}, "TrustServerCertificate='maybe'"),
    ],
)
def test_bad_sql_server_settings_fail_clearly(workdir, fields, message):
    with pytest.raises(ConfigError, match=message) as excinfo:
        export_target_for(load_settings(), env={}, mssql_fields=fields)
    assert SECRET not in str(excinfo.value)


def test_a_url_and_trust_server_certificate_when_asked(workdir):
    target = export_target_for(
        load_settings(),
        env={},
        mssql_fields={
            "URL": f"mssql://etl:{SECRET}@sql.example.internal:1444/MART?TrustServerCertificate=yes",
            "CONNECT_TIMEOUT": "5",
        },
    )
    assert "sql.example.internal:1444/MART" in target.description
    assert target._credentials["query"] == {"TrustServerCertificate": "yes"}
    assert target._credentials["connect_timeout"] == 5  # the URL form takes the timeout too


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FINANCIAL_ETL_EXPORT_URL": "duckdb:///"}, "names no file"),
        ({"FINANCIAL_ETL_EXPORT_URL": f"postgresql://etl:{SECRET}@/db"}, "FINANCIAL_ETL_EXPORT_URL has no host"),
        ({"FINANCIAL_ETL_EXPORT_URL": f"mssql://etl:{SECRET}@h:0x1/db"}, "FINANCIAL_ETL_EXPORT_URL has a port"),
        (
            {"FINANCIAL_ETL_MSSQL_CREDENTIALS_FILE": "missing.json"},
            "FINANCIAL_ETL_MSSQL_CREDENTIALS_FILE='missing.json'",
        ),
        ({"FINANCIAL_ETL_MSSQL_HOST": ""}, "set but empty: FINANCIAL_ETL_MSSQL_HOST;"),
    ],
)
def test_bad_export_urls_and_files_fail_clearly(workdir, tmp_path, monkeypatch, env, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as excinfo:
        export_target_for(load_settings(), env=env)
    assert SECRET not in str(excinfo.value)


def test_the_ui_sees_env_var_names_never_the_password(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_MSSQL_HOST", "sql.example.internal")
    clean_env.setenv("FINANCIAL_ETL_MSSQL_USERNAME", "etl")
    clean_env.setenv("FINANCIAL_ETL_MSSQL_PASSWORD", SECRET)
    defs = build_definitions(load_settings())
    resource = defs.resources["export_destination"]
    assert isinstance(resource, ExportDestination)
    snapshot = (
        repr(resource._get_non_default_public_field_values())
        if hasattr(resource, "_get_non_default_public_field_values")
        else repr(resource)
    )
    assert SECRET not in snapshot and SECRET not in repr(resource)
    assert "FINANCIAL_ETL_MSSQL_PASSWORD" in repr(resource)
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    assert SECRET not in repr(specs["dbo/Dim_Stock_Metrics"])


def test_a_standin_another_program_holds_is_named_not_an_export_failure(workdir, tmp_path):
    db = tmp_path / "export.duckdb"
    with held_open(db) as pid:
        with pytest.raises(duckdb.IOException) as raw:
            duckdb.connect(str(db))
    error = classify(raw.value, export_target_for(load_settings(), env={}))
    assert isinstance(error, WarehouseUnavailableError) and f"the DuckDB file {db} is held" in str(error)
    assert f"pid {pid}" in str(error)


def _mssql_target():
    return export_target_for(
        load_settings(), env={}, mssql_fields={"HOST": "sql.example.internal", "USERNAME": "etl", "PASSWORD": SECRET}
    )


def _raised(error: BaseException) -> BaseException:
    """`error` as dlt hands it on: wrapped in its own exception."""
    try:
        try:
            raise error
        except Exception as exc:
            raise RuntimeError("Pipeline execution failed at `step=sync`") from exc
    except RuntimeError as wrapped:
        return wrapped


@pytest.mark.parametrize(
    ("sqlstate", "message", "expected"),
    [
        # SQL Server's number says which: its text also says "The login failed".
        (
            "42000",
            'Cannot open database "FINANCIAL_MART" requested by the login. The login failed. (4060) (SQLDriverConnect)',
            MissingDatabaseError,
        ),
        ("28000", "Login failed for user 'etl'. (18456) (SQLDriverConnect)", LoginFailedError),
        ("08S01", "TCP Provider: Error code 0x68 (104) (SQLExecDirectW)", DestinationUnreachableError),
        (
            "IM002",
            "Data source name not found and no default driver specified (0) (SQLDriverConnect)",
            NoOdbcDriverError,
        ),
    ],
)
def test_odbc_errors_are_classified_by_their_sqlstate_and_server_error_number(sqlstate, message, expected):
    pyodbc = pytest.importorskip("pyodbc")
    error = pyodbc.OperationalError(sqlstate, f"[{sqlstate}] [Microsoft][ODBC Driver 18 for SQL Server]{message}")
    classified = classify(_raised(error), _mssql_target())
    assert type(classified) is expected and SECRET not in str(classified)
