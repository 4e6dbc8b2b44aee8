"""The DuckDB warehouse: schema and the one resource through which every asset reaches it."""
