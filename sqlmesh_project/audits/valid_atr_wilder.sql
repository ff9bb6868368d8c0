AUDIT (
  name valid_atr_wilder,
  dialect duckdb
);
/* A Wilder average of true ranges is never negative; NULL during warm-up is allowed. */
SELECT ticker, trade_date, atr_14_wilder
FROM @this_model
WHERE atr_14_wilder IS NOT NULL
  AND atr_14_wilder < 0
  AND @in_audited_months()
