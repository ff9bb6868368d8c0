"""A bad FINANCIAL_ETL_WAREHOUSE fails before anything runs, says what was wrong, and
never shows the password: a value that is no warehouse (exit 2), a PostgreSQL nobody
listens on, or one that refuses the login (exit 4)."""

from __future__ import annotations

import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, EXIT_CONNECTION

PASSWORD = "s3cret-Warehouse-pw"


def run(clean_env, workdir, capsys, value: str) -> tuple[int, str]:
    clean_env.setenv("FINANCIAL_ETL_WAREHOUSE", value)
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    clean_env.setenv("DAGSTER_HOME", str(workdir / "home"))
    (workdir / "home").mkdir()
    code = main(["run", "--end", "2024-01-05"])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(
    "value, says",
    [
        (f"mysql://etl:{PASSWORD}@db:3306/markets", "is not a warehouse"),
        (f"postgresql://etl:{PASSWORD}@db.internal/", "lacks database"),
        (f"postgresql://etl:{PASSWORD}@db.internal:port/markets", "lacks a numeric port"),
    ],
)
def test_a_value_that_is_no_warehouse_is_a_configuration_error(workdir, clean_env, capsys, value, says):
    code, out = run(clean_env, workdir, capsys, value)
    assert code == EXIT_CONFIG, out
    assert "FINANCIAL_ETL_WAREHOUSE" in out and says in out and "etl:***@db" in out
    assert PASSWORD not in out
    assert not (workdir / "data").exists() or not any((workdir / "data").iterdir())  # nothing written


def test_a_postgresql_nobody_listens_on_is_a_connection_error(workdir, clean_env, capsys):
    code, out = run(clean_env, workdir, capsys, f"postgresql://etl:{PASSWORD}@127.0.0.1:1/markets")
    assert code == EXIT_CONNECTION, out
    assert "cannot connect to the warehouse postgresql://etl:***@127.0.0.1:1/markets" in out
    assert PASSWORD not in out


@pytest.mark.slow
def test_a_postgresql_that_refuses_the_login_is_a_connection_error(workdir, clean_env, capsys, postgres):
    url = f"postgresql://{postgres.user}:{PASSWORD}@127.0.0.1:{postgres.port}/{postgres.database}"
    code, out = run(clean_env, workdir, capsys, url)
    assert code == EXIT_CONNECTION, out
    assert f'password authentication failed for user "{postgres.user}"' in out
    assert PASSWORD not in out
