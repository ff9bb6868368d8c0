AUDIT (
  name macd_histogram_identity,
  dialect duckdb
);
/* The MACD histogram is the line minus the signal, to 1e-9 relative to the line (1e-9
   absolute below 1), and the three are NULL together (TA-Lib's warm-up: 33 rows). */
SELECT ticker, trade_date, macd, macd_signal, macd_histogram
FROM @this_model
WHERE @in_audited_months()
  AND (
    (macd IS NULL) <> (macd_signal IS NULL)
    OR (macd IS NULL) <> (macd_histogram IS NULL)
    OR ABS(macd_histogram - (macd - macd_signal)) > 1e-9 * GREATEST(1, ABS(macd))
  )
