AUDIT (
  name finite_values,
  dialect duckdb
);
/* Every number in @columns is finite: no Infinity or NaN, which DuckDB computes from an
   overflow or 0 / 0 without an error. NULL (warm-up) is allowed. Compared with IN, not
   isfinite(), because PostgreSQL has no isfinite for doubles; NaN equals NaN on DuckDB,
   PostgreSQL and Spark alike. */
SELECT ticker, trade_date, @EACH(@columns, c -> c)
FROM @this_model
WHERE @in_audited_months()
  AND @REDUCE(
    @EACH(
      @columns,
      c -> c IN (CAST('Infinity' AS DOUBLE), CAST('-Infinity' AS DOUBLE), CAST('NaN' AS DOUBLE))
    ),
    (l, r) -> l OR r
  )
