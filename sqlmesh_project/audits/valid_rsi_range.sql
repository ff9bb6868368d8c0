AUDIT (
  name valid_rsi_range,
  dialect duckdb
);
/* RSI lies in [0, 100]; NULL during warm-up is allowed. Returns violating rows. */
SELECT ticker, trade_date, rsi_14_day
FROM @this_model
WHERE rsi_14_day IS NOT NULL
  AND (rsi_14_day < 0 OR rsi_14_day > 100)
  AND @in_audited_months()
