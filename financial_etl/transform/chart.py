"""A price chart for the mart's materialization page: close, SMA 20/50 and Bollinger bands.

An analyst reads a trend at a glance from a picture; the same numbers as a table take a
minute. The chart is a small PNG so it fits in Dagster's metadata as an embedded image.
"""

from __future__ import annotations

import base64
import io

import pandas as pd

# The mart's columns the chart draws; warm-up NULLs (NaN) are drawn as gaps.
CHART_COLUMNS = ("trade_date", "close_price", "sma_20_day", "sma_50_day", "bollinger_upper", "bollinger_lower")
WIDTH_PX, HEIGHT_PX, DPI = 900, 450, 100
CHART_ALT = "close, SMAs and Bollinger bands"
FEW_SESSIONS = 30


def price_chart_png(frame: pd.DataFrame, title: str = "") -> bytes:
    """PNG bytes of close, SMA 20, SMA 50 and the Bollinger band over `frame`'s rows.

    Uses matplotlib's Agg canvas directly, not pyplot: no global figure state and no
    display, so it is safe inside any Dagster step process.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
    from matplotlib.figure import Figure

    missing = [c for c in CHART_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"chart needs columns {', '.join(missing)}")
    if frame.empty:
        raise ValueError("chart needs at least one row")
    data = frame.sort_values("trade_date")
    dates = pd.to_datetime(data["trade_date"])
    values = {c: pd.to_numeric(data[c], errors="coerce").astype(float) for c in CHART_COLUMNS[1:]}

    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.fill_between(
        dates,
        values["bollinger_lower"],
        values["bollinger_upper"],
        color="tab:blue",
        alpha=0.12,
        linewidth=0,
        label="Bollinger band (20, 2σ)",
    )
    # Markers while there are few sessions, or a lone day would draw nothing.
    marker = "o" if len(data) <= FEW_SESSIONS else None
    ax.plot(dates, values["close_price"], color="black", linewidth=1.1, marker=marker, markersize=3, label="close")
    ax.plot(dates, values["sma_20_day"], color="tab:blue", linewidth=1, label="SMA 20")
    ax.plot(dates, values["sma_50_day"], color="tab:orange", linewidth=1, label="SMA 50")
    if dates.iloc[0] == dates.iloc[-1]:
        ax.set_xlim(dates.iloc[0] - pd.Timedelta(days=3), dates.iloc[0] + pd.Timedelta(days=3))
    ax.set_title(title, fontsize=11)
    ax.set_ylabel("price")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    locator = AutoDateLocator(maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def png_markdown(png: bytes, caption: str = "", alt: str = CHART_ALT) -> str:
    """Markdown that embeds the PNG inline (Dagster renders it on the materialization),
    with a caption saying what is drawn, readable where images are not shown."""
    image = f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
    return f"{image}\n\n{caption}" if caption else image
