"""Checks of raw.eod_prices_raw: its grain, its range, complete sessions, new quarantine.

Checks live in their own steps, so in a materializing run they run right after their
asset (same run), and from the UI's "Execute checks" or `financial-etl check` they
re-evaluate the current tables without materializing anything. A run's dates limit what
they look at; run alone, they look at the whole configured range.
"""

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    multi_asset_check,
)

from financial_etl.calendar import trading_sessions
from financial_etl.extract.contract import EPOCH, count_rules
from financial_etl.metadata import markdown_table
from financial_etl.runs import check_range, run_tickers
from financial_etl.settings import Settings
from financial_etl.warehouse import ACTIONS, QUARANTINE, RAW, RAW_KEY
from financial_etl.warehouse.engines import MissingTable


def build_raw_checks(settings: Settings, partitions_def: TimeWindowPartitionsDefinition):

    @multi_asset_check(
        specs=[
            AssetCheckSpec(
                "no_duplicate_ticker_date",
                asset=RAW_KEY,
                blocking=True,
                description="The (ticker, date) grain holds: no row appears twice.",
            ),
            AssetCheckSpec(
                "no_rows_outside_requested_range",
                asset=RAW_KEY,
                description="No row is dated outside FINANCIAL_ETL_START_DATE to the end date.",
            ),
            AssetCheckSpec(
                "complete_sessions",
                asset=RAW_KEY,
                description="Every requested ticker has a row on every XNYS session of the range (warns).",
            ),
            AssetCheckSpec(
                "no_unexplained_price_moves",
                asset=RAW_KEY,
                description="No close moved more than FINANCIAL_ETL_SUSPICIOUS_MOVE_PCT from the session "
                f"before with no split or dividend in {ACTIONS} that day: the sign of a "
                "split the source missed (warns, with the rows).",
            ),
            AssetCheckSpec(
                "no_new_quarantined_rows",
                asset=RAW_KEY,
                description=f"This run added no row to {QUARANTINE}, the rows that broke the raw "
                "contract (warns, with the count and the reasons).",
            ),
        ],
        can_subset=True,
        name="raw_prices_checks",
    )
    def raw_prices_checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        start, end = check_range(context.run.tags, partitions_def, settings)
        selected = {key.name for key in context.selected_asset_check_keys}
        warehouse = settings.warehouse
        with warehouse.reader_lock(log=context.log.warning), warehouse.connect() as con:
            if "no_duplicate_ticker_date" in selected:
                dupes = con.execute(
                    f"SELECT ticker, date, count(*) AS copies FROM {RAW} "
                    "GROUP BY ticker, date HAVING count(*) > 1 ORDER BY ticker, date"
                ).df()
                yield AssetCheckResult(
                    check_name="no_duplicate_ticker_date",
                    passed=dupes.empty,
                    metadata={"duplicate_keys": len(dupes), "sample": MetadataValue.md(markdown_table(dupes))},
                )
            if "no_rows_outside_requested_range" in selected:
                lo, hi = settings.start_date, settings.resolved_end()
                outside = con.execute(
                    f"SELECT ticker, date FROM {RAW} WHERE date < ? OR date > ? ORDER BY date",
                    [lo, hi],
                ).df()
                yield AssetCheckResult(
                    check_name="no_rows_outside_requested_range",
                    passed=outside.empty,
                    metadata={
                        "requested_range": f"{lo} to {hi}",
                        "rows_outside": len(outside),
                        "sample": MetadataValue.md(markdown_table(outside)),
                    },
                )
            if "no_new_quarantined_rows" in selected:
                yield quarantine_result(con, context.run.run_id, context)
            if "no_unexplained_price_moves" in selected:
                yield moves_result(con, start, end, settings.suspicious_move_pct, context)
            if "complete_sessions" in selected:
                tickers = run_tickers(context.run.tags, settings)
                missing = missing_sessions(con, tickers, start, end)
        if "complete_sessions" in selected:
            yield completeness_result(missing, start, end, context)

    return raw_prices_checks


def quarantine_result(con, run_id: str, context) -> AssetCheckResult:
    """Warns when this run quarantined rows; a check-only run adds none, so it passes."""
    try:
        new = con.execute(
            f"SELECT ticker, date, reason, location, source FROM {QUARANTINE} WHERE run_id = ? ORDER BY ticker, date",
            [run_id],
        ).df()
        total = con.execute(f"SELECT count(*) FROM {QUARANTINE}").fetchone()[0]
    except MissingTable:  # a warehouse from before the quarantine existed
        new, total = None, 0
    added = 0 if new is None else len(new)
    metadata = {"quarantined_this_run": added, "quarantine_total": int(total)}
    if added:
        rules = count_rules(new["reason"])
        metadata["by_reason"] = MetadataValue.md("\n".join(f"- {rule}: {n}" for rule, n in rules.items()))
        metadata["sample"] = MetadataValue.md(markdown_table(new.head(20)))
        metadata["next_step"] = MetadataValue.text(
            f"Inspect `SELECT * FROM {QUARANTINE} WHERE run_id = '{run_id}'`, fix the source, "
            "and re-run the affected dates; quarantined rows never reach the mart."
        )
        context.log.warning(f"{added} rows quarantined by this run ({', '.join(rules)}); see {QUARANTINE}")
    return AssetCheckResult(
        check_name="no_new_quarantined_rows",
        passed=added == 0,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
    )


