AUDIT (
  name open_close_within_high_low,
  dialect duckdb,
  blocking false
);
/* Open and close lie within [low, high]. Warns only: Yahoo's adjusted prices put the open
   a cent above the high on real sessions, and such a row is still the best data there is. */
SELECT
  ticker,
  trade_date,
  open_price,
  high_price,
  low_price,
  close_price,
  CASE
    WHEN high_price < open_price THEN 'high < open'
    WHEN high_price < close_price THEN 'high < close'
    WHEN low_price > open_price THEN 'low > open'
    WHEN low_price > close_price THEN 'low > close'
  END AS violation_reason
FROM @this_model
WHERE @in_audited_months()
  AND (
    high_price < open_price
    OR high_price < close_price
    OR low_price > open_price
    OR low_price > close_price
  )
