AUDIT (
  name valid_rsi_wilder_range,
  dialect duckdb
);
/* Wilder RSI lies in [0, 100]; NULL during warm-up (its first 14 changes) is allowed. */
SELECT ticker, trade_date, rsi_14_wilder
FROM @this_model
WHERE rsi_14_wilder IS NOT NULL
  AND (rsi_14_wilder < 0 OR rsi_14_wilder > 100)
  AND @in_audited_months()
