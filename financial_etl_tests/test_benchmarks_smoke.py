"""Smoke run of the benchmark harness at a tiny size: it only proves the harness works."""

import json

import pytest

from benchmarks.__main__ import main


@pytest.mark.slow
def test_transform_benchmark_writes_json_and_a_table(tmp_path):
    assert main(["transform", "--tickers", "3", "--days", "120", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "transform_3x120.json").read_text())
    assert result["rows"] == 3 * (120 - 3)  # the last three days are run one at a time
    assert result["one_day_rows"] == 3
    assert result["full_refresh_s"] > 0 and result["bare_duckdb_s"] > 0
    assert set(result["targets"]) == {
        "full refresh within 2x of a bare DuckDB window query",
        "one-day incremental run at most 5% of the full refresh",
    }
    assert "| target | measured | met |" in (tmp_path / "transform_3x120.md").read_text()


@pytest.mark.slow
def test_scale_benchmark_writes_json_table_and_plot(tmp_path):
    # Every stage at one tiny size, each in its own child process.
    assert main(["scale", "--sizes", "3x120", "--out", str(tmp_path), "--definition-loads", "1"]) == 0
    result = json.loads((tmp_path / "scale.json").read_text())
    assert result["errors"] == [] and result["elapsed_s"] > 0 and result["machine"]
    (run,) = result["runs"]
    assert (run["tickers"], run["days"], run["rows"]) == (3, 120, 360)
    extract = run["extract"]
    assert extract["bulk_rows"] == 360 and extract["per_row_rows"] == 360
    assert extract["bulk_rows_per_s"] > 0 and extract["per_row_rows_per_s"] > 0
    # Five sessions are held back from each full refresh, then run one at a time.
    assert run["transform"]["rows"] == 3 * (120 - 5) and run["transform"]["one_day_rows"] == 3
    assert len(run["transform"]["one_day_runs_s"]) == 5
    assert run["export"]["target_kind"] == "duckdb-standin"
    assert run["export"]["rows"] == 3 * (120 - 5) and run["export"]["one_day_rows"] == 3
    assert len(run["export"]["one_day_merge_runs_s"]) == 5
    full, daily = run["dagster"]["full_refresh"], run["dagster"]["daily"]
    assert {"extract_prices", "sqlmesh_models", "dbo__Dim_Stock_Metrics"} <= set(daily["steps_s"])
    for measured in (extract, run["transform"], run["export"], full, daily):
        assert measured["peak_rss_bytes"] > 10 * 2**20  # a real process's VmHWM, in bytes
        assert len(measured["load_average"]) == 2
    assert daily["overhead_s"] == daily["run_s"] - daily["stages_s"] and daily["stages_s"] > 0
    loads = result["definitions_load"]
    assert loads["runs"][0]["jobs"] == ["__ASSET_JOB", "check_stock_metrics", "daily_stock_metrics"]
    assert loads["runs"][0]["preloaded_modules"] == []  # the child's imports are all timed
    assert loads["median_s"] == loads["runs"][0]["total_s"] > 0
    assert set(result["targets"]) == {
        "bulk extract at least 20x the seed's per-row path",
        "bulk extract at least 1M rows/s",
        "one-day incremental transform within 2x from shortest to longest history at 500 tickers",
        "one-day export merge within 2x from shortest to longest history at 500 tickers",
        "extract (bulk) scales no worse than linearly (log-log slope <= 1.1)",
        "transform full refresh scales no worse than linearly (log-log slope <= 1.1)",
        "export full refresh scales no worse than linearly (log-log slope <= 1.1)",
        "Dagster full-refresh run scales no worse than linearly (log-log slope <= 1.1)",
        "definitions load under 3 s",
        "daily run's Dagster overhead under 5 s",
        "Dagster full-refresh run at most 1.5x its data work at 500 x 6,500 (persistent SQLite DAGSTER_HOME)",
        "peak RSS of the 500 x 6,500 full refresh under 4 GiB",
    }
    # The run's data work comes from its own event log, on a persistent DAGSTER_HOME.
    assert 0 < full["data_work_s"] <= full["run_s"] and full["run_vs_data_work"] == full["run_s"] / full["data_work_s"]
    assert full["events"]["ASSET_MATERIALIZATION"] == 3 * full["partitions"] and full["dagster_home_growth_mb"] > 0
    table = (tmp_path / "scale.md").read_text()
    assert "| 3 × 120 | 360 |" in table and "| target | measured | met |" in table
    assert (tmp_path / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_scale_targets_judge_the_measurements():
    from benchmarks.scale import GIB, targets

    def size(tickers, days, bulk_s, transform_day_s, merge_s, rss_gib):
        rows = tickers * days
        return {
            "tickers": tickers,
            "days": days,
            "rows": rows,
            "extract": {
                "rows": rows,
                "bulk_rows": rows,
                "bulk_s": bulk_s,
                "bulk_cpu_s": bulk_s,
                "bulk_rows_per_s": rows / bulk_s,
                "bulk_vs_per_row": rows / bulk_s / 10_000,
            },
            "transform": {
                "rows": rows,
                "full_refresh_s": rows / 1e6,
                "full_refresh_cpu_s": rows / 1e6,
                "one_day_s": transform_day_s,
            },
            "export": {
                "rows": rows,
                "full_refresh_s": rows / 5e5,
                "full_refresh_cpu_s": rows / 5e5,
                "one_day_merge_s": merge_s,
            },
            "dagster": {
                "full_refresh": {
                    "run_s": rows / 1e5,
                    "run_cpu_s": rows / 1e5,
                    "peak_rss_bytes": rss_gib * GIB,
                    "data_work_s": rows / 1.6e5,
                    "run_vs_data_work": 1.6,
                    "dagster_home_growth_mb": 1.0,
                },
                "daily": {"overhead_s": 2.0},
            },
        }

    result = {
        "runs": [size(500, 1500, 0.5, 0.2, 0.3, 1), size(500, 6500, 5.0, 0.5, 0.4, 4.5)],
        "definitions_load": {"runs": [{}], "median_s": 3.2},
    }
    verdicts = {name: t["met"] for name, t in targets(result).items()}
    assert verdicts["bulk extract at least 1M rows/s"] is False  # 3.25M rows in 5 s
    assert verdicts["bulk extract at least 20x the seed's per-row path"] is True  # 65x
    assert verdicts["one-day incremental transform within 2x from shortest to longest history at 500 tickers"] is False
    assert verdicts["one-day export merge within 2x from shortest to longest history at 500 tickers"] is True
    assert verdicts["extract (bulk) scales no worse than linearly (log-log slope <= 1.1)"] is False
    assert verdicts["transform full refresh scales no worse than linearly (log-log slope <= 1.1)"] is True
    assert verdicts["definitions load under 3 s"] is False
    assert verdicts["daily run's Dagster overhead under 5 s"] is True
    assert verdicts["peak RSS of the 500 x 6,500 full refresh under 4 GiB"] is False
    assert (
        verdicts["Dagster full-refresh run at most 1.5x its data work at 500 x 6,500 (persistent SQLite DAGSTER_HOME)"]
        is False
    )


@pytest.mark.slow
def test_memory_benchmark_writes_json_and_a_table(tmp_path):
    # Two history lengths at a tiny universe: a full refresh and a daily run each, as CLI processes.
    assert (
        main(["memory", "--tickers", "3", "--histories", "60,120", "--out", str(tmp_path), "--workdir", str(tmp_path)])
        == 0
    )
    result = json.loads((tmp_path / "memory.json").read_text())
    assert result["tickers"] == 3 and result["histories"] == [60, 120] and result["machine"]
    assert [(r["days"], r["full_refresh"]["rows"], r["daily"]["rows"]) for r in result["runs"]] == [
        (60, 180, 3),
        (120, 360, 3),
    ]
    for run in (r[part] for r in result["runs"] for part in ("full_refresh", "daily")):
        assert run["exit_code"] == 0 and not run["killed_above_cap"]
        assert run["peak_rss_bytes"] >= run["process_max_rss_bytes"] > 100 * 2**20  # the CLI's own high-water mark
        assert set(run["stages"]) == {"extract", "transform", "export"} and run["wall_s"] > 0
    assert set(result["targets"]) == {
        "daily run at most 30 s",
        "daily run peak RSS at most 1 GiB",
        "daily run peak RSS flat with history (at most 1.15x)",
        "full refresh peak RSS at most 4 GiB",
        "full refresh time linear in rows (log-log slope at most 1.1)",
    }
    assert "| target | measured | met |" in (tmp_path / "memory.md").read_text()
    assert not list(tmp_path.glob("bench_memory_*"))  # the warehouses are removed


def test_memory_targets_judge_the_measurements():
    from benchmarks.memory import GIB, targets

    def run(rows, wall_s, rss_gib, exit_code=0):
        return {
            "rows": rows,
            "wall_s": wall_s,
            "peak_rss_bytes": rss_gib * GIB,
            "exit_code": exit_code,
            "killed_above_cap": exit_code == -9,
        }

    result = {
        "runs": [
            {"tickers": 5000, "days": 1500, "full_refresh": run(7_500_000, 100, 1.5), "daily": run(5000, 12, 0.8)},
            {"tickers": 5000, "days": 6500, "full_refresh": run(32_500_000, 600, 3.5), "daily": run(5000, 31, 0.9)},
        ]
    }
    verdicts = {name: t["met"] for name, t in targets(result).items()}
    assert verdicts == {
        "daily run at most 30 s": False,  # 31 s after 6,500 days
        "daily run peak RSS at most 1 GiB": True,
        "daily run peak RSS flat with history (at most 1.15x)": True,  # 1.19x would miss
        "full refresh peak RSS at most 4 GiB": True,
        "full refresh time linear in rows (log-log slope at most 1.1)": False,  # 6x the time for 4.3x the rows
    }
    result["runs"][1]["full_refresh"] = run(32_500_000, 134, 12.1, exit_code=-9)
    assert targets(result)["full refresh peak RSS at most 4 GiB"] == {
        "met": False,
        "measured": "12.10 GiB at 5,000 x 6,500 (did not finish: exit -9, killed above the cap)",
    }
