"""The bankanom prediction API: FastAPI over published snapshots and promoted models (no Dagster here)."""
