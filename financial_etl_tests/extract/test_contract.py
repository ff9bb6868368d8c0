"""The raw contract, rule by rule: each broken row is quarantined with its reason, the
rest load unchanged, and warn-only rules let the row through."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from financial_etl.extract import contract as c
from financial_etl.extract.contract import Rejected, apply_contract
from financial_etl.extract.resource import PriceBatch
from financial_etl_tests.helpers import day

START, END = day("2024-03-01"), day("2024-03-29")


def clean(ticker="AAA", periods=10) -> pd.DataFrame:
    dates = [d.date() for d in pd.bdate_range("2024-03-04", periods=periods)]
    close = np.linspace(10, 20, periods)
    return pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            "open_price": close,
            "high_price": close + 1,
            "low_price": close - 1,
            "close_price": close,
            "volume": np.arange(1, periods + 1) * 100.0,
        }
    )


def broken(**changes) -> pd.DataFrame:
    """A clean frame whose fourth row is changed as given."""
    frame = clean()
    for column, value in changes.items():
        frame.loc[3, column] = value
    return frame


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"close_price": np.nan}, c.MISSING_PRICE),
        ({"open_price": np.inf}, c.NON_FINITE),
        ({"low_price": -1.0}, c.NON_POSITIVE_PRICE),
        ({"close_price": 0.0}, c.NON_POSITIVE_PRICE),
        ({"high_price": 5.0, "low_price": 6.0, "open_price": 5.5, "close_price": 5.5}, c.HIGH_BELOW_LOW),
        ({"volume": -5.0}, c.NEGATIVE_VOLUME),
        ({"volume": 10.5}, c.FRACTIONAL_VOLUME),
        ({"volume": np.nan}, c.MISSING_VOLUME),
        # Plausibility bounds: finite, positive, whole, and still absurd.
        ({"close_price": 1e308}, c.PRICE_TOO_LARGE),
        ({"high_price": c.MAX_PRICE * 1.01}, c.PRICE_TOO_LARGE),
        ({"close_price": 1e-320}, c.PRICE_TOO_SMALL),
        ({"low_price": c.MIN_PRICE / 2}, c.PRICE_TOO_SMALL),
        ({"volume": 1e16}, c.VOLUME_TOO_LARGE),
        ({"volume": 2.0**63}, c.VOLUME_TOO_LARGE),
        ({"date": day("2024-04-01")}, c.OUTSIDE_RANGE),
        ({"ticker": "ZZZ"}, c.UNREQUESTED_TICKER),
    ],
)
def test_each_rule_quarantines_exactly_the_broken_row(changes, reason):
    frame = broken(**changes)
    result = apply_contract(frame, START, END, ["AAA"], "test", run_id="run-1")
    assert result.quarantined == 1
    row = result.quarantine.to_pylist()[0]
    assert reason in row["reason"].split("; ")
    assert row["run_id"] == "run-1" and row["source"] == "test"
    for column, value in changes.items():
        missing = isinstance(value, float) and np.isnan(value)
        assert row[column] is None if missing else row[column] == value  # a missing value is stored as NULL
    valid = result.valid.to_pandas()
    assert len(valid) == len(frame) - 1
    expected = frame.drop(index=3).reset_index(drop=True)
    assert valid["date"].tolist() == expected["date"].tolist()
    assert valid["close_price"].tolist() == expected["close_price"].tolist()


def test_a_row_breaking_two_rules_lists_both():
    result = apply_contract(broken(volume=-1.0, low_price=-2.0), START, END, ["AAA"], "test")
    assert result.quarantine.column("reason").to_pylist() == [f"{c.NON_POSITIVE_PRICE}; {c.NEGATIVE_VOLUME}"]
    assert result.reasons() == {c.NON_POSITIVE_PRICE: 1, c.NEGATIVE_VOLUME: 1}


def test_every_copy_of_a_duplicated_key_is_quarantined_even_unsorted():
    frame = clean()
    frame = pd.concat([frame, frame.iloc[[2]].assign(close_price=99.0)]).iloc[::-1].reset_index(drop=True)
    result = apply_contract(frame, START, END, ["AAA"], "test")
    assert result.quarantined == 2
    assert set(result.quarantine.column("reason").to_pylist()) == {c.DUPLICATE_KEY}
    assert set(result.quarantine.column("close_price").to_pylist()) == {frame.close_price[len(frame) - 3], 99.0}
    assert result.valid.num_rows == len(frame) - 2
    dates = result.valid.column("date").to_pylist()
    assert dates == sorted(dates)


def test_an_all_empty_row_is_a_gap_not_bad_data():
    frame = broken(open_price=np.nan, high_price=np.nan, low_price=np.nan, close_price=np.nan, volume=np.nan)
    result = apply_contract(frame, START, END, ["AAA"], "test")
    assert result.untraded == 1 and result.quarantined == 0 and result.valid.num_rows == len(frame) - 1


def test_open_above_high_only_warns_and_the_row_loads():
    frame = broken(open_price=21.0)  # high is close + 1 on every row, well below 21 here
    result = apply_contract(frame, START, END, ["AAA"], "test")
    assert result.quarantined == 0 and result.valid.num_rows == len(frame)
    assert result.warned == {c.OPEN_CLOSE_OUTSIDE_HIGH_LOW: 1}


def test_rejected_lines_join_the_quarantine_with_their_location():
    rejected = [Rejected(ticker="AAA", location="AAA.csv:7", raw_line="2024-03-05,x", detail="2 fields")]
    result = apply_contract(clean(), START, END, ["AAA"], "csv", rejected)
    rows = result.quarantine.to_pylist()
    assert [(r["location"], r["raw_line"], r["reason"]) for r in rows] == [
        ("AAA.csv:7", "2024-03-05,x", f"{c.UNPARSEABLE}: 2 fields")
    ]
    assert result.valid.num_rows == len(clean())


def test_the_same_bad_input_gets_the_same_quarantine_id_and_another_gets_another():
    one = apply_contract(broken(volume=-5.0), START, END, ["AAA"], "test", run_id="a").quarantine
    again = apply_contract(broken(volume=-5.0), START, END, ["AAA"], "test", run_id="b").quarantine
    other = apply_contract(broken(volume=-6.0), START, END, ["AAA"], "test").quarantine
    assert one.column("quarantine_id").to_pylist() == again.column("quarantine_id").to_pylist()
    assert one.column("quarantine_id").to_pylist() != other.column("quarantine_id").to_pylist()


def test_a_clean_batch_passes_whole_and_typed():
    frame = pd.concat([clean("AAA"), clean("BBB")], ignore_index=True)
    result = apply_contract(frame, START, END, ["AAA", "BBB"], "test")
    assert result.quarantined == 0 and result.untraded == 0 and not result.warned
    assert result.valid.num_rows == 20
    assert result.valid.column("volume").to_pylist() == [int(v) for v in frame.volume]
    assert isinstance(result.valid.column("date")[0].as_py(), dt.date)


def test_prices_and_volumes_at_the_bounds_load():
    frame = clean(periods=4)
    frame.loc[0, ["open_price", "low_price", "close_price"]] = c.MIN_PRICE
    frame.loc[1, ["open_price", "high_price", "close_price"]] = c.MAX_PRICE
    frame.loc[2, "volume"] = c.MAX_VOLUME
    frame.loc[3, "low_price"] = 1e-5  # a sub-penny low (OTC stocks trade at $0.0001)
    result = apply_contract(frame, START, END, ["AAA"], "test")
    assert result.quarantined == 0 and result.valid.num_rows == 4
    assert result.valid.column("close_price").to_pylist()[:2] == [c.MIN_PRICE, c.MAX_PRICE]
    assert result.valid.column("volume").to_pylist()[2] == 10**15


def test_a_zero_price_is_not_above_zero_rather_than_too_small():
    result = apply_contract(broken(low_price=0.0), START, END, ["AAA"], "test")
    assert result.quarantine.column("reason").to_pylist() == [c.NON_POSITIVE_PRICE]


def repeated(rows: int, copies: int) -> pd.DataFrame:
    """`rows` sessions of AAA, each line `copies` times: a file of duplicated rows."""
    return pd.concat([clean(periods=rows)] * copies, ignore_index=True)


def test_the_quarantine_keeps_the_first_rows_per_ticker_and_reason_and_counts_the_rest():
    start, end = day("2024-01-01"), day("2025-12-31")  # 300 weekdays from 2024-03-04
    frame = pd.concat([repeated(300, 4), clean("BBB", periods=5).assign(volume=-1.0)], ignore_index=True)
    rejected = [Rejected("AAA", f"AAA.csv:{i}", f"2024-03-04,{i}", "2 fields") for i in range(2, 1_103)]
    result = apply_contract(frame, start, end, ["AAA", "BBB"], "csv", rejected, run_id="r")
    assert result.valid.num_rows == 0  # every AAA row has three twins; every BBB volume is negative
    kept = result.quarantine.to_pandas()
    assert kept.groupby(["ticker", "reason"]).size().to_dict() == {
        ("AAA", c.DUPLICATE_KEY): c.QUARANTINE_KEEP,
        ("AAA", f"{c.UNPARSEABLE}: 2 fields"): c.QUARANTINE_KEEP,
        ("BBB", c.NEGATIVE_VOLUME): 5,
    }
    assert result.not_kept == {
        ("AAA", c.DUPLICATE_KEY): 1_200 - c.QUARANTINE_KEEP,
        ("AAA", c.UNPARSEABLE): 1_101 - c.QUARANTINE_KEEP,
    }
    assert result.not_kept_rows == 301
    # The first rows in (ticker, date) order, the first lines in file order: the same input
    # keeps the same rows, so re-reading it adds nothing to the insert-only quarantine.
    duplicates = kept[kept.reason == c.DUPLICATE_KEY]
    assert duplicates.date.tolist() == sorted(frame.date[frame.ticker == "AAA"])[: c.QUARANTINE_KEEP]
    lines = kept[kept.location.notna()].location.tolist()
    assert lines == [f"AAA.csv:{i}" for i in range(2, 2 + c.QUARANTINE_KEEP)]
    again = apply_contract(frame.sample(frac=1, random_state=1), start, end, ["AAA", "BBB"], "csv", rejected)
    assert sorted(again.quarantine.column("quarantine_id").to_pylist()) == sorted(kept.quarantine_id)
    assert len(set(kept.quarantine_id)) == len(kept)


def test_the_raw_assets_metadata_counts_what_the_quarantine_did_not_keep(monkeypatch, tmp_path):
    from financial_etl.extract.assets import batch_metadata
    from financial_etl.extract.chunks import StagedBatch
    from financial_etl.settings import load_settings

    monkeypatch.setenv("FINANCIAL_ETL_TICKERS", "AAA")
    start, end = day("2024-01-01"), day("2025-12-31")  # 300 weekdays from 2024-03-04
    batch = PriceBatch(frame=repeated(300, 4), source="csv")
    batch.contract = apply_contract(batch.frame, start, end, ["AAA"], "csv")
    staged = StagedBatch(folder=tmp_path, source="csv")
    staged.add(batch)  # the counts summed over the extract's groups
    meta = batch_metadata(load_settings(), staged, ["AAA"], start, end)
    assert meta["rows_quarantined"].value == c.QUARANTINE_KEEP
    assert meta["rows_quarantined_not_kept"].value == 200
    assert f"- AAA, {c.DUPLICATE_KEY}: 200" in meta["quarantine_not_kept"].value
