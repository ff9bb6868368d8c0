AUDIT (
  name positive_volume,
  dialect duckdb
);
/* Every traded session has volume > 0; NULL volume is caught by not_null. */
SELECT ticker, trade_date, volume
FROM @this_model
WHERE volume <= 0
