"""The package's shape: no import loop, public Dagster APIs only, one home for every name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from financial_etl.settings import REPO_ROOT

PACKAGES = ("financial_etl", "benchmarks")


def _modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = {name: path for package in PACKAGES for name, path in _modules(package).items()}


def _imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports, at any depth of its code (a function-level import
    closes a loop as surely as a top-level one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_loop_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_loop_in_the_package_or_the_benchmarks():
    graph = import_graph()
    assert len(graph) > 30  # the walk found the modules
    assert "financial_etl.warehouse" in graph["financial_etl.extract.assets"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_no_module_imports_a_private_dagster_name():
    private = {
        name: sorted(m for m in _imports(name, path) if re.match(r"dagster[\w]*\._", m))
        for name, path in MODULES.items()
    }
    assert {name: found for name, found in private.items() if found} == {}


# Library internals the package must not read, by attribute name (extend as found):
INTERNAL_ATTRIBUTES = {
    "dagster_meta": "Dagster's internal metadata on the log records it hands a logger",
    "kwargs": "dagster-sqlmesh's IntermediateAssetOut arguments (AssetsDefinition.map_asset_specs is public)",
    "__dict__": "an object's attributes behind its public API",
}
# Names with a leading underscore that are public API: os._exit, a namedtuple's methods.
PUBLIC_UNDERSCORED = {"_exit", "_replace", "_asdict", "_fields", "_make"}
ATTRIBUTE_CALLS = {"getattr", "hasattr", "setattr", "delattr"}
SOURCES = {**MODULES, **{p.stem: p for p in sorted((REPO_ROOT / "sqlmesh_project").rglob("*.py"))}}


def _internal(name: str) -> bool:
    private = name.startswith("_") and not name.endswith("__") and name not in PUBLIC_UNDERSCORED
    return name in INTERNAL_ATTRIBUTES or private


def internal_reads(source: str) -> list[str]:
    """Where `source` reads a library's internal attribute: a name listed above, or a
    private one (leading underscore) of anything but `self` or `cls`, written as an
    attribute, through getattr() and kin, or held in a string constant for later."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _internal(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ATTRIBUTE_CALLS:
            name = node.args[1] if len(node.args) > 1 else None
            if isinstance(name, ast.Constant) and isinstance(name.value, str) and _internal(name.value):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and node.value == "dagster_meta":
            found.append(f"{node.lineno}: {node.value!r}")
    return sorted(found, key=lambda hit: int(hit.split(":")[0]))


def test_the_internal_attribute_finder_finds_each_kind_and_accepts_public_names():
    bad = """
RECORD_META = "dagster_meta"
def f(record, intermediate, obj, lib):
    record.dagster_meta, getattr(record, "dagster_meta")
    intermediate.kwargs.update({})
    obj.__dict__, vars, lib._engine, getattr(lib, "_private"), hasattr(obj, "kwargs")
"""
    lines = [hit.split(":")[0] for hit in internal_reads(bad)]
    assert lines == ["2", "4", "4", "4", "5", "6", "6", "6", "6"], internal_reads(bad)
    good = """
class C:
    def _engine_adapter(self):
        return self._cache, cls._n, os._exit, parts._replace(netloc="x"), obj.__class__, f(**kwargs)
"""
    assert internal_reads(good) == []


def test_no_module_reads_a_librarys_internal_attributes():
    """Public APIs only, beyond the imports: an internal attribute never shows in an import line."""
    found = {str(path.relative_to(REPO_ROOT)): internal_reads(path.read_text()) for path in SOURCES.values()}
    assert {where: hits for where, hits in found.items() if hits} == {}


def _string_literals(path: Path) -> list[str]:
    """String constants outside docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("name", ["eod_prices_raw", "eod_prices_quarantine", "stock_metrics", "marts", "raw"])
def test_every_table_name_is_written_once_in_the_package(name):
    """Table, schema and asset-key names live in financial_etl/warehouse; code builds the
    rest from them (grep: `git grep -n '"eod_prices_raw"' financial_etl`)."""
    pattern = re.compile(rf"(^|[^\w]){re.escape(name)}($|[^\w/])")
    where = [
        str(path.relative_to(REPO_ROOT))
        for mod, path in MODULES.items()
        if mod.startswith("financial_etl")
        for text in _string_literals(path)
        if pattern.search(text) and " " not in text.strip()
    ]
    assert where == ["financial_etl/warehouse/__init__.py"]


def test_the_look_back_is_one_sqlmesh_variable_read_by_python_and_sql():
    from financial_etl.settings import load_settings
    from financial_etl.transform.sqlmesh_adapter import lookback_rows

    model = (REPO_ROOT / "sqlmesh_project" / "models" / "marts" / "stock_metrics.sql").read_text()
    assert model.count("@lookback_rows") >= 2
    assert re.search(r"(<|<=)\s*50\b", model) is None  # no literal copy of the look-back
    assert lookback_rows(load_settings({})) == 50


def test_the_sqlmesh_project_runs_on_its_own_without_the_orchestrator(tmp_path):
    """`sqlmesh -p sqlmesh_project ...` reads its config from the environment and never
    imports financial_etl (a plan against a fresh warehouse renders the model)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_")}
    env["FINANCIAL_ETL_DUCKDB_PATH"] = str(tmp_path / "alone.duckdb")
    probe = (
        "import sys, runpy; config = runpy.run_path('sqlmesh_project/config.py')['config']; "
        "assert not [m for m in sys.modules if m.startswith('financial_etl')], 'imported financial_etl'; "
        "print(config.gateways['warehouse'].connection.database, config.variables['lookback_rows'])"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(tmp_path / "alone.duckdb"), "50"]
    sqlmesh = Path(sys.executable).with_name("sqlmesh")
    rendered = subprocess.run(
        [str(sqlmesh), "-p", "sqlmesh_project", "render", "marts.stock_metrics"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    assert "ROW_NUMBER() OVER (PARTITION BY" in rendered.stdout and "<= 50" in rendered.stdout
