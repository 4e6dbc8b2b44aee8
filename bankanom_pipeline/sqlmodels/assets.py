"""Every model and seed under ``dbt_like_sql/`` becomes a Dagster asset named after its file, with its
refs and sources as upstream dependencies. A new ``.sql`` file is a new asset; no Python changes."""

import dagster as dg

from bankanom_pipeline.partitions import daily_partitions
from bankanom_pipeline.sqlmodels.runner import Model, Project
from bankanom_pipeline.warehouse.resource import WarehouseResource


def _asset_for(project: Project, model: Model) -> dg.AssetsDefinition:
    deps = [dg.AssetKey(name) for name in dict.fromkeys(model.refs)]
    deps += [dg.AssetKey(table) for _, table in dict.fromkeys(model.sources)]

    @dg.asset(
        name=model.name,
        deps=deps,
        partitions_def=daily_partitions if model.partitioned else None,
        pool="duckdb",
        group_name=model.group,
        kinds={"duckdb", "sql"},
        description=model.description or None,
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
