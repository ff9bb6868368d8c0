"""The machine a benchmark ran on, for the reports."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    cpus = os.cpu_count()
    mem = model = ""
    try:
        with open("/proc/meminfo") as f:
            mem = f"{int(f.readline().split()[1]) / 1024 / 1024:.0f} GiB"
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    cpu = f"{platform.machine()} {model}".strip()
    return f"{cpu}, {cpus} cores, {mem}, Python {platform.python_version()}"
