"""The extract's two halves: `fetch_batch` fetches, applies the raw contract and refuses a
batch missing a ticker before anything reaches dlt; `eod_prices_resource` loads a
prepared batch, merging on (ticker, date) or replacing whole tickers."""

from __future__ import annotations

import dlt
import pytest

from financial_etl.errors import MissingTickersError, SourceUnavailableError
from financial_etl.extract import contract as c
from financial_etl.extract.resource import PriceBatch, empty_batch, eod_prices_resource, fetch_batch
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.warehouse import QUARANTINE, RAW, RAW_DATASET
from financial_etl_tests.helpers import day, query

START, END = day("2024-03-01"), day("2024-03-28")


def answering(tickers, *, errors=None, bad_close_on=None):
    """A source that answers only `tickers` (the others get `errors`' reason), and
    optionally breaks one row of the first ticker."""

    def fetch(requested, start, end):
        batch = fetch_synthetic(list(requested), start, end)
        batch.frame = batch.frame[batch.frame.ticker.isin(tickers)].reset_index(drop=True)
        if bad_close_on is not None:
            batch.frame.loc[
                (batch.frame.ticker == tickers[0]) & (batch.frame.date == bad_close_on), "close_price"
            ] = -1.0
        batch.ticker_errors = {t: reason for t, reason in (errors or {}).items() if t in requested}
        return batch

    return fetch


def test_the_contract_splits_the_batch_before_any_load():
    batch = fetch_batch(
        answering(["AAA", "BBB"], bad_close_on=day("2024-03-12")), ["AAA", "BBB"], START, END, run_id="run-1"
    )
    assert batch.contract is not None and batch.missing_tickers == []
    assert batch.contract.reasons() == {c.NON_POSITIVE_PRICE: 1}
    assert batch.rows == batch.contract.valid.num_rows == 2 * 20 - 1  # 20 NYSE sessions, Good Friday closed
    assert batch.contract.quarantine.column("run_id").to_pylist() == ["run-1"]


def test_a_ticker_without_rows_fails_by_name_with_the_sources_reason():
    fetch = answering(["AAA"], errors={"GONE": "possibly delisted"})
    with pytest.raises(MissingTickersError, match=r"GONE.*possibly delisted.*FINANCIAL_ETL_ALLOW_PARTIAL_LOADS"):
        fetch_batch(fetch, ["AAA", "GONE"], START, END)
    batch = fetch_batch(fetch, ["AAA", "GONE"], START, END, allow_partial=True)
    assert batch.missing_tickers == ["GONE"] and set(batch.contract.valid.column("ticker").to_pylist()) == {"AAA"}


def test_no_ticker_answering_is_a_source_failure_even_with_partial_loads():
    with pytest.raises(SourceUnavailableError, match="no rows for any of the 2 tickers"):
        fetch_batch(answering([]), ["AAA", "BBB"], START, END, allow_partial=True)


def test_no_rows_on_a_day_without_a_session_is_normal():
    fetch = answering(["AAA", "BBB"])
    assert fetch(["AAA", "BBB"], day("2024-03-29"), day("2024-03-29")).frame.empty
    batch = fetch_batch(fetch, ["AAA", "BBB"], day("2024-03-29"), day("2024-03-29"))  # Good Friday
    assert batch.rows == 0 and batch.missing_tickers == []


def test_the_resource_refuses_a_batch_the_contract_has_not_seen():
    unchecked = PriceBatch(frame=fetch_synthetic(["AAA"], START, END).frame, source="synthetic")
    with pytest.raises(ValueError, match="contract has not run"):
        eod_prices_resource(unchecked)


def test_loads_merge_on_ticker_and_date_and_a_restatement_replaces_the_whole_ticker(tmp_path):
    db = tmp_path / "w.duckdb"
    pipeline = dlt.pipeline(
        pipeline_name="resource_test",
        destination=dlt.destinations.duckdb(str(db)),
        dataset_name=RAW_DATASET,
        pipelines_dir=str(tmp_path / "dlt"),
    )
    both = fetch_batch(answering(["AAA", "BBB"], bad_close_on=day("2024-03-12")), ["AAA", "BBB"], START, END)
    pipeline.run(eod_prices_resource(both))
    pipeline.run(eod_prices_resource(both))  # the same batch again adds nothing
    rows = f"SELECT ticker, date, close_price FROM {RAW} ORDER BY ticker, date"
    loaded = query(db, rows)
    assert len(loaded) == 39 and query(db, f"SELECT count(*) FROM {QUARANTINE}") == [(1,)]

    # BBB's history restated with fewer sessions: its old rows go, AAA's stay untouched.
    shorter = fetch_batch(answering(["BBB"]), ["BBB"], START, day("2024-03-15"))
    pipeline.run(eod_prices_resource(shorter, replace_tickers=True))
    after = query(db, rows)
    assert [r for r in after if r[0] == "AAA"] == [r for r in loaded if r[0] == "AAA"]
    assert [r[1] for r in after if r[0] == "BBB"] == [
        r[1] for r in loaded if r[0] == "BBB" and r[1] <= day("2024-03-15")
    ]


def test_the_definitions_batch_is_empty_but_has_the_contract():
    batch = empty_batch("synthetic")
    assert batch.rows == 0 and batch.contract is not None and batch.contract.quarantined == 0
