import numpy as np
import pandas as pd
import pytest

from financial_etl.calendar import trading_sessions
from financial_etl.errors import EXIT_DATA_QUALITY, ConfigError, MissingTickersError
from financial_etl.extract.contract import RAW_SCHEMA, apply_contract
from financial_etl.extract.resource import fetch_batch
from financial_etl.extract.sources import csv as csv_source
from financial_etl.extract.sources import yfinance as yf_source
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl_tests.helpers import day, write_yahoo_csv
from financial_etl_tests.yahoo import YahooChartServer, random_listing

# --- yfinance (Yahoo's chart answers under yfinance's own code: financial_etl_tests/yahoo.py) ---

MARCH = trading_sessions(day("2024-03-01"), day("2024-03-29"))  # 20: Good Friday is closed


@pytest.fixture
def yahoo(monkeypatch, tmp_path):
    listings = {
        t: random_listing(day("2024-01-02"), day("2024-04-30"), seed=i) for i, t in enumerate(("AAPL", "MSFT", "DEAD"))
    }
    listings["DEAD"].prices = listings["DEAD"].prices[listings["DEAD"].prices["date"] < day("2024-02-01")]
    return YahooChartServer(listings, today=day("2024-04-30")).install(monkeypatch, tmp_path)


def as_yahoo_sends(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(float)  # Yahoo's JSON numbers are float32


def test_yfinance_asks_one_window_per_ticker_with_an_inclusive_end(yahoo):
    start, end = day("2024-03-01"), day("2024-03-27")  # Yahoo has the sessions after it too
    batch = yf_source.fetch_yfinance(["AAPL", "MSFT"], start, end)
    assert yahoo.chart_requests == {"AAPL": 2, "MSFT": 2}  # the timezone probe, then the window
    windows = [r for r in yahoo.requests if "period2=" in r]
    assert len(windows) == 2 and all("period2=1711598400&" in r for r in windows)  # 2024-03-28 00:00 New York
    sessions = [d for d in MARCH if d <= end]
    for ticker in ("AAPL", "MSFT"):
        assert list(batch.frame[batch.frame.ticker == ticker].date) == sessions  # 03-01 to 03-27, both included
    assert list(batch.frame.columns) == [
        "ticker",
        "date",
        "open_price",
        "high_price",
        "low_price",
        "close_price",
        "volume",
    ]
    assert batch.ticker_errors == {} and batch.actions.empty


def test_yfinance_values_land_in_the_right_columns(yahoo):
    batch = yf_source.fetch_yfinance(["AAPL", "MSFT"], day("2024-03-01"), day("2024-03-08"))
    row = batch.frame[(batch.frame.ticker == "MSFT") & (batch.frame.date == day("2024-03-05"))].iloc[0]
    traded = yahoo.listings["MSFT"].prices.set_index("date").loc[day("2024-03-05")]
    assert len({traded.open, traded.high, traded.low, traded.close}) == 4  # a swap would show
    got = [row.open_price, row.high_price, row.low_price, row.close_price]
    assert got == as_yahoo_sends([traded.open, traded.high, traded.low, traded.close]).tolist()
    assert row.volume == traded.volume


def test_yfinance_names_an_empty_ticker_and_gap_rows_never_reach_the_contract(yahoo):
    aapl, msft = yahoo.listings["AAPL"], yahoo.listings["MSFT"]
    aapl.prices = aapl.prices[aapl.prices["date"] != day("2024-03-12")]  # Yahoo has no bar that day
    gap = msft.prices["date"] == day("2024-03-20")
    msft.prices.loc[gap, ["open", "high", "low", "close"]] = np.nan  # Yahoo's nulls, no volume
    msft.prices.loc[gap, "volume"] = 0
    start, end = day("2024-03-01"), day("2024-03-29")
    batch = yf_source.fetch_yfinance(["AAPL", "DEAD", "MSFT"], start, end)
    assert batch.ticker_causes == {"DEAD": "no_data"}  # known to Yahoo, no bar in the window
    assert batch.ticker_errors["DEAD"].startswith("no price data found")
    assert set(batch.frame.ticker) == {"AAPL", "MSFT"}
    result = apply_contract(batch.frame, start, end, ["AAPL", "DEAD", "MSFT"], "yfinance")
    valid = result.valid.to_pandas()
    assert len(valid) == 2 * len(MARCH) - 2
    assert day("2024-03-12") not in set(valid[valid.ticker == "AAPL"].date)
    assert day("2024-03-20") not in set(valid[valid.ticker == "MSFT"].date)
    # yfinance drops an all-null bar itself (history's keepna=False): no untraded row is
    # left for the contract, and a gap is never quarantined as bad data.
    assert result.untraded == 0 and result.quarantined == 0
    assert not valid[["open_price", "close_price", "volume"]].isna().any().any()


def test_yfinance_single_ticker_and_empty_answers(yahoo):
    batch = yf_source.fetch_yfinance(["AAPL"], day("2024-03-01"), day("2024-03-08"))
    assert set(batch.frame.ticker) == {"AAPL"} and len(batch.frame) == 6 and batch.ticker_errors == {}

    # Before its first session: Yahoo answers with no bar at all for either ticker.
    yahoo.listings = {t: random_listing(day("2024-05-01"), day("2024-05-31"), seed=1) for t in ("AAPL", "MSFT")}
    yahoo.new_process()
    batch = yf_source.fetch_yfinance(["AAPL", "MSFT"], day("2024-03-01"), day("2024-03-08"))
    assert batch.frame.empty and batch.ticker_causes == {"AAPL": "no_data", "MSFT": "no_data"}


# --- csv ------------------------------------------------------------------------------


def _frame(ticker="AAA", start="2024-01-02", periods=10):
    dates = pd.bdate_range(start, periods=periods).date
    close = np.linspace(10, 20, periods)
    return pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            "open_price": close,
            "high_price": close + 1,
            "low_price": close - 1,
            "close_price": close,
            "volume": np.arange(1, periods + 1) * 100,
        }
    )


