MODEL (
  name marts.stock_metrics,
  kind INCREMENTAL_BY_TIME_RANGE (
    time_column trade_date,
    partition_by_time_column false
  ),
  partitioned_by trade_month,
  cron '@daily',
  grain (ticker, trade_date),
  description 'Daily technical indicators per ticker, computed from raw.eod_prices_raw. Every window counts trading rows of one ticker, and an indicator is NULL until its window is full.',
  column_descriptions (
    ticker = 'Ticker symbol',
    trade_date = 'Trading session date',
    open_price = 'Opening price',
    high_price = 'Session high',
    low_price = 'Session low',
    close_price = 'Closing price (adjusted when the source adjusts)',
    volume = 'Shares traded',
    sma_9_day = 'Mean of the last 9 closes',
    sma_20_day = 'Mean of the last 20 closes',
    sma_50_day = 'Mean of the last 50 closes',
    bollinger_upper = 'sma_20_day + 2 x population std-dev of the last 20 closes',
    bollinger_lower = 'sma_20_day - 2 x population std-dev of the last 20 closes',
    rsi_14_day = 'Simple-average (Cutler) RSI over the last 14 close-to-close changes',
    macd_line = 'Mean of the last 12 closes - mean of the last 26 closes',
    atr_14_day = 'Mean of the last 14 true ranges',
    daily_return_pct = 'Close-to-close return, percent',
    price_range_pct = '(high - low) / close, percent',
    volume_ratio = 'volume / mean of the last 20 volumes; NULL when that mean is 0',
    volume_sma_20 = 'Mean of the last 20 volumes, rounded',
    ema_12 = 'TA-Lib EMA(close, 12): the mean of the first 12 closes at row 12, then e = (close - e) * 2/13 + e',
    ema_26 = 'TA-Lib EMA(close, 26): the mean of the first 26 closes at row 26, then e = (close - e) * 2/27 + e',
    macd = 'TA-Lib MACD(12, 26, 9) line: fast EMA 12 (seeded at row 26 with the mean of closes 15..26) - EMA 26; NULL before row 34',
    macd_signal = 'TA-Lib MACD(12, 26, 9) signal: EMA 9 of the MACD line, seeded at row 34 with the mean of the line over rows 26..34',
    macd_histogram = 'TA-Lib MACD(12, 26, 9) histogram: macd - macd_signal',
    rsi_14_wilder = 'TA-Lib RSI(close, 14), Wilder smoothing: average gain and loss seeded with the mean of the first 14 changes (row 15), then (a * 13 + x) / 14; 100 * gain / (gain + loss), 0 when both are 0',
    atr_14_wilder = 'TA-Lib ATR(14), Wilder smoothing: the mean of the first 14 true ranges (row 15), then (a * 13 + true range) / 14',
    wilder_avg_gain_14 = 'Wilder average gain behind rsi_14_wilder: the mean of the first 14 gains (row 15), then (a * 13 + gain) / 14',
    wilder_avg_loss_14 = 'Wilder average loss behind rsi_14_wilder: the mean of the first 14 losses (row 15), then (a * 13 + loss) / 14',
    trade_month = 'First day of the session''s month (the mart''s partition on Spark)'
  ),
  audits (
    not_null(columns := (ticker, trade_date, close_price, volume), condition := @in_audited_months()),
    unique_combination_of_columns(columns := (ticker, trade_date), condition := @in_audited_months()),
    valid_rsi_range,
    valid_ohlc_prices,
    open_close_within_high_low,
    positive_volume,
    valid_atr,
    valid_rsi_wilder_range,
    valid_atr_wilder,
    macd_histogram_identity,
    finite_values(columns := (
      open_price, high_price, low_price, close_price, sma_9_day, sma_20_day, sma_50_day, bollinger_upper,
      bollinger_lower, rsi_14_day, macd_line, atr_14_day, daily_return_pct, price_range_pct, volume_ratio, ema_12,
      ema_26, macd, macd_signal, macd_histogram, rsi_14_wilder, atr_14_wilder, wilder_avg_gain_14, wilder_avg_loss_14
    ))
  )
);

