"""``bankanom replay``: prove the online engine equal to the SQL on a stored day (docs/online.md)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from bankanom_pipeline.online.engine import OnlineEngine

console = Console()


def replay(
    date: Annotated[
        str, typer.Option("--date", help="The day to replay, YYYY-MM-DD (features_events must hold it).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    lateness: Annotated[
        float, typer.Option(help="The engine's allowed lateness in seconds (events are replayed in order).")
    ] = OnlineEngine.DEFAULT_LATENESS_S,
) -> None:
    """Run a stored day's validated events (warmed with the previous day's last 24 hours) through the online
    feature engine and compare every feature with features_events, and the engine's vectors scored by the
    model versions that scored the day with scored_events. Exit 1 when anything disagrees."""
    import datetime as dt

    import orjson

    from bankanom_pipeline import settings
    from bankanom_pipeline.detection.registry import RegistryError
    from bankanom_pipeline.detection.scoring import IF, LOF
    from bankanom_pipeline.detection.sources import LOGS
    from bankanom_pipeline.online import replay as work
    from bankanom_pipeline.warehouse import store

    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise typer.BadParameter(f"not an ISO date: {date!r}", param_hint="--date") from None
    # read everything, then let go of the warehouse before computing (a run may want to write)
    try:
        with store.from_settings().reading() as con:
            stored = work.read_day(con, date)
    except LookupError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    detectors, config, note = None, LOGS.config, None
    if stored.scores.height:
        versions = {
            IF: stored.scores["if_version"].unique().to_list(),
            LOF: stored.scores["lof_version"].unique().to_list(),
        }
        if any(len(v) != 1 for v in versions.values()):
            note = f"scores not compared: the day was scored by several model versions {versions}"
        else:
            registry = LOGS.registry(settings.models_dir())
            try:
                detectors = {name: registry.load(v[0]) for name, v in versions.items()}
            except RegistryError as error:
                note = f"scores not compared: {error}"
    else:
        note = "scores not compared: scored_events has no rows for the day"
    report = work.run(stored, date, detectors, config, OnlineEngine(allowed_lateness_s=lateness))
    if detectors is not None:
        report.model_versions = {name: d.version for name, d in detectors.items()}
    if as_json:
        out = report.to_dict() | {"note": note}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print(report, note)
    if not report.agrees:
        raise typer.Exit(1)


def _print(report, note: str | None) -> None:
    console.print(
        f"replayed {report.warmup_events:,} warm-up and {report.day_events:,} events of {report.day} "
        f"at {report.events_per_second:,.0f} events/s, {report.events_per_cpu_second:,.0f} per CPU-second "
        f"(engine {report.engine_seconds:.1f} s, scoring {report.scoring_seconds:.1f} s)"
    )
    console.print(
        f"features: {report.compared:,} events compared, {report.feature_share:.4%} equal "
        f"({report.only_stored:,} only in features_events, {report.only_engine:,} only in the engine)"
    )
    if report.scored:
        console.print(f"scores: {report.scored:,} events compared, {report.score_share:.4%} equal")
    if note:
        console.print(note)
    bad = {k: v for k, v in {**report.per_feature, **report.per_score}.items() if v}
    if bad:
        table = Table(title="mismatches per column")
        table.add_column("column")
        table.add_column("events", justify="right")
        for name, count in sorted(bad.items(), key=lambda kv: -kv[1]):
            table.add_row(name, f"{count:,}")
        console.print(table)
        table = Table(title="worst mismatches")
        for column in ("event_id", "column", "engine", "stored"):
            table.add_column(column)
        for m in report.worst + report.worst_scores:
            table.add_row(m.event_id, m.column, repr(m.engine), repr(m.stored))
        console.print(table)
    console.print(
        "[green]the engine agrees with the SQL[/green]" if report.agrees else "[red]disagreement[/red]"
    )
