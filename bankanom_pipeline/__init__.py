"""bankanom: Dagster-orchestrated anomaly detection for banking logs and transactions."""
