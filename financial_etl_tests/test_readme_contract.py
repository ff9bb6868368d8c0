"""The README's first two commands are the contract with a new user; CI runs the second."""

import re

from financial_etl.settings import REPO_ROOT


def _readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```bash\n(.+?)\n```", text, flags=re.S)


def test_the_first_command_installs_and_runs_the_main_job():
    first = _readme_commands()[0]
    assert "pip install" in first and "constraints.txt" in first
    assert first.rstrip().endswith("financial-etl run")


def test_ci_runs_exactly_the_readme_test_command():
    second = _readme_commands()[1]
    assert "pytest" in second
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert second.strip() in ci_lines