/*
 * Why the lookback: SQLMesh hands this query one interval [@start_ds, @end_ds] at a
 * time. Windows computed over that interval alone would restart at every batch
 * boundary (the seed's bug: sma_50 = sma_20, one-row windows on daily runs). So each
 * batch also reads, per ticker, the last @lookback_rows (config.py: 50) trading rows
 * before @start_ds (counted in rows, not days, because of holidays and halts): enough to
 * fill the longest window (50 closes) and the 14 changes of RSI/ATR. Only rows of the
 * interval are written.
 * A calendar pre-filter keeps a one-day run from sorting the whole history: those rows
 * lie within 120 days for a ticker trading normally. A ticker with fewer (a halt, a new
 * listing) is read from its first row instead.
 *
 * Warm-up: an indicator is NULL until its window is full, checked by counting the
 * rows (or changes) inside the window, never with partial windows.
 *
 * The recursive indicators (ema_12, ema_26, macd, macd_signal, macd_histogram,
 * rsi_14_wilder, atr_14_wilder: TA-Lib's EMA, MACD(12, 26, 9), RSI(14), ATR(14), default
 * seeding) depend on a ticker's whole history, not on a window of rows. Each is a linear
 * recursion y = a * y_prev + b * x from a seed row (TA-Lib's seed: a mean of the first n
 * values). So y at a row is the sum of the inputs before it weighted by powers of a, which
 * windowed SUMs compute (see macros/recursions.py): weights a^-p within blocks of 2048
 * rows, so no power overflows, plus the previous block's total; older inputs weigh less
 * than a^2049 (under 1e-60) and are left out. The running sums and the trailing windows
 * are one window pass over (ticker, block), each block led in by the previous one's last
 * rows, which also bring that block's total. Each CTE is read by one other only (`near`
 * also by two small subqueries): Spark inlines a CTE at every reference, and the model's one-day plan read raw
 * 26 times when the lookback CTEs referred to each other.
 * A batch starts from the state on each ticker's last row before it (this model's own
 * row: the recursions' values, and the Wilder averages behind RSI), which makes the model
 * self-referencing: SQLMesh runs its intervals in order and restates through the end.
 * A ticker read from its first row needs no state.
 */
