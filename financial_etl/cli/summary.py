"""The closing summary of `financial-etl run`: the run, and where each table lives.

The rows of each stage were printed as the stage ended (cli/console.py); the summary adds
the run id, the total time and each table's database, never a secret.
"""

from __future__ import annotations

from financial_etl.export.destination import export_target_for
from financial_etl.settings import Settings
from financial_etl.warehouse import MART, RAW


def summary_lines(settings: Settings, run_id: str, seconds: float) -> list[str]:
    target = export_target_for(settings)  # description only: no secret is printed
    where = {
        RAW: settings.warehouse.describe(),
        MART: settings.warehouse.describe(),
        f"{target.schema}.{target.table}": target.description,
    }
    width = max(len(name) for name in where) + 2
    return [f"financial-etl: run {run_id[:8]} succeeded in {seconds:.1f} s"] + [
        f"  {name:<{width}} {place}" for name, place in where.items()
    ]


def print_summary(settings: Settings, result, seconds: float) -> None:
    print("\n".join(summary_lines(settings, result.run_id, seconds)), flush=True)
