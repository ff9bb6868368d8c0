AUDIT (
  name positive_volume,
  dialect duckdb,
  blocking false
);
/* Every session has volume > 0. Warns only: Yahoo reports a halted session as a row with
   volume 0, which is true, if unusual. Negative volume never gets this far: the raw
   contract quarantines it. NULL volume is caught by not_null. */
SELECT ticker, trade_date, volume
FROM @this_model
WHERE volume <= 0
  AND @in_audited_months()
