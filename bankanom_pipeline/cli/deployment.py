"""``bankanom check-deployment``: every deployment setting checked up front, each failure naming its
setting, instead of a stack trace deep inside a run (containers run it before they start a process)."""

from __future__ import annotations

from bankanom_pipeline import settings
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.distributed.checks import check_executor, check_postgres


def check_deployment() -> dict[str, str]:
    """What this process would run with; raises SettingError on the first setting that cannot work."""
    warehouse = WarehouseResource()
    warehouse.check()
    report = {
        "storage": warehouse.storage,
        "warehouse": warehouse.lake_root if warehouse.storage == "lake" else warehouse.database,
        "executor": check_executor(),
    }
    if report["executor"] == "celery":
        report["broker"] = settings.celery_broker()
    postgres = check_postgres()
    report["dagster instance"] = f"postgres at {postgres}" if postgres else "DAGSTER_HOME's own storage"
    return report
