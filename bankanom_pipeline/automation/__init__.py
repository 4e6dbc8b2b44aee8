"""Automation: the landing sensor, downstream automation, drift-triggered retraining, schedules and
run-failure alerts. Pure logic (landing.py, drift.py, alerts.py, config.py) has no Dagster import."""
