"""The ``bankanom`` command line."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bankanom_pipeline import settings

app = typer.Typer(
    help="bankanom: mock banking traffic, the Dagster pipeline that ingests it, and its tools.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Mock traffic YAML (default: the packaged config or $BANKANOM_MOCK_CONFIG)."
    ),
]


def _yesterday() -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def _load(config: Path | None):
    from bankanom_pipeline.generator.config import ConfigError, load_config

    try:
        return load_config(config or settings.mock_config_path())
    except ConfigError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


def _epoch(day: str) -> int:
    try:
        return int(dt.datetime.fromisoformat(day).replace(tzinfo=dt.UTC).timestamp())
    except ValueError:
        console.print(f"[red]not an ISO date or time: {day!r}[/red]")
        raise typer.Exit(2) from None


@app.command()
def generate(
    start: Annotated[str, typer.Option(help="UTC start, ISO date or datetime (default: yesterday).")] = "",
    days: Annotated[float, typer.Option(help="Length of the time range in days.")] = 1.0,
    events: Annotated[
        int | None, typer.Option(help="Write exactly this many events instead of a range.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the config's seed.")] = None,
    landing: Annotated[Path | None, typer.Option(help="Landing root (default data/landing).")] = None,
    config: ConfigOption = None,
) -> None:
    """Write mock logs as JSONL files into the landing zone (one folder per UTC day)."""
    from bankanom_pipeline.generator.engine import Generator
    from bankanom_pipeline.generator.writer import write_range

    cfg = _load(config)
    if seed is not None:
        cfg = cfg.model_copy(update={"seed": seed})
    generator = Generator(cfg)
    start_s = _epoch(start or _yesterday())
    end_s = None if events is not None else start_s + int(days * 86_400)
    expected = events or int(generator.expected_rate(start_s, end_s) * (end_s - start_s))
    root = (landing or settings.landing_dir()) / "logs"
    began = time.perf_counter()
    with Progress(
        TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    ) as bar:
        task = bar.add_task("events", total=expected)
        summary = write_range(
            generator, root, start_s, end_s=end_s, events=events, progress=lambda n: bar.advance(task, n)
        )
    took = time.perf_counter() - began
    console.print(
        f"wrote {summary.events:,} events ({summary.anomalous:,} anomalous) in {len(summary.files)} files "
        f"for {', '.join(sorted(summary.days))} under {root} in {took:.1f}s"
    )


@app.command()
def ingest(
    date: Annotated[str, typer.Option(help="Partition (UTC day) to load (default: yesterday).")] = "",
) -> None:
    """Materialize the raw_logs partition of a day (a real Dagster run, recorded in DAGSTER_HOME)."""
    raise typer.Exit(0 if _run_job("ingest_job", date or _yesterday()) else 1)


@app.command()
def run(
    date: Annotated[str, typer.Option(help="Partition (UTC day) to process (default: yesterday).")] = "",
) -> None:
    """Run the daily pipeline for a day: raw_logs -> validated_logs -> SQL feature models."""
    raise typer.Exit(0 if _run_job("pipeline_job", date or _yesterday()) else 1)


def _run_job(job_name: str, day: str) -> dict | None:
    """Execute a job for one partition in a recorded Dagster run; returns metadata per asset."""
    import dagster as dg

    from bankanom_pipeline.definitions import defs

    os.environ.setdefault("DAGSTER_HOME", str(settings.PROJECT_ROOT / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    job = defs.resolve_job_def(job_name)
    began = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(instance=instance, partition_key=day, raise_on_error=False)
    if not result.success:
        console.print(
            f"[red]run {result.run_id} of {job_name} failed; see the Dagster UI or its event log[/red]"
        )
        return None
    metadata = {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    table = Table(title=f"{job_name} {day} (run {result.run_id[:8]}, {time.perf_counter() - began:.1f}s)")
    table.add_column("asset")
    table.add_column("rows", justify="right")
    table.add_column("notes")
    for asset, values in metadata.items():
        notes = {
            "raw_logs": lambda v: (
                f"read {v['lines_read']:,}, rejected {v['rejected']:,}, dup ids {v['duplicate_event_ids']:,}"
            ),
            "validated_logs": lambda v: f"quarantined {v['quarantined']:,}, duplicates {v['duplicates']:,}",
            "log_labels": lambda v: (
                f"anomalous {v['anomalous_events']:,} in {v['anomaly_instances']:,} instances"
            ),
        }.get(asset, lambda _v: "")(values)
        table.add_row(asset, f"{values.get('dagster/row_count', 0):,}", notes)
    console.print(table)
    return metadata


@app.command()
def demo(
    date: Annotated[str, typer.Option(help="UTC day to generate and process (default: yesterday).")] = "",
    config: ConfigOption = None,
) -> None:
    """The main job: generate a day of mock logs, run the daily pipeline on it, and summarise."""
    day = date or _yesterday()
    generate(start=day, days=1.0, events=None, seed=None, landing=None, config=config)
    if _run_job("pipeline_job", day) is None:
        raise typer.Exit(1)
    from bankanom_pipeline.warehouse.resource import connect

    con = connect(settings.warehouse_path(), read_only=True)
    try:
        rows = con.execute(
            "SELECT anomaly_id, count(*) FROM log_labels WHERE partition_date = ? GROUP BY 1 ORDER BY 1 NULLS FIRST",
            [day],
        ).fetchall()
    finally:
        con.close()
    table = Table(title=f"{day} events by ground-truth scenario (log_labels)")
    table.add_column("scenario")
    table.add_column("events", justify="right")
    for scenario, count in rows:
        table.add_row(scenario or "normal", f"{count:,}")
    console.print(table)
    console.print(f"warehouse: {settings.warehouse_path()}  (try: duckdb {settings.warehouse_path()})")


@app.command("mock-server")
def mock_server(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    auto_start: Annotated[
        bool, typer.Option("--auto-start", help="Start emitting logs immediately.")
    ] = False,
    landing: Annotated[Path | None, typer.Option(help="Landing root (default data/landing).")] = None,
    rotate_seconds: Annotated[
        int, typer.Option(help="Close and publish the current file after this long.")
    ] = 60,
    config: ConfigOption = None,
) -> None:
    """Serve the predecessor-compatible mock log server, writing rotating JSONL files to the landing zone."""
    import uvicorn

    from bankanom_pipeline.mock_server.app import create_app

    cfg = _load(config)
    application = create_app(
        cfg,
        landing_logs=(landing or settings.landing_dir()) / "logs",
        auto_start=auto_start,
        rotate_seconds=rotate_seconds,
    )
    uvicorn.run(application, host=host, port=port, log_level="info")


@app.command("validate-config")
def validate_config(config: Annotated[Path, typer.Argument(help="YAML file to check.")]) -> None:
    """Check a mock traffic YAML and list its enabled scenarios."""
    cfg = _load(config)
    for scenario in cfg.enabled_scenarios:
        console.print(f"{scenario.id}  {scenario.base_name}  weight={scenario.frequency_weight:g}")
    console.print(f"[green]ok[/green]: {len(cfg.enabled_scenarios)} enabled scenarios")


@app.command()
def scenarios(config: ConfigOption = None) -> None:
    """Print the anomaly scenario catalogue (signatures) as Markdown."""
    from bankanom_pipeline.generator.scenarios import catalogue_markdown

    typer.echo(catalogue_markdown(_load(config)))


if __name__ == "__main__":
    app()
