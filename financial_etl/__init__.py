"""financial_etl: a daily stock-market ETL as Dagster assets (dlt, SQLMesh, dlt).

Importing it changes nothing: dlt's settings apply where pipelines are created and run
(warehouse/dlt_settings.py), SQLMesh's where the transform stage is imported.
"""
