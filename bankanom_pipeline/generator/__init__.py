"""Mock banking traffic: configuration, the vectorised generator and the JSONL writer (no Dagster here)."""
