import dagster as dg

from bankanom_pipeline.defs.features.assets import build_sql_assets
from bankanom_pipeline.defs.features.jobs import features_job

# every SQL model, the transactions' too: one dbt-like project, ordered by its refs
defs = dg.Definitions(assets=build_sql_assets(), jobs=[features_job])
