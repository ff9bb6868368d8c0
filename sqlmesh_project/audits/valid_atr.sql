AUDIT (
  name valid_atr,
  dialect duckdb
);
/* A mean of true ranges is never negative; NULL during warm-up is allowed. */
SELECT ticker, trade_date, atr_14_day
FROM @this_model
WHERE atr_14_day IS NOT NULL
  AND atr_14_day < 0
  AND @in_audited_months()
