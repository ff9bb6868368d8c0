"""Sensors that start backfills: a ticker added to the universe, a history restated at the source.

Each sensor's cursor holds what it has already handled, so a second evaluation never
requests the same run again. Each run request covers the year partitions holding its
dates, as one run narrowed to those dates by its tags.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Sequence

import pandas as pd
from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from financial_etl.automation.schedule import last_completed_day
from financial_etl.errors import FinancialEtlError
from financial_etl.errors import WarehouseUnavailableError as WarehouseUnavailable
from financial_etl.extract.contract import VALUE_COLUMNS
from financial_etl.extract.sources import fetch_for
from financial_etl.runs import MODE_TAG, REASON_TAG, RESTATE, TICKERS_TAG, WAREHOUSE_TAG, range_tags
from financial_etl.settings import Settings
from financial_etl.warehouse import RAW
from financial_etl.warehouse.engines import MissingTable

RECENT_SESSIONS = 20  # the overlap compared by the restated-history sensor
# Tickers the restated-history sensor compares per evaluation (hourly): one source request
# each, so at most this many requests an hour whatever the universe's size. Splits and
# dividends are caught by the daily run itself; this finds vendor corrections, each ticker
# compared once per len(universe) / SAMPLE hours (500 tickers: about once a day).
RESTATEMENT_SAMPLE = 25


def backfill_request(
    asset_keys: Sequence[AssetKey],
    start: dt.date,
    end: dt.date,
    tags: dict[str, str],
    engine: str = "duckdb",
) -> RunRequest:
    """One run over the year partitions holding [start, end], narrowed to those dates (the
    assets' single-run backfill policy would make a backfill of them one run as well)."""
    return RunRequest(asset_selection=list(asset_keys), tags={**tags, **range_tags(start, end), WAREHOUSE_TAG: engine})


def build_new_ticker_sensor(settings: Settings, asset_keys: Sequence[AssetKey]):
    source = str(settings.tickers_file or "FINANCIAL_ETL_TICKERS")

    @sensor(
        name="new_ticker_backfill",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=list(asset_keys),
        description=f"Backfills a ticker's whole history when it is added to {source}; reports removed tickers.",
    )
    def new_ticker_backfill(context: SensorEvaluationContext):
        universe = settings.current_tickers()
        if context.cursor is None:
            context.update_cursor(json.dumps(sorted(universe)))
            return SkipReason(f"recorded the ticker universe ({len(universe)} tickers) from {source}")
        known = set(json.loads(context.cursor))
        added = [t for t in universe if t not in known]
        removed = sorted(known - set(universe))
        if removed:
            context.log.warning(
                f"tickers removed from {source}: {', '.join(removed)}. Their rows are kept in raw, the mart "
                "and the export; delete them by hand if they must go."
            )
        first, last = settings.start_date, last_completed_day(settings)
        requests = []
        if added and last >= first:
            for ticker in added:
                requests.append(
                    backfill_request(
                        asset_keys,
                        first,
                        last,
                        {
                            TICKERS_TAG: ticker,
                            MODE_TAG: RESTATE,
                            REASON_TAG: f"new ticker {ticker} added to {source}: loading {first} to {last}",
                        },
                        settings.warehouse.engine,
                    )
                )
        context.update_cursor(json.dumps(sorted(universe)))
        if requests:
            return SensorResult(run_requests=requests)
        if removed:
            return SkipReason(f"removed tickers reported, not deleted: {', '.join(removed)}")
        return SkipReason("no ticker added")

    return new_ticker_backfill


def _window_fingerprint(frame: pd.DataFrame) -> str:
    rows = frame.sort_values("date")[["date", *VALUE_COLUMNS]]
    text = rows.to_csv(index=False, float_format="%.10g")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def history_changes(stored: pd.DataFrame, fresh: pd.DataFrame) -> str | None:
    """How a ticker's recent history at the source differs from raw, or None if it does not."""
    merged = stored.merge(fresh, on="date", suffixes=("_raw", "_source"))
    if merged.empty:
        return None
    diffs = []
    for column in VALUE_COLUMNS:
        a, b = merged[f"{column}_raw"].astype(float), merged[f"{column}_source"].astype(float)
        bad = (a - b).abs() > 1e-9 * b.abs().clip(lower=1.0)
        if bad.any():
            first = merged[bad].iloc[0]
            diffs.append(
                f"{int(bad.sum())} of {len(merged)} recent {column} values differ "
                f"(e.g. {first['date']}: {first[f'{column}_raw']:.6g} in raw, "
                f"{first[f'{column}_source']:.6g} at the source)"
            )
    return "; ".join(diffs) or None


def _restatement_cursor(text: str | None) -> dict:
    """{"offset": where the next sample starts in the universe, "handled": ticker -> fingerprint
    of the restated history already requested}."""
    cursor = json.loads(text) if text else {}
    if "handled" not in cursor:  # the cursor before sampling: fingerprints only
        cursor = {"offset": 0, "handled": cursor}
    return cursor


def build_restated_history_sensor(settings: Settings, asset_keys: Sequence[AssetKey]):

    @sensor(
        name="restated_history_backfill",
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=list(asset_keys),
        description=(
            "After a vendor correction, a ticker's recent history at the source no longer matches raw: "
            f"backfills that ticker's whole history. Compares {RESTATEMENT_SAMPLE} tickers an hour, in turn "
            "(splits and dividends are handled by the daily run itself)."
        ),
    )
    def restated_history_backfill(context: SensorEvaluationContext):
        end = last_completed_day(settings)
        warehouse = settings.warehouse
        if end < settings.start_date or (warehouse.engine == "duckdb" and not warehouse.duckdb_path.exists()):
            return SkipReason("nothing loaded yet")
        try:
            with warehouse.connect() as con:
                stored = con.execute(
                    f"SELECT * FROM (SELECT ticker, date, {', '.join(VALUE_COLUMNS)}, "
                    f"row_number() OVER (PARTITION BY ticker ORDER BY date DESC) AS n FROM {RAW} "
                    "WHERE date <= ?) AS recent WHERE n <= ?",
                    [end, RECENT_SESSIONS],
                ).df()
        except MissingTable:
            return SkipReason("nothing loaded yet")
        except WarehouseUnavailable as exc:
            return SkipReason(f"the warehouse is busy or unreachable ({exc}); trying again at the next evaluation")
        stored["date"] = pd.to_datetime(stored["date"]).dt.date
        loaded = [t for t in settings.current_tickers() if t in set(stored["ticker"])]
        if not loaded:
            return SkipReason("no loaded ticker to compare")
        cursor = _restatement_cursor(context.cursor)
        handled, offset = cursor["handled"], cursor["offset"] % len(loaded)
        tickers = (loaded[offset:] + loaded[:offset])[:RESTATEMENT_SAMPLE]
        stored = stored[stored["ticker"].isin(tickers)]
        start = pd.Timestamp(stored["date"].min()).date()
        try:
            fresh = fetch_for(settings, patient=False)(tickers, start, end).frame
        except FinancialEtlError as exc:
            return SkipReason(
                f"the source did not answer ({exc}); comparing {', '.join(tickers)} at the next evaluation"
            )
        requests, notes = [], []
        for ticker in tickers:
            mine = stored[stored["ticker"] == ticker].drop(columns=["ticker", "n"])
            theirs = fresh[fresh["ticker"] == ticker].drop(columns=["ticker"])
            change = history_changes(mine, theirs)
            if change is None:
                handled.pop(ticker, None)
                continue
            fingerprint = _window_fingerprint(theirs)
            if handled.get(ticker) == fingerprint:
                notes.append(f"{ticker}: restatement already requested")
                continue
            handled[ticker] = fingerprint
            requests.append(
                backfill_request(
                    asset_keys,
                    settings.start_date,
                    end,
                    {
                        TICKERS_TAG: ticker,
                        MODE_TAG: RESTATE,
                        REASON_TAG: f"restated history for {ticker}: {change}"[:1000],
                    },
                    warehouse.engine,
                )
            )
            context.log.info(f"{ticker}: history changed at the source ({change}); requesting a restatement")
        context.update_cursor(json.dumps({"offset": offset + len(tickers), "handled": handled}, sort_keys=True))
        if requests:
            return SensorResult(run_requests=requests)
        return SkipReason(
            "; ".join(notes)
            or (
                f"recent history of {', '.join(tickers)} matches the source ({len(tickers)} of {len(loaded)} tickers "
                "compared; the others at the next evaluations)"
            )
        )

    return restated_history_backfill
