"""The DuckDB warehouse: its schema, the embedded and lake stores (store.py) and their migrations."""

from pathlib import Path

SCHEMA_SQL = Path(__file__).with_name("schema.sql")  # the whole current schema (migrations.py)
