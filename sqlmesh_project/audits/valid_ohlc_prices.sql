AUDIT (
  name valid_ohlc_prices,
  dialect duckdb
);
/* The session's high is not below its low. The raw contract quarantines such rows, so a
   failure here means the mart was fed around it. Open or close outside [low, high] is
   a separate, warning audit: adjusted vendor prices break it by a rounding step. */
SELECT ticker, trade_date, open_price, high_price, low_price, close_price
FROM @this_model
WHERE high_price < low_price
  AND @in_audited_months()
