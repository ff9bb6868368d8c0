"""Smoke run of the benchmark harness at a tiny size: it only proves the harness works."""

import json

from benchmarks.__main__ import main


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
