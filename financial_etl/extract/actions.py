"""Corporate actions in the daily run: when a ticker's whole history must be loaded again.

Raw keeps the source's split- and dividend-adjusted prices. A split or dividend the
source reports on a day of the run's range re-adjusts every earlier price of that ticker
at the source, so merging just the new days would mix adjusted and unadjusted history:
the run reloads that ticker's whole history instead, in the same run. A first close that
moved by more than FINANCIAL_ETL_SUSPICIOUS_MOVE_PCT from raw's last close, with no action
that day, is reloaded too: the source may have re-adjusted its history without reporting
the event (Yahoo's missed splits). What still looks wrong after the reload is reported by
the raw check `no_unexplained_price_moves`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from financial_etl.extract.resource import PriceBatch
from financial_etl.warehouse import ACTIONS, RAW
from financial_etl.warehouse.engines import MissingTable, Warehouse


@dataclass(frozen=True)
class Stored:
    """What raw already holds that decides a reload: each ticker's last close before the
    range, and the actions raw knows in the range (None: raw has no actions table yet)."""

    last: dict[str, tuple[dt.date, float]]
    known: set[tuple[str, dt.date]] | None


def stored_before(warehouse: Warehouse, start: dt.date, end: dt.date) -> Stored:
    """Read once per run: an aggregate, so the memory stays flat however long the history."""
    if warehouse.engine == "duckdb" and not warehouse.duckdb_path.exists():
        return Stored({}, set())
    with warehouse.connect() as con:
        try:
            last = con.execute(
                f"SELECT r.ticker, r.date, r.close_price FROM {RAW} AS r JOIN (SELECT ticker, max(date) AS date "
                f"FROM {RAW} WHERE date < ? GROUP BY ticker) AS l ON r.ticker = l.ticker AND r.date = l.date",
                [start],
            ).fetchall()
        except MissingTable:  # nothing loaded yet: nothing to re-adjust
            return Stored({}, set())
        held = {ticker: (pd.Timestamp(day).date(), close) for ticker, day, close in last}
        try:
            known = con.execute(
                f"SELECT ticker, date FROM {ACTIONS} WHERE date BETWEEN ? AND ?", [start, end]
            ).fetchall()
        except MissingTable:
            return Stored(held, None)
    return Stored(held, {(t, pd.Timestamp(d).date()) for t, d in known})


def histories_to_reload(stored: Stored, batch: PriceBatch, move_pct: float) -> dict[str, str]:
    """Ticker -> why its whole history must be loaded again, for the tickers of `batch`
    that raw already holds history of."""
    held, known = stored.last, stored.known
    if not held:
        return {}
    reasons: dict[str, str] = {}
    actions = batch.actions if batch.actions is not None else pd.DataFrame()
    for row in actions.itertuples(index=False):
        if row.ticker not in held or (known is not None and (row.ticker, row.date) in known):
            continue
        what = []
        if row.split_ratio != 1:
            what.append(f"a {row.split_ratio:g}-for-1 split")
        if row.dividend:
            what.append(f"a dividend of {row.dividend:g}")
        reasons.setdefault(row.ticker, f"{' and '.join(what)} on {row.date}, which re-adjusts its earlier prices")
    acted = set(zip(actions.get("ticker", []), actions.get("date", []), strict=True))
    first = batch.frame.dropna(subset=["close_price"]).groupby("ticker", sort=False).head(1)
    for row in first.itertuples(index=False):
        if row.ticker in reasons or row.ticker not in held or (row.ticker, row.date) in acted:
            continue
        before, close = held[row.ticker]
        move = row.close_price / close - 1
        if abs(move) * 100 > move_pct:
            reasons[row.ticker] = (
                f"its close moved {move:+.1%} from raw's {before} to {row.date} with no "
                "reported split or dividend: the source may have re-adjusted its history"
            )
    return reasons
