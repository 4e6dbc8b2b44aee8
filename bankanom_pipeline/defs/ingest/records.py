"""What the warehouse's raw loads recorded in the Dagster instance: the landing files each read."""

import dagster as dg


def recorded_files(instance, day: str) -> dict[str, str]:
    """The files (relative path -> signature) the latest load of ``day``'s raw_logs recorded, whoever ran
    it (the sensor's runs, ``bankanom demo``, ``run``, ``backfill``: every run records in the instance)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_logs"), asset_partitions=[day]), limit=1
    ).records
    if not records:
        return {}
    value = records[0].asset_materialization.metadata.get("landing_files")
    return dict(value.value) if value is not None and isinstance(value.value, dict) else {}
