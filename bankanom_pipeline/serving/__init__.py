"""Publishing what the API serves: read-only warehouse snapshots (no Dagster in snapshot.py)."""
