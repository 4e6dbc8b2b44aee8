import dagster as dg

from bankanom_pipeline.defs.ingest.assets import raw_logs
from bankanom_pipeline.defs.ingest.jobs import ingest_job, landing_append_job

defs = dg.Definitions(assets=[raw_logs], jobs=[ingest_job, landing_append_job])
