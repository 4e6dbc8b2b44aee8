"""Every model and seed under ``dbt_like_sql/`` becomes a Dagster asset named after its file, with its
refs and sources as upstream dependencies (and, with ``follows_upstream``, the automation condition of
the assets that follow their upstream partitions). A new ``.sql`` file is a new asset; no Python
changes."""

import warnings

import dagster as dg

from bankanom_pipeline.defs.conditions import FOLLOW_UPSTREAM
from bankanom_pipeline.defs.partitions import daily_partitions
from bankanom_pipeline.defs.resources import WarehouseResource
from bankanom_pipeline.sqlmodels.runner import Model, Project


def _lookback(days: int) -> dg.TimeWindowPartitionMapping:
    """Day D reads its upstream's days D-``days`` .. D, so Dagster must know: a backfill then runs day D
    only after the earlier days it reads, and a re-run of day D-1 makes day D stale. The first
    partition has no earlier day; it depends on what exists."""
    with warnings.catch_warnings():  # the flag is "beta": a warning on every load of the code location
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(
            start_offset=-days, end_offset=0, allow_nonexistent_upstream_partitions=True
        )


def _deps(project: Project, model: Model) -> list[dg.AssetDep]:
    """The model's refs and sources; with ``lookback_days``, each daily one is mapped onto the earlier
    days the SQL reads (``{{ lookback_start }}``). Sources are the pipeline's daily tables."""
    names = list(dict.fromkeys(model.refs)) + [table for _, table in dict.fromkeys(model.sources)]
    deps = []
    for name in names:
        upstream = project.models.get(name)
        daily = upstream.partitioned if upstream is not None else True
        mapping = (
            _lookback(model.lookback_days) if model.partitioned and model.lookback_days and daily else None
        )
        deps.append(dg.AssetDep(dg.AssetKey(name), partition_mapping=mapping))
    return deps


def _asset_for(project: Project, model: Model) -> dg.AssetsDefinition:
    deps = _deps(project, model)

    @dg.asset(
        name=model.name,
        deps=deps,
        partitions_def=daily_partitions if model.partitioned else None,
        pool="duckdb",
        group_name=model.group,
        kinds={"duckdb", "sql"},
        description=model.description or None,
        automation_condition=FOLLOW_UPSTREAM if model.follows_upstream else None,
        metadata={"path": dg.MetadataValue.path(str(model.path.relative_to(project.root.parent)))},
    )
    def _build(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        day = context.partition_key if model.partitioned else None
        with warehouse.connection() as con:
            rows = project.materialize(con, model.name, day)
        metadata = {"dagster/row_count": rows}
        if not model.is_seed:
            metadata["sql"] = dg.MetadataValue.md(f"```sql\n{project.render(model.name, day)}\n```")
        return dg.MaterializeResult(metadata=metadata)

    return _build


def build_sql_assets(project: Project | None = None) -> list[dg.AssetsDefinition]:
    project = project or Project()
    return [_asset_for(project, project.models[name]) for name in project.order]
