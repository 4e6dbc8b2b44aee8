"""Running beyond one machine on Dagster's own machinery: the Celery executor and deployment checks."""
