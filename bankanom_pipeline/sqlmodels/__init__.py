"""SQL models as Dagster assets."""