@pytest.mark.parametrize("adj_close", [True, False])
def test_csv_reads_yahoo_format_with_or_without_adj_close(tmp_path, adj_close):
    frame = _frame()
    write_yahoo_csv(tmp_path / "AAA.csv", frame, adj_close=adj_close)
    batch = csv_source.make_csv_fetch(tmp_path)(["AAA"], day("2024-01-03"), day("2024-01-10"))
    assert list(batch.frame.date) == [d for d in frame.date if day("2024-01-03") <= d <= day("2024-01-10")]
    assert batch.frame.close_price.tolist() == frame.set_index("date").loc[list(batch.frame.date)].close_price.tolist()


def test_csv_null_rows_are_untraded_days_not_errors(tmp_path):
    (tmp_path / "AAA.csv").write_text(
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2024-01-02,10,11,9,10.5,10.5,100\n"
        "2024-01-03,null,null,null,null,null,null\n"
        "2024-01-04,10,11,9,10.2,10.2,120\n"
    )
    start, end = day("2024-01-01"), day("2024-01-31")
    batch = csv_source.make_csv_fetch(tmp_path)(["AAA"], start, end)
    result = apply_contract(batch.frame, start, end, ["AAA"], "csv", batch.rejected)
    assert result.valid.column("date").to_pylist() == [day("2024-01-02"), day("2024-01-04")]
    assert result.untraded == 1 and result.quarantined == 0


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("", "empty"),
        ("Date,Open,High,Low,Close\n2024-01-02,1,2,0.5,1\n", "header"),
        ("Date;Open;High;Low;Close;Volume\n", "header"),
        (b"\xff\xfeD\x00a\x00t\x00e\x00\n", "header"),
    ],
)
def test_an_unusable_csv_file_fails_naming_the_file(tmp_path, content, what):
    path = tmp_path / "AAA.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as excinfo:
        csv_source.make_csv_fetch(tmp_path)(["AAA"], day("2024-01-01"), day("2024-12-31"))
    assert f"{path}:1:" in str(excinfo.value)
    assert what in str(excinfo.value)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("02/01/2024,1,2,0.5,1,10", "Date '02/01/2024' is not YYYY-MM-DD"),
        ("2024-01-03,1,2,abc,1,10", "Low 'abc' is not a number"),
        ("2024-01-03,1,2,0.5,1", "5 fields, the header has 6"),
        ("2024-01-03,1,2,0.5,1,10,7", "7 fields, the header has 6"),
        ('2024-01-03,"1,2,0.5,1,10', "fields"),
        ("2024-01-03,1,2,0.5,1,1\x0010", "Volume"),
        # What Python's float() and date.fromisoformat() accept and no price file writes.
        ("2024-01-03,1,2,0.5,1,1_000", "Volume '1_000' is not a number"),
        ("2024-01-03,1_000.5,2,0.5,1,10", "Open '1_000.5' is not a number"),
        ("2024-01-03,1,\uff12,0.5,1,10", "High '\uff12' is not a number"),  # a full-width 2
        ("2024-01-03,1,2,0.5,\u0661,10", "Close '\u0661' is not a number"),  # an Arabic-Indic 1
        ("2024-W04-5,1,2,0.5,1,10", "Date '2024-W04-5' is not YYYY-MM-DD"),  # an ISO week date
        ("\uff12\uff10\uff12\uff14-01-03,1,2,0.5,1,10", "is not YYYY-MM-DD"),
    ],
)
def test_an_unparseable_csv_line_is_rejected_with_its_line_and_the_rest_loads(tmp_path, line, what):
    path = tmp_path / "AAA.csv"
    path.write_text(f"Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1,10\n{line}\n2024-01-04,1,2,0.5,1,10\n")
    batch = csv_source.make_csv_fetch(tmp_path)(["AAA"], day("2024-01-01"), day("2024-12-31"))
    assert batch.frame.date.tolist() == [day("2024-01-02"), day("2024-01-04")]
    assert len(batch.rejected) == 1
    rejected = batch.rejected[0]
    assert rejected.location == "AAA.csv:3" and rejected.ticker == "AAA"
    assert what in rejected.detail
    assert rejected.raw_line == line


