"""financial_etl: a daily stock-market ETL as Dagster software-defined assets."""
