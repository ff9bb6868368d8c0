"""The README's first two commands are the contract with a new user; CI runs the second,
and the second installs the system packages from the same list the tests check."""

import re
import subprocess
import sys

from financial_etl.settings import REPO_ROOT
from financial_etl_tests.system_packages import INSTALL_COMMAND, PACKAGES

LIST = "financial_etl_tests/system_packages.py"


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def _commands(path: str) -> list[str]:
    """The lines of a shell script that do something: no shebang, comments or blank lines."""
    lines = [line.strip() for line in (REPO_ROOT / path).read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_the_first_command_installs_and_runs_the_main_job():
    first = _readme_commands()[0]
    assert "pip install" in first and "constraints.txt" in first
    assert first.rstrip().endswith("financial-etl run")


def test_the_test_command_installs_the_system_packages_then_runs_every_test():
    second = _readme_commands()[1].strip()
    assert second.startswith(f"{INSTALL_COMMAND} && python3 -m venv .venv && ")
    assert '-c constraints.txt -e ".[test]"' in second
    assert second.endswith("&& .venv/bin/python -m pytest")


def test_ci_runs_exactly_the_readme_test_command_and_installs_nothing_else():
    second = _readme_commands()[1].strip()
    *setup, last = _commands(".ci/run")
    assert last == second
    assert setup[:2] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."']
    assert all(re.fullmatch(r"export [A-Z_]+=\S+", line) for line in setup[2:]), setup


def test_the_install_script_takes_its_packages_from_the_list_the_tests_check():
    script = _commands(INSTALL_COMMAND)
    assert sum(f"python3 {LIST})" in line for line in script) == 2  # before and after apt-get
    for package in PACKAGES:  # no second copy of the list
        assert not any(re.search(rf"(?<![\w-]){re.escape(package.package)}(?![\w-])", line) for line in script)
    # The script runs the list with the system's python3, before any venv: standard library only.
    listed = subprocess.run(
        [sys.executable, "-I", "-S", LIST, "--all"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert listed.stdout.split() == [p.package for p in PACKAGES]