def test_a_bad_csv_line_dated_outside_the_range_is_not_this_runs_business(tmp_path):
    (tmp_path / "AAA.csv").write_text(
        "Date,Open,High,Low,Close,Volume\n2023-05-02,1,2,x,1,10\n2024-01-02,1,2,0.5,1,10\nnot-a-date,1\n"
    )
    batch = csv_source.make_csv_fetch(tmp_path)(["AAA"], day("2024-01-01"), day("2024-01-31"))
    assert [r.location for r in batch.rejected] == ["AAA.csv:4"]  # its date is unknown, so it is reported


HEADER = "Date,Open,High,Low,Close,Volume\n"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("", "has only its header"),
        ("\n \n", "has only its header"),
        (
            "2023-05-02,1,2,0.5,1,10\n2023-06-01,1,2,0.5,1,10\n",
            "has no row from 2024-01-01 to 2024-01-31 (its rows run from 2023-05-02 to 2023-06-01)",
        ),
        ("2024-01-02,null,null,null,null,null\n", "has no value on any line from 2024-01-01 to 2024-01-31"),
    ],
)
def test_a_csv_file_without_a_row_in_the_range_says_so_by_name(tmp_path, body, why):
    path = tmp_path / "AAA.csv"
    path.write_text(HEADER + body)
    write_yahoo_csv(tmp_path / "BBB.csv", _frame())
    batch = csv_source.make_csv_fetch(tmp_path)(["AAA", "BBB"], day("2024-01-01"), day("2024-01-31"))
    assert batch.ticker_errors == {"AAA": f"{path} {why}"}
    assert batch.ticker_causes == {"AAA": "absent"}


def test_a_header_only_csv_file_is_a_missing_ticker_naming_the_file_even_alone(tmp_path):
    """Exit 3, not 4: a file that was read and holds no row is data missing, not a source to
    retry, also when it is the only ticker and when partial loads are allowed."""
    (tmp_path / "AAA.csv").write_text(HEADER)
    write_yahoo_csv(tmp_path / "BBB.csv", _frame())
    fetch = csv_source.make_csv_fetch(tmp_path)
    start, end = day("2024-01-01"), day("2024-01-31")
    for tickers, allow_partial in ((["AAA", "BBB"], False), (["AAA"], False), (["AAA"], True)):
        with pytest.raises(MissingTickersError) as failure:
            fetch_batch(fetch, tickers, start, end, allow_partial=allow_partial)
        assert f"AAA: {tmp_path / 'AAA.csv'} has only its header" in str(failure.value)
        assert failure.value.exit_code == EXIT_DATA_QUALITY
    batch = fetch_batch(fetch, ["AAA", "BBB"], start, end, allow_partial=True)
    assert batch.missing_tickers == ["AAA"] and set(batch.contract.valid.column("ticker").to_pylist()) == {"BBB"}


def test_csv_missing_ticker_file_is_named(tmp_path):
    write_yahoo_csv(tmp_path / "AAA.csv", _frame())
    with pytest.raises(ConfigError, match=r"BBB \(BBB.csv\)"):
        csv_source.check_csv_dir(tmp_path, ["AAA", "BBB"])


# --- synthetic ------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_independent_of_the_range():
    whole = fetch_synthetic(["AAPL", "MSFT"], day("2024-01-01"), day("2024-12-31")).frame
    again = fetch_synthetic(["AAPL", "MSFT"], day("2024-01-01"), day("2024-12-31")).frame
    part = fetch_synthetic(["AAPL", "MSFT"], day("2024-06-01"), day("2024-06-30")).frame
    pd.testing.assert_frame_equal(whole, again)
    expected = whole[(whole.date >= day("2024-06-01")) & (whole.date <= day("2024-06-30"))].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expected)
    assert not whole[whole.ticker == "AAPL"].close_price.equals(whole[whole.ticker == "MSFT"].close_price)


def test_synthetic_rows_are_valid_ohlcv_on_exchange_sessions_only():
    batch = fetch_synthetic(["AAPL", "NVDA"], day("2023-01-01"), day("2024-12-31"))
    frame = batch.frame
    assert batch.synthetic and batch.source == "synthetic"
    assert (frame.low_price <= frame[["open_price", "close_price"]].min(axis=1)).all()
    assert (frame.high_price >= frame[["open_price", "close_price"]].max(axis=1)).all()
    assert (frame.volume > 0).all() and (frame.low_price > 0).all()
    dates = set(frame.date)
    assert all(d.weekday() < 5 for d in dates)
    assert day("2024-12-25") not in dates and day("2024-07-04") not in dates  # XNYS holidays
    assert dates == set(trading_sessions(day("2023-01-01"), day("2024-12-31")))


def test_arrow_handoff_keeps_the_raw_types():
    start, end = day("2024-01-01"), day("2024-01-31")
    result = apply_contract(fetch_synthetic(["AAPL"], start, end).frame, start, end, ["AAPL"], "synthetic")
    assert result.valid.schema == RAW_SCHEMA
    assert [str(t) for t in result.valid.schema.types] == [
        "string",
        "date32[day]",
        "double",
        "double",
        "double",
        "double",
        "int64",
    ]
