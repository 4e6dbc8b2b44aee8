"""The one Definitions object of the code location (``workspace.yaml`` points here)."""

import dagster as dg

from bankanom_pipeline.ingest.assets import raw_logs
from bankanom_pipeline.jobs import ingest_job, ingest_schedule
from bankanom_pipeline.warehouse.resource import WarehouseResource

defs = dg.Definitions(
    assets=[raw_logs],
    jobs=[ingest_job],
    schedules=[ingest_schedule],
    resources={"warehouse": WarehouseResource()},
)
