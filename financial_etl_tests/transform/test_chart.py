"""The price chart on marts/stock_metrics: a real PNG, attached to every materialization."""

from __future__ import annotations

import base64
import io
import re
import struct
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from PIL import Image

from financial_etl.cli.main import execute_range
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import load_settings
from financial_etl.transform import assets as transform
from financial_etl.transform.chart import CHART_COLUMNS, HEIGHT_PX, WIDTH_PX, price_chart_png
from financial_etl_tests.helpers import day

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EMBEDDED_PNG = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


def indicator_frame(ticker: str, start: str, end: str) -> pd.DataFrame:
    """Synthetic closes with the mart's SMA 20/50 and Bollinger columns (README definitions)."""
    raw = fetch_synthetic([ticker], day(start), day(end)).frame
    close = raw["close_price"]
    sma20, std20 = close.rolling(20).mean(), close.rolling(20).std(ddof=0)
    return pd.DataFrame(
        {
            "trade_date": raw["date"],
            "close_price": close,
            "sma_20_day": sma20,
            "sma_50_day": close.rolling(50).mean(),
            "bollinger_upper": sma20 + 2 * std20,
            "bollinger_lower": sma20 - 2 * std20,
        }
    )


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    assert png[:8] == PNG_MAGIC, png[:8]
    assert png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def test_chart_of_synthetic_prices_is_a_small_valid_png_with_lines_drawn():
    png = price_chart_png(indicator_frame("AAPL", "2024-01-02", "2024-12-31"), title="AAPL")

    assert png_size(png) == (WIDTH_PX, HEIGHT_PX) == (900, 450)
    image = Image.open(io.BytesIO(png))
    image.verify()  # raises on a truncated or corrupt file
    pixels = Image.open(io.BytesIO(png)).convert("RGB")
    colours = {c for _, c in pixels.getcolors(maxcolors=1_000_000)}
    assert len(colours) > 20, "a blank or near-blank canvas"
    assert len(png) < 200_000, f"{len(png)} bytes: too big to embed in metadata"


def test_chart_draws_warm_up_nulls_as_gaps_instead_of_failing():
    frame = indicator_frame("MSFT", "2024-01-02", "2024-03-28")
    assert frame["sma_50_day"].isna().sum() == 49  # the warm-up rows are in the frame
    assert png_size(price_chart_png(frame)) == (WIDTH_PX, HEIGHT_PX)


def test_chart_of_a_single_session_renders_around_that_day():
    frame = indicator_frame("MSFT", "2024-03-28", "2024-03-28")
    assert len(frame) == 1
    assert png_size(price_chart_png(frame)) == (WIDTH_PX, HEIGHT_PX)


def test_chart_names_the_columns_it_is_missing():
    frame = indicator_frame("MSFT", "2024-01-02", "2024-02-28").drop(columns=["sma_50_day"])
    with pytest.raises(ValueError, match="sma_50_day"):
        price_chart_png(frame)


def _warehouse_with(path: Path, frame: pd.DataFrame, ticker: str) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE SCHEMA marts")
        con.execute(
            "CREATE TABLE marts.stock_metrics (ticker VARCHAR, trade_date DATE, close_price DOUBLE, "
            "sma_20_day DOUBLE, sma_50_day DOUBLE, bollinger_upper DOUBLE, bollinger_lower DOUBLE)"
        )
        if len(frame):
            rows = frame.assign(ticker=ticker)[["ticker", *CHART_COLUMNS]]  # noqa: F841  # DuckDB reads it by name
            con.execute("INSERT INTO marts.stock_metrics SELECT * FROM rows")


def test_no_chart_when_the_mart_has_no_rows_up_to_the_range_end(workdir):
    settings = load_settings()
    settings.duckdb_path.parent.mkdir(parents=True)
    _warehouse_with(settings.duckdb_path, indicator_frame("AAPL", "2024-06-03", "2024-06-28"), "AAPL")
    warnings: list[str] = []

    assert transform._chart(settings, day("2024-05-31"), warnings.append) == {}
    assert "chart" in transform._chart(settings, day("2024-06-28"), warnings.append)
    assert warnings == []


def test_a_chart_that_fails_to_draw_is_logged_and_skipped_not_raised(workdir, monkeypatch):
    settings = load_settings()
    settings.duckdb_path.parent.mkdir(parents=True)
    _warehouse_with(settings.duckdb_path, indicator_frame("AAPL", "2024-01-02", "2024-03-28"), "AAPL")

    def broken(*_args, **_kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(transform, "price_chart_png", broken)
    warnings: list[str] = []
    assert transform._chart(settings, day("2024-03-28"), warnings.append) == {}
    assert warnings == ["no chart for AAPL: RuntimeError: no fonts"]


@pytest.mark.slow
def test_each_stock_metrics_materialization_embeds_a_chart_of_the_first_ticker_alphabetically(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "MSFT,AAPL")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    result = execute_range(load_settings(), day("2024-01-02"), day("2024-03-28"))
    assert result.success

    mart = [
        m.materialization
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key.to_user_string() == "marts/stock_metrics"
    ]
    # One materialization per partition of the range (the year 2024), with the chart.
    assert [m.partition for m in mart] == ["2024"]
    chart = mart[0].metadata["chart"].value
    assert "data:image/png;base64," in chart
    (encoded,) = EMBEDDED_PNG.findall(chart)
    assert png_size(base64.b64decode(encoded)) == (WIDTH_PX, HEIGHT_PX)
    # AAPL sorts before MSFT; 2024-01-02..2024-03-28 holds 61 NYSE sessions.
    assert chart.endswith("AAPL, 2024-01-02 to 2024-03-28 (61 sessions)")