# Sessions read before the range, so its first day has a previous close (long closures included).
MOVE_LOOKBACK = dt.timedelta(days=14)


def unexplained_moves(con, start: dt.date, end: dt.date, move_pct: float):
    """Rows of raw in [start, end] whose close moved more than `move_pct` percent from the
    ticker's previous session with no action in raw.corporate_actions that day."""
    moves = (
        "SELECT ticker, date, close_price, "
        "LAG(close_price) OVER (PARTITION BY ticker ORDER BY date) AS previous_close, "
        f"LAG(date) OVER (PARTITION BY ticker ORDER BY date) AS previous_date FROM {RAW} WHERE date BETWEEN ? AND ?"
    )
    suspicious = "m.date >= ? AND ABS(m.close_price / m.previous_close - 1) * 100 > ?"
    params = [start - MOVE_LOOKBACK, end, start, move_pct]
    columns = "m.ticker, m.previous_date, m.date, m.previous_close, m.close_price"
    try:
        return con.execute(
            f"SELECT {columns} FROM ({moves}) AS m LEFT JOIN {ACTIONS} AS a ON a.ticker = m.ticker AND a.date = m.date "
            f"WHERE a.ticker IS NULL AND {suspicious} ORDER BY m.ticker, m.date",
            params,
        ).df()
    except MissingTable:  # raw from before the actions table: every move is unexplained
        return con.execute(
            f"SELECT {columns} FROM ({moves}) AS m WHERE {suspicious} ORDER BY m.ticker, m.date", params
        ).df()


def moves_result(con, start: dt.date, end: dt.date, move_pct: float, context) -> AssetCheckResult:
    moves = unexplained_moves(con, start, end, move_pct)
    if len(moves):
        moves["move_pct"] = (100 * (moves["close_price"] / moves["previous_close"] - 1)).round(2)
        context.log.warning(
            f"{len(moves)} closes moved more than {move_pct:g}% with no split or dividend reported: "
            + "; ".join(
                f"{r.ticker} {pd.Timestamp(r.date).date()} {r.move_pct:+.2f}%" for r in moves.head(10).itertuples()
            )
            + ". A split the source missed? Compare with another source before trusting these rows"
        )
    return AssetCheckResult(
        check_name="no_unexplained_price_moves",
        passed=moves.empty,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "range": f"{start} to {end}",
            "threshold_pct": float(move_pct),
            "unexplained_moves": len(moves),
            "rows": MetadataValue.md(markdown_table(moves.head(50))),
        },
    )


# Rows read at a time by the completeness check: its memory is a ticker x session bitmap.
READ_ROWS = 1_000_000


def missing_sessions(con, tickers, start: dt.date, end: dt.date) -> dict[str, list[dt.date]]:
    """Each ticker's XNYS sessions in [start, end] without a row in raw. The rows stream in
    batches into a ticker x session bitmap (5,000 x 6,500 is 32 MB), so the memory does not
    grow with the rows read."""
    sessions = trading_sessions(start, end)
    days = np.array([(d - EPOCH).days for d in sessions], dtype=np.int32)
    have = np.zeros((len(tickers), len(sessions)), dtype=bool)
    names = pa.array(list(tickers), pa.string())
    query = f"SELECT ticker, date FROM {RAW} WHERE date BETWEEN ? AND ?"
    for batch in con.arrow_batches(query, [start, end], READ_ROWS):
        if not batch.num_rows or not len(days):
            continue
        row = pc.fill_null(pc.index_in(batch.column(0).cast(pa.string()), value_set=names), -1).to_numpy()
        day = batch.column(1).cast(pa.date32()).cast(pa.int32()).to_numpy()
        col = np.minimum(np.searchsorted(days, day), len(days) - 1)
        known = (row >= 0) & (days[col] == day)  # a requested ticker, on a session
        have[row[known], col[known]] = True
    return {t: [sessions[i] for i in np.flatnonzero(~have[n])] for n, t in enumerate(tickers) if not have[n].all()}


def completeness_result(missing: dict[str, list[dt.date]], start, end, context) -> AssetCheckResult:
    sessions = trading_sessions(start, end)
    lines = [
        f"{t}: {len(days)} sessions missing, "
        + ", ".join(d.isoformat() for d in days[:10])
        + (" ..." if len(days) > 10 else "")
        for t, days in missing.items()
    ]
    if missing:
        context.log.warning(f"{RAW} is missing sessions:\n" + "\n".join(lines))
    return AssetCheckResult(
        check_name="complete_sessions",
        passed=not missing,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "range": f"{start} to {end}",
            "sessions_in_range": len(sessions),
            "missing_sessions": sum(len(d) for d in missing.values()),
            "missing": MetadataValue.md("\n".join(f"- {line}" for line in lines) or "_none_"),
        },
    )
