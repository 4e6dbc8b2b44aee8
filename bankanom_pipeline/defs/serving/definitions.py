import dagster as dg

from bankanom_pipeline.defs.serving.assets import api_snapshot, transaction_snapshot

defs = dg.Definitions(assets=[api_snapshot, transaction_snapshot])
