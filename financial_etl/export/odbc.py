"""Register Microsoft's ODBC Driver 18 shipped inside the PyPI package mssql-python-odbc.

For machines where Microsoft's apt repository is out of reach: `python -m
financial_etl.odbc <dir>` writes `<dir>/odbcinst.ini` naming the bundled driver; export
ODBCSYSINI=<dir> so unixODBC (apt-get install unixodbc libkrb5-3 libgssapi-krb5-2) finds it.
"""

from __future__ import annotations

import sys
from pathlib import Path

DRIVER_NAME = "ODBC Driver 18 for SQL Server"


def bundled_driver() -> Path:
    try:
        import mssql_python_odbc
    except ImportError:
        raise RuntimeError("the PyPI package mssql-python-odbc is not installed") from None
    lib_dir = Path(mssql_python_odbc.__file__).parent / "libs" / "linux" / "debian_ubuntu" / "x86_64" / "lib"
    found = sorted(lib_dir.glob("libmsodbcsql-18*.so*"))
    if not found:
        raise RuntimeError(f"no libmsodbcsql-18 in {lib_dir}")
    return found[-1]


def register_pypi_driver(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "odbcinst.ini").write_text(
        f"[{DRIVER_NAME}]\nDescription=Microsoft {DRIVER_NAME} (mssql-python-odbc)\n"
        f"Driver={bundled_driver()}\nUsageCount=1\n"
    )
    (directory / "odbc.ini").touch()
    return directory


if __name__ == "__main__":
    target = register_pypi_driver(Path(sys.argv[1] if len(sys.argv) > 1 else "data/odbc").resolve())
    print(f"export ODBCSYSINI={target}")
