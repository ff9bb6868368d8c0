"""A missing system package stops the run with one line naming it (conftest.py), checked
for real: pytest run again with libodbc.so.2 hidden behind an empty file."""

from __future__ import annotations

import ctypes
import os
import shlex
import sys
from pathlib import Path

from financial_etl.settings import REPO_ROOT
from financial_etl_tests.conftest import EXIT_MISSING_SYSTEM_PACKAGE
from financial_etl_tests.helpers import in_mount_namespace
from financial_etl_tests.system_packages import INSTALL_COMMAND, SystemPackage, missing, missing_message


def test_each_probe_finds_what_is_there_and_not_what_is_not(tmp_path):
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    there = [
        SystemPackage("libc6", "library", "libc.so.6", ""),
        SystemPackage("a-tool", "executable", str(tmp_path / "t*"), ""),
        SystemPackage("coreutils", "command", "ls", ""),
        SystemPackage("a-jar", "file", str(tool), ""),
    ]
    gone = [
        SystemPackage("libnothing1", "library", "libnothing-here.so.1", ""),
        SystemPackage("no-tool", "executable", str(tmp_path / "none-*"), ""),
        SystemPackage("no-command", "command", "no-such-command-7731", ""),
        SystemPackage("no-jar", "file", str(tmp_path / "none.jar"), ""),
    ]
    assert missing(tuple(there + gone)) == gone
    assert missing_message(tuple(there)) is None


def test_the_message_is_one_line_naming_each_missing_package_and_the_install_command():
    message = missing_message(
        (
            SystemPackage("libc6", "library", "libc.so.6", ""),
            SystemPackage("unixodbc", "library", "libnothing-here.so.2", ""),
            SystemPackage("openjdk-17-jre-headless", "command", "no-such-java-7731", ""),
        )
    )
    assert message == (
        "financial_etl tests: missing system package(s): unixodbc (libnothing-here.so.2 not found), "
        "openjdk-17-jre-headless (no-such-java-7731 not found); "
        f"install with: {INSTALL_COMMAND} (runs apt-get as root, or through sudo)"
    )


def _loaded_file(soname: str) -> Path:
    """The file the dynamic loader maps for `soname` (the symlink's target)."""
    ctypes.CDLL(soname)
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split(maxsplit=5)[-1]
        if Path(path).name.startswith(soname):
            return Path(path)
    raise AssertionError(f"{soname} is not mapped")


def test_pytest_without_unixodbc_prints_one_line_naming_it_and_exits_non_zero():
    libodbc = _loaded_file("libodbc.so.2")
    pytest_run = shlex.join(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "financial_etl_tests/test_readme_contract.py"]
    )
    done = in_mount_namespace(
        f"mount --bind /dev/null {shlex.quote(str(libodbc))}\ncd {shlex.quote(str(REPO_ROOT))}\nexec {pytest_run}"
    )
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == EXIT_MISSING_SYSTEM_PACKAGE != 0, output
    assert output.splitlines() == [
        "Exit: financial_etl tests: missing system package(s): unixodbc (libodbc.so.2 not found); "
        f"install with: {INSTALL_COMMAND} (runs apt-get as root, or through sudo)"
    ]


def test_the_install_command_is_an_executable_script():
    assert os.access(REPO_ROOT / INSTALL_COMMAND, os.X_OK)
