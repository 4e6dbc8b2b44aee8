import dagster as dg

from bankanom_pipeline.defs.validation.assets import log_labels, validated_logs

defs = dg.Definitions(assets=[validated_logs, log_labels])