WITH near AS (
  /* One read of raw for the batch and the rows before it: a ticker trading normally has its
     last @lookback_rows rows before the batch within ~75 calendar days; 120 leave room for
     holidays. Per ticker: its rows in the batch, its rows before it, and each earlier
     row's place counted back from the batch (1: the last row before it). */
  SELECT
    ticker, date, open_price, high_price, low_price, close_price, volume,
    COUNT(CASE WHEN date >= @start_ds THEN 1 END) OVER (PARTITION BY ticker) AS batch_rows,
    COUNT(CASE WHEN date < @start_ds THEN 1 END) OVER (PARTITION BY ticker) AS rows_before,
    COUNT(CASE WHEN date < @start_ds THEN 1 END) OVER (
      PARTITION BY ticker ORDER BY date DESC ROWS UNBOUNDED PRECEDING
    ) AS back
  FROM raw.eod_prices_raw
  WHERE date BETWEEN @start_ds::DATE - INTERVAL 120 DAY AND @end_ds
    AND @raw_months(@start_ds::DATE - INTERVAL 120 DAY, @end_ds)
), history AS (
  /* A ticker of the batch with @lookback_rows rows before it in that range: those rows,
     the last of which carries the ticker's state. Others (a halt, a new listing): their
     whole history, so their recursions start from their first row. */
  SELECT
    ticker, date, open_price, high_price, low_price, close_price, volume,
    rows_before >= @lookback_rows AND back = 1 AS carries_state
  FROM near
  WHERE batch_rows > 0 AND (back <= @lookback_rows OR rows_before < @lookback_rows)
  UNION ALL
  SELECT ticker, date, open_price, high_price, low_price, close_price, volume, FALSE AS carries_state
  FROM raw.eod_prices_raw
  WHERE date < @start_ds::DATE - INTERVAL 120 DAY
    AND ticker IN (SELECT ticker FROM near WHERE batch_rows > 0 AND rows_before < @lookback_rows)
    /* no month at all when no ticker needs one (the usual daily run) */
    AND @raw_months(
      (
        SELECT CASE WHEN COUNT(*) > 0 THEN DATE '0001-01-01' END
        FROM near
        WHERE batch_rows > 0 AND rows_before < @lookback_rows
      ),
      @start_ds::DATE - INTERVAL 120 DAY
    )
), carried AS (
  /* The mart's own rows in that range: the state a batch continues from. */
  SELECT
    stock_metrics.ticker,
    stock_metrics.trade_date,
    stock_metrics.ema_12,
    stock_metrics.ema_26,
    stock_metrics.macd + stock_metrics.ema_26 AS macd_fast_ema,
    stock_metrics.macd_signal,
    stock_metrics.wilder_avg_gain_14,
    stock_metrics.wilder_avg_loss_14,
    stock_metrics.atr_14_wilder
  FROM marts.stock_metrics /* no alias: the column lineage names the table */
  WHERE stock_metrics.trade_date >= @start_ds::DATE - INTERVAL 120 DAY
    AND stock_metrics.trade_date < @start_ds
    /* implied: Spark, whose mart is partitioned by month, prunes by this column only */
    AND stock_metrics.trade_month >= DATE_TRUNC('month', @start_ds::DATE - INTERVAL 120 DAY)::DATE
), prices AS (
  SELECT
    h.ticker, h.date, h.open_price, h.high_price, h.low_price, h.close_price, h.volume,
    c.ticker AS carried_ticker,
    c.ema_12 AS state_ema_12,
    c.ema_26 AS state_ema_26,
    c.macd_fast_ema AS state_macd_fast_ema,
    c.macd_signal AS state_macd_signal,
    c.wilder_avg_gain_14 AS state_gain,
    c.wilder_avg_loss_14 AS state_loss,
    c.atr_14_wilder AS state_atr
  FROM history AS h
  LEFT JOIN carried AS c
    /* keys only, so every engine hashes it: DuckDB ran `h.carries_state AND ...` as a
       nested loop (98 s for a daily run at 5,000 tickers) */
    ON c.ticker = h.ticker AND c.trade_date = CASE WHEN h.carries_state THEN h.date END
), changes AS (
  SELECT
    *,
    LAG(close_price) OVER (PARTITION BY ticker ORDER BY date) AS prev_close,
    /* The row's position in the ticker's history as read. A ticker with a carried state
       is read from its @lookback_rows-th row before the batch, so every batch row is past
       position @lookback_rows; otherwise the history is read from its first row. Either
       way "position >= n" says that the last-n window is full (close and volume are never
       NULL in raw), with one window instead of a COUNT per window. */
    @trailing(ROW_NUMBER(), 0) AS position,
    /* the row the recursions continue from when the ticker has a carried state (its
       state_* columns are set on that row only) */
    MAX(CASE WHEN carried_ticker IS NOT NULL THEN @lookback_rows END) OVER (PARTITION BY ticker) AS carried_from
  FROM prices
), steps AS (
  SELECT
    *,
    GREATEST(close_price - prev_close, 0) AS gain,
    GREATEST(prev_close - close_price, 0) AS loss,
    /* true range: max(high - low, |high - prev_close|, |low - prev_close|); NULL on a ticker's first row */
    CASE WHEN prev_close IS NOT NULL THEN GREATEST(
      high_price - low_price,
      ABS(high_price - prev_close),
      ABS(low_price - prev_close)
    ) END AS true_range
  FROM changes
), powered AS (
  /* Each row's block and a^p for each decay (macros/recursions.py): EMA 12 and MACD's fast
     EMA (11/13), EMA 26 (25/27), Wilder 14 (13/14), the MACD signal (0.8). */
  SELECT
    *,
    @block_of(position) AS block,
    POW(11 / 13::DOUBLE, @place_of(position)) AS power_fast,
    POW(25 / 27::DOUBLE, @place_of(position)) AS power_slow,
    POW(13 / 14::DOUBLE, @place_of(position)) AS power_wilder,
    POW(0.8::DOUBLE, @place_of(position)) AS power_signal
  FROM steps
), inputs AS (
  /* Each recursion's inputs, scaled into their block. TA-Lib's seed, the mean of the first
     n values, enters as those n values / n, each decayed back by the powers of a the
     recursion will apply up to the seed row. EMA n: a = 1 - 2/(n+1), step input
     2/(n+1) * close; Wilder 14: a = 13/14, step input x / 14. MACD's fast EMA is TA-Lib's:
     seeded at row 26 with the mean of closes 15..26, not EMA(12)'s seed. The MACD signal
     is not a recursion over the line here but, by linearity, the two EMAs plus one more
     recursion over the closes (macros/recursions.py: macd_signal_input). */
  SELECT
    *,
    @recursion_input(state_ema_12, close_price, 1, 12, 11 / 13::DOUBLE, 2 * close_price / 13, power_fast) AS w_ema_12,
    @recursion_input(state_ema_26, close_price, 1, 26, 25 / 27::DOUBLE, 2 * close_price / 27, power_slow) AS w_ema_26,
    @recursion_input(state_macd_fast_ema, close_price, 15, 26, 11 / 13::DOUBLE, 2 * close_price / 13, power_fast) AS w_fast,
    @recursion_input(state_gain, gain, 2, 15, 13 / 14::DOUBLE, gain / 14, power_wilder) AS w_gain,
    @recursion_input(state_loss, loss, 2, 15, 13 / 14::DOUBLE, loss / 14, power_wilder) AS w_loss,
    @recursion_input(state_atr, true_range, 2, 15, 13 / 14::DOUBLE, true_range / 14, power_wilder) AS w_atr,
    @macd_signal_input(close_price, state_macd_signal, state_macd_fast_ema, state_ema_26, power_signal) AS w_signal
  FROM powered
), totaled AS (
  /* each block's total, for the next block's rows (via its lead-in) */
  SELECT
    *,
    @block_total(w_ema_12) AS total_ema_12,
    @block_total(w_ema_26) AS total_ema_26,
    @block_total(w_fast) AS total_fast,
    @block_total(w_gain) AS total_gain,
    @block_total(w_loss) AS total_loss,
    @block_total(w_atr) AS total_atr,
    @block_total(w_signal) AS total_signal
  FROM inputs
), framed AS (
  /* Each block's rows, led in by a copy of the previous block's last @lookback_rows - 1
     rows, whose inputs count for nothing: the trailing windows and the running sums share
     one pass. The copies carry their block's total. */
  SELECT
    ticker, date, open_price, high_price, low_price, close_price, volume, prev_close, position, gain, loss, true_range,
    carried_from, power_fast, power_slow, power_wilder, power_signal, copy.lead_in,
    block + CASE WHEN copy.lead_in THEN 1 ELSE 0 END AS block,
    CASE WHEN NOT copy.lead_in THEN w_ema_12 ELSE 0 END AS w_ema_12,
    CASE WHEN NOT copy.lead_in THEN w_ema_26 ELSE 0 END AS w_ema_26,
    CASE WHEN NOT copy.lead_in THEN w_fast ELSE 0 END AS w_fast,
    CASE WHEN NOT copy.lead_in THEN w_gain ELSE 0 END AS w_gain,
    CASE WHEN NOT copy.lead_in THEN w_loss ELSE 0 END AS w_loss,
    CASE WHEN NOT copy.lead_in THEN w_atr ELSE 0 END AS w_atr,
    CASE WHEN NOT copy.lead_in THEN w_signal ELSE 0 END AS w_signal,
    CASE WHEN copy.lead_in THEN total_ema_12 END AS total_ema_12,
    CASE WHEN copy.lead_in THEN total_ema_26 END AS total_ema_26,
    CASE WHEN copy.lead_in THEN total_fast END AS total_fast,
    CASE WHEN copy.lead_in THEN total_gain END AS total_gain,
    CASE WHEN copy.lead_in THEN total_loss END AS total_loss,
    CASE WHEN copy.lead_in THEN total_atr END AS total_atr,
    CASE WHEN copy.lead_in THEN total_signal END AS total_signal
  FROM totaled
  CROSS JOIN (VALUES (FALSE), (TRUE)) AS copy(lead_in)
  WHERE NOT copy.lead_in OR @place_of(position) >= @lead_in_place(@lookback_rows)
), windows AS (
  SELECT
    ticker, date, open_price, high_price, low_price, close_price, volume, prev_close, position, carried_from, lead_in,
    power_fast, power_slow, power_wilder, power_signal,
    @block_cumsum(w_ema_12) AS c_ema_12,
    @block_cumsum(w_ema_26) AS c_ema_26,
    @block_cumsum(w_fast) AS c_fast,
    @block_cumsum(w_gain) AS c_gain,
    @block_cumsum(w_loss) AS c_loss,
    @block_cumsum(w_atr) AS c_atr,
    @block_cumsum(w_signal) AS c_signal,
    @previous_block_total(total_ema_12) AS t_ema_12,
    @previous_block_total(total_ema_26) AS t_ema_26,
    @previous_block_total(total_fast) AS t_fast,
    @previous_block_total(total_gain) AS t_gain,
    @previous_block_total(total_loss) AS t_loss,
    @previous_block_total(total_atr) AS t_atr,
    @previous_block_total(total_signal) AS t_signal,
    @trailing(AVG(close_price), 9, block) AS avg9,
    @trailing(AVG(close_price), 12, block) AS avg12,
    @trailing(AVG(close_price), 20, block) AS avg20,
    @trailing(STDDEV_POP(close_price), 20, block) AS sd20,
    @trailing(AVG(close_price), 26, block) AS avg26,
    @trailing(AVG(close_price), 50, block) AS avg50,
    @trailing(AVG(gain), 14, block) AS avg_gain14,
    @trailing(AVG(loss), 14, block) AS avg_loss14,
    @trailing(AVG(true_range), 14, block) AS atr14,
    @trailing(AVG(volume), 20, block) AS avg_volume20
  FROM framed
), indicators AS (
  SELECT
    *,
    @unblocked(c_ema_12, t_ema_12, 11 / 13::DOUBLE, power_fast) AS y_ema_12,
    @unblocked(c_ema_26, t_ema_26, 25 / 27::DOUBLE, power_slow) AS y_ema_26,
    @unblocked(c_fast, t_fast, 11 / 13::DOUBLE, power_fast) AS y_fast,
    @unblocked(c_gain, t_gain, 13 / 14::DOUBLE, power_wilder) AS y_gain,
    @unblocked(c_loss, t_loss, 13 / 14::DOUBLE, power_wilder) AS y_loss,
    @unblocked(c_atr, t_atr, 13 / 14::DOUBLE, power_wilder) AS y_atr,
    @unblocked(c_signal, t_signal, 0.8::DOUBLE, power_signal) AS y_signal_rest
  FROM windows
  WHERE NOT lead_in
), finals AS (
  SELECT *, @macd_signal(y_fast, y_ema_26, y_signal_rest) AS y_signal
  FROM indicators
)
SELECT
  ticker::TEXT AS ticker,
  date::DATE AS trade_date,
  open_price::DOUBLE AS open_price,
  high_price::DOUBLE AS high_price,
  low_price::DOUBLE AS low_price,
  close_price::DOUBLE AS close_price,
  volume::BIGINT AS volume,
  /* SMA n: mean of the last n closes */
  CASE WHEN position >= 9 THEN avg9 END::DOUBLE AS sma_9_day,
  CASE WHEN position >= 20 THEN avg20 END::DOUBLE AS sma_20_day,
  CASE WHEN position >= 50 THEN avg50 END::DOUBLE AS sma_50_day,
  /* Bollinger: SMA20 +/- 2 population sigma (TA-Lib BBANDS(20, 2, 2), matype 0) */
  CASE WHEN position >= 20 THEN avg20 + 2 * sd20 END::DOUBLE AS bollinger_upper,
  CASE WHEN position >= 20 THEN avg20 - 2 * sd20 END::DOUBLE AS bollinger_lower,
  /* Cutler RSI: 100 - 100 / (1 + G/L) over the last 14 close-to-close changes (which
     takes 15 rows); L = 0 gives 100, or 50 when G = 0 too */
  CASE
    WHEN position < 15 THEN NULL
    WHEN avg_loss14 = 0 AND avg_gain14 = 0 THEN 50
    WHEN avg_loss14 = 0 THEN 100
    ELSE 100 - 100 / (1 + avg_gain14 / avg_loss14)
  END::DOUBLE AS rsi_14_day,
  /* MACD (the seed's SMA form): mean of 12 closes - mean of 26 closes */
  CASE WHEN position >= 26 THEN avg12 - avg26 END::DOUBLE AS macd_line,
  /* ATR: mean of the last 14 true ranges (a true range needs the previous close) */
  CASE WHEN position >= 15 THEN atr14 END::DOUBLE AS atr_14_day,
  /* Return: (close - prev_close) / prev_close, NULL on the ticker's first row */
  ((close_price - prev_close) / prev_close * 100)::DOUBLE AS daily_return_pct,
  ((high_price - low_price) / close_price * 100)::DOUBLE AS price_range_pct,
  /* Volume: current over the mean of the last 20 (NULL when 20 sessions traded nothing:
     0 / 0 is NaN on DuckDB and an error on PostgreSQL), and that mean rounded half away from zero */
  CASE WHEN position >= 20 AND avg_volume20 > 0 THEN volume / avg_volume20 END::DOUBLE AS volume_ratio,
  CASE WHEN position >= 20 THEN ROUND(avg_volume20) END::BIGINT AS volume_sma_20,
  /* TA-Lib EMA(12) and EMA(26), MACD(12, 26, 9), RSI(14) and ATR(14), Wilder smoothing;
     NULL until TA-Lib's first output (every batch row past a carried state has one) */
  CASE WHEN position >= COALESCE(carried_from, 12) THEN y_ema_12 END::DOUBLE AS ema_12,
  CASE WHEN position >= COALESCE(carried_from, 26) THEN y_ema_26 END::DOUBLE AS ema_26,
  CASE WHEN position >= COALESCE(carried_from, 34) THEN y_fast - y_ema_26 END::DOUBLE AS macd,
  CASE WHEN position >= COALESCE(carried_from, 34) THEN y_signal END::DOUBLE AS macd_signal,
  CASE WHEN position >= COALESCE(carried_from, 34) THEN (y_fast - y_ema_26) - y_signal END::DOUBLE AS macd_histogram,
  /* RSI = 100 * g / (g + l), written as TA-Lib computes it; 0 when there was no change at all */
  CASE
    WHEN position < COALESCE(carried_from, 15) THEN NULL
    WHEN y_gain + y_loss = 0 THEN 0
    ELSE 100 * (y_gain / (y_gain + y_loss))
  END::DOUBLE AS rsi_14_wilder,
  CASE WHEN position >= COALESCE(carried_from, 15) THEN y_atr END::DOUBLE AS atr_14_wilder,
  CASE WHEN position >= COALESCE(carried_from, 15) THEN y_gain END::DOUBLE AS wilder_avg_gain_14,
  CASE WHEN position >= COALESCE(carried_from, 15) THEN y_loss END::DOUBLE AS wilder_avg_loss_14,
  /* Spark's partition (a folder per month): last, where Spark keeps a partition column */
  DATE_TRUNC('month', date)::DATE AS trade_month
FROM finals
WHERE date BETWEEN @start_ds AND @end_ds
