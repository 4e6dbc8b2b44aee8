"""The one Definitions object of the code location (``workspace.yaml`` points here): every domain's
definitions under ``defs/``, with the resources (the warehouse, the model registry, the API's snapshots)
and the executor."""

import dagster as dg

from bankanom_pipeline.defs.automation.definitions import defs as automation
from bankanom_pipeline.defs.detection.definitions import defs as detection
from bankanom_pipeline.defs.executor import executor
from bankanom_pipeline.defs.features.definitions import defs as features
from bankanom_pipeline.defs.ingest.definitions import defs as ingest
from bankanom_pipeline.defs.resources import RegistryResource, SnapshotPublisherResource, WarehouseResource
from bankanom_pipeline.defs.serving.definitions import defs as serving
from bankanom_pipeline.defs.transactions.definitions import defs as transactions
from bankanom_pipeline.defs.validation.definitions import defs as validation


def _warehouse() -> WarehouseResource:
    warehouse = WarehouseResource()
    warehouse.check()  # a bad storage setting stops the code location from loading, naming the variable
    return warehouse


defs = dg.Definitions.merge(
    ingest,
    validation,
    features,
    detection,
    transactions,
    serving,
    automation,
    dg.Definitions(
        resources={
            "warehouse": _warehouse(),
            "registry": RegistryResource(),
            "snapshots": SnapshotPublisherResource(),
        },
        executor=executor(),
    ),
)
