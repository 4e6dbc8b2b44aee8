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


def appended_last(instance, day: str) -> bool:
    """Whether ``day``'s latest raw_logs load was an append (landing_append_job): the day still needs its
    whole-day run once it closes."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_logs"), asset_partitions=[day]), limit=1
    ).records
    mode = records[0].asset_materialization.metadata.get("mode") if records else None
    return mode is not None and mode.value == "append"
