"""The ``bankanom`` command line."""

from __future__ import annotations

import datetime as dt
import os
import sys
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
# the person `bankanom up` and the demo's instructions map their API key to (BANKANOM_ANALYSTS)
DEMO_ANALYST = "demo analyst"
# the demo's feedback loop: labels the simulated analyst gives per source (the 200), and the size of
# each of the two transaction deliveries: ~350 frauds each, enough for 200 labels to hold both classes
# and for the re-ranker to be promoted, and ~40 s each on the shared 2-core machine (docs/reranking.md);
# their seeds are the log config's seed plus this, so that no log day shares one
DEMO_LABELS = 200
DEMO_TRANSACTION_ROWS = 50_000
TRANSACTION_SEED_OFFSET = 100

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


@app.command("generate-transactions")
def generate_transactions(
    out: Annotated[Path, typer.Option(help="Transactions CSV to write (Kaggle bank-transactions layout).")],
    rows: Annotated[int, typer.Option(help="Exact number of transactions.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Random seed; same arguments give identical files.")] = 7,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2026-01-01",
    days: Annotated[int, typer.Option(help="Number of days the transactions span.")] = 30,
    accounts: Annotated[int | None, typer.Option(help="Number of accounts (default: rows / 40).")] = None,
    fraud_share: Annotated[float, typer.Option(help="Share of rows that are injected fraud.")] = 0.007,
    first_id: Annotated[
        int, typer.Option(help="First TransactionID number: give files for one warehouse disjoint ranges.")
    ] = 1,
    labels: Annotated[
        Path | None, typer.Option(help="Labels CSV (default: <stem>.labels.csv next to --out).")
    ] = None,
) -> None:
    """Write synthetic bank transactions with labelled fraud patterns, and their labels in a separate CSV."""
    from bankanom_pipeline.transactions.generator import write

    try:
        first = dt.date.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter(f"not an ISO date: {start!r}", param_hint="--start") from None
    labels = labels or out.with_name(f"{out.stem}.labels.csv")
    began = time.perf_counter()
    try:
        written, fraud = write(
            out,
            labels,
            rows=rows,
            seed=seed,
            start=first,
            days=days,
            accounts=accounts,
            fraud_share=fraud_share,
            first_id=first_id,
        )
    except ValueError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"wrote {written:,} transactions ({fraud:,} fraud) to {out} and labels to {labels} "
        f"in {time.perf_counter() - began:.1f}s"
    )


def _not_a_partition(day: str) -> str | None:
    """Why ``day`` is not a partition of ``daily_partitions`` (None: it is one)."""
    from bankanom_pipeline.defs.partitions import daily_partitions

    try:
        parsed = dt.date.fromisoformat(day)
    except ValueError:
        parsed = None
    if parsed is None or parsed.isoformat() != day:  # "20260105" parses too, but names no folder
        return f"not an ISO date (YYYY-MM-DD): {day!r}"
    first = daily_partitions.start.date()
    last = dt.date.fromisoformat(daily_partitions.get_last_partition_key())
    if parsed < first:
        return f"{day} is before the first partition, {first}"
    if parsed > last:
        return f"{day} is after the last partition, {last} (today, UTC)"
    return None


@app.command("ingest-transactions")
def ingest_transactions(
    path: Annotated[Path, typer.Argument(help="A CSV in the bank-transactions layout.")],
    date: Annotated[
        str, typer.Option(help="Delivery day (partition) to file it under (default: today, UTC).")
    ] = "",
    train: Annotated[
        bool | None,
        typer.Option(
            "--train/--no-train",
            help="Train and promote transaction models on this day first (default: only when none is promoted).",
        ),
    ] = None,
) -> None:
    """Deliver a transactions CSV to the landing zone and run it through the pipeline: raw ->
    validated (+ quarantine) -> features -> scores -> incidents -> evaluation -> API snapshot."""
    if not path.is_file():
        console.print(f"[red]no such file: {path}[/red]")
        raise typer.Exit(2)
    day = date or dt.datetime.now(dt.UTC).date().isoformat()
    problem = _not_a_partition(day)
    if problem:  # checked before anything is copied: a refused day leaves the landing zone as it was
        console.print(f"[red]--date: {problem}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    raise typer.Exit(0 if _deliver_transactions(path, day, train) else 1)


def _deliver_transactions(path: Path, day: str, train: bool | None) -> bool:
    """``ingest-transactions`` once its arguments are checked: copy the CSV (and its labels file, when
    there is one beside it) to the day's landing folder, build its features, train transaction models
    first when asked (``train`` None: only when none is promoted), then run ``transactions_job``.
    False when a run failed."""
    import shutil

    from bankanom_pipeline.defs.detection.jobs import train_run_config
    from bankanom_pipeline.detection.sources import TRANSACTIONS
    from bankanom_pipeline.transactions.raw import LABELS_SUFFIX

    folder = settings.landing_dir() / "transactions" / day
    folder.mkdir(parents=True, exist_ok=True)
    labels = path.with_name(path.name.removesuffix(".csv") + LABELS_SUFFIX)
    for source in [path] + ([labels] if labels.is_file() else []):
        hidden = folder / f".{source.name}.part"  # hidden until complete: the landing sensor skips it
        shutil.copyfile(source, hidden)
        os.replace(hidden, folder / source.name)
    console.print(f"delivered {path.name} to {folder}")
    if _run_job("transaction_features_job", day) is None:
        return False
    from bankanom_pipeline.definitions import defs  # loaded by the run above, once the day was accepted

    # the registry the training job below writes to, so that the two agree on where the models are
    promoted = defs.resources["registry"].registry(TRANSACTIONS).current()
    must_train = train or (train is None and not promoted)
    if must_train and _run_job("transaction_train_job", None, train_run_config(day, TRANSACTIONS)) is None:
        return False
    return _run_job("transactions_job", day) is not None


@app.command()
def ingest(
    date: Annotated[str, typer.Option(help="Partition (UTC day) to load (default: yesterday).")] = "",
) -> None:
    """Materialize the raw_logs partition of a day (a real Dagster run, recorded in DAGSTER_HOME)."""
    raise typer.Exit(0 if _run_job("ingest_job", date or _yesterday()) is not None else 1)


@app.command()
def run(
    date: Annotated[str, typer.Option(help="Partition (UTC day) to process (default: yesterday).")] = "",
    job: Annotated[
        str, typer.Option(help="pipeline_job (everything daily) or features_job (up to the feature tables).")
    ] = "pipeline_job",
) -> None:
    """Run a daily job for a day: landing files -> features -> scores -> incidents -> evaluation."""
    if job not in {"pipeline_job", "features_job", "ingest_job"}:
        console.print(f"[red]unknown daily job {job!r}[/red]")
        raise typer.Exit(2)
    raise typer.Exit(0 if _run_job(job, date or _yesterday()) is not None else 1)


@app.command()
def train(
    end_date: Annotated[
        str, typer.Option(help="Last day of the training window (default: latest day with features).")
    ] = "",
) -> None:
    """Train both detectors, check them, and promote the pair if every blocking check passes."""
    from bankanom_pipeline.defs.detection.jobs import train_run_config

    run_config = train_run_config(end_date) if end_date else None
    raise typer.Exit(0 if _run_job("train_job", None, run_config) is not None else 1)


def _run_job(
    job_name: str, day: str | None, run_config: dict | None = None, assets: list[str] | None = None
) -> dict | None:
    """Execute a job (for one partition when ``day``; only its ``assets`` when given) in a recorded
    Dagster run; returns metadata per asset, or None when the run failed or a blocking check stopped it."""
    import uuid

    import dagster as dg

    from bankanom_pipeline.cli.run_guard import RunGuard
    from bankanom_pipeline.definitions import defs
    from bankanom_pipeline.defs.automation import recovery, run_record_sensor

    _dagster_home()
    job = defs.resolve_job_def(job_name)
    began = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        for cleanup in recovery.clean_dead_runs(instance, by="the next bankanom run"):
            _warn(str(cleanup))
        run_id = str(uuid.uuid4())
        with RunGuard(instance, run_id, say=_warn):
            result = job.execute_in_process(
                instance=instance,
                partition_key=day,
                run_config=run_config,
                raise_on_error=False,
                run_id=run_id,
                tags=recovery.process_tags(),
                asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
            )
        run_record_sensor.record_run(instance, run_id)  # the console lists it with no daemon running
    failed_checks = [
        f"{e.asset_check_evaluation_data.asset_key.to_user_string()}:{e.asset_check_evaluation_data.check_name}"
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]
    metadata = {
        event.asset_key.to_user_string(): {
            k: v.value for k, v in event.step_materialization_data.materialization.metadata.items()
        }
        for event in result.get_asset_materialization_events()
    }
    title = f"{job_name} {day or ''} (run {result.run_id[:8]}, {time.perf_counter() - began:.1f}s)"
    table = Table(title=title)
    table.add_column("asset")
    table.add_column("rows", justify="right")
    table.add_column("notes")
    for asset, values in metadata.items():
        table.add_row(
            asset,
            f"{values.get('dagster/row_count', values.get('training_rows', 0)):,}",
            _notes(asset, values),
        )
    console.print(table)
    if failed_checks:
        console.print(f"[yellow]failed checks: {', '.join(failed_checks)}[/yellow]")
    if not result.success:
        console.print(
            f"[red]run {result.run_id} of {job_name} failed; see the Dagster UI or its event log[/red]"
        )
        return None
    return metadata


def _dagster_home() -> Path:
    """The instance folder of the CLI's runs (DAGSTER_HOME, default dagster_home/), created if missing.

    An instance folder without a ``dagster.yaml`` (a wheel install, a new ``DAGSTER_HOME``) gets the
    packaged one: without its ``duckdb`` pool of one, two runs would write the warehouse at once."""
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home()))
    home = Path(os.environ["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(settings.instance_config())
        console.print(f"wrote {config}: the instance settings bankanom relies on (one DuckDB writer)")
    return home


@app.command()
def runs() -> None:
    """Show the unfinished runs of the Dagster instance (DAGSTER_HOME): whether the process executing each
    is alive, and what it holds or waits for in the concurrency pools. Runs whose process died are
    cleaned up on their own by the next bankanom run and by the daemon's dead_run_sensor."""
    import dagster as dg

    from bankanom_pipeline.defs.automation import recovery

    home = _dagster_home()
    with dg.DagsterInstance.get() as instance:
        waits = recovery.waits(instance)
        unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=recovery.LIVE_STATUSES))
        for run in unfinished:
            worker = recovery.worker_of(instance, run)
            process = "its process cannot be checked from this host"
            if worker is not None:
                process = f"pid {worker.pid} on {worker.host}: {'alive' if worker.alive() else 'DEAD'}"
            partition = run.tags.get("dagster/partition", "")
            lines = [f"run {run.run_id} {run.job_name} {partition} {run.status.value}, {process}"]
            lines += [f"  holds {held}" for held in recovery.holdings(instance, run.run_id)]
            lines += [
                f"  waits for pool {w.pool} (step {w.step}), held by {', '.join(w.holders) or 'nobody'}"
                for w in waits
                if w.run_id == run.run_id
            ]
            console.print("\n".join(lines), soft_wrap=True, highlight=False)
    console.print(f"{len(unfinished)} unfinished runs in {home}")


def _warn(line: str) -> None:
    console.print(f"[yellow]{line}[/yellow]", soft_wrap=True)  # one line, whatever the terminal's width


def _notes(asset: str, v: dict) -> str:
    if asset == "raw_logs":
        return f"read {v['lines_read']:,}, rejected {v['rejected']:,}, dup ids {v['duplicate_event_ids']:,}"
    if asset == "validated_logs":
        return f"quarantined {v['quarantined']:,}, duplicates {v['duplicates']:,}"
    if asset == "log_labels":
        return f"anomalous {v['anomalous_events']:,} in {v['anomaly_instances']:,} instances"
    if asset.endswith("_model"):
        return f"{v['version']} on {v['training_window']}"
    if asset == "promoted_models":
        return ", ".join(v["current"].values())
    if asset == "scored_events":
        return f"anomalous {v['anomalous_events']:,} ({v['anomalous_share']:.2%})"
    if asset == "raw_transactions":
        return f"read {v['lines_read']:,}, rejected {v['rejected']:,}, dup ids {v['duplicate_transaction_ids']:,}"
    if asset == "validated_transactions":
        return f"quarantined {v['quarantined']:,}, duplicates {v['duplicates']:,}"
    if asset == "transaction_labels":
        return f"fraud {v['fraud']:,} in {v['fraud_instances']:,} instances"
    if asset == "promoted_transaction_models":
        return ", ".join(v["current"].values())
    if asset == "scored_transactions":
        return f"anomalous {v['anomalous_transactions']:,} ({v['anomalous_share']:.2%})"
    return ""


@app.command()
def demo(
    date: Annotated[str, typer.Option(help="Held-out UTC day to detect on (default: yesterday).")] = "",
    rate: Annotated[
        float | None, typer.Option(help="Mean events per second to generate (default: the config's).")
    ] = None,
    config: ConfigOption = None,
    feedback: Annotated[
        bool,
        typer.Option(
            "--feedback/--no-feedback",
            help="End with the feedback loop on both sources: a simulated analyst labels what the review "
            "queue asks about, the re-rankers learn, and the figures before and after are printed.",
        ),
    ] = True,
    labels: Annotated[
        int, typer.Option(min=1, help="Items the simulated analyst labels, per source (--feedback).")
    ] = DEMO_LABELS,
    transaction_rows: Annotated[
        int, typer.Option(min=1000, help="Rows of each of the two transaction deliveries (--feedback).")
    ] = DEMO_TRANSACTION_ROWS,
) -> None:
    """The main job: generate a training day and a held-out day (different traffic seeds, the same
    customers), build features for the first, train and promote both detectors, run the daily pipeline
    on the second (scores, incidents, evaluation against ground truth) and summarise. Then (unless
    --no-feedback) the feedback loop of `bankanom demo-feedback` on that day."""
    day = date or _yesterday()
    train_day = (dt.date.fromisoformat(day) - dt.timedelta(days=1)).isoformat()
    cfg = _load(config)
    if rate is not None:
        generation = cfg.log_generation.model_copy(update={"logs_per_second": rate})
        cfg = cfg.model_copy(update={"log_generation": generation})
    landing = settings.landing_dir()
    # the same bank's customers on both days, different traffic: the held-out day's lookback reaches
    # into the training day, where each user id must still be the same person
    customers = cfg.population.model_copy(update={"seed": cfg.customer_seed})
    for start, seed in ((train_day, cfg.seed), (day, cfg.seed + 1)):
        _write_day(cfg.model_copy(update={"seed": seed, "population": customers}), start, landing)
    from bankanom_pipeline.defs.detection.jobs import train_run_config

    steps = [("features_job", train_day), ("train_job", None), ("pipeline_job", day)]
    for job, partition in steps:
        run_config = train_run_config(train_day) if job == "train_job" else None
        if _run_job(job, partition, run_config) is None:
            raise typer.Exit(1)
    _summary(day)
    if feedback:
        _feedback_loop(day, labels, transaction_rows, cfg.seed + TRANSACTION_SEED_OFFSET)


@app.command("demo-feedback")
def demo_feedback(
    date: Annotated[str, typer.Option(help="The log day the demo scored (default: yesterday).")] = "",
    labels: Annotated[int, typer.Option(min=1, help="Items the simulated analyst labels, per source.")] = (
        DEMO_LABELS
    ),
    transaction_rows: Annotated[
        int, typer.Option(min=1000, help="Rows of each of the two transaction deliveries.")
    ] = DEMO_TRANSACTION_ROWS,
    config: ConfigOption = None,
) -> None:
    """The demo's feedback loop alone, on a log day already scored (`bankanom demo --no-feedback`): a
    simulated analyst, reading the generator's ground truth (for the demo only), labels the incidents of
    the day and the transactions of a new delivery that the review queue asks about, through the real
    feedback API; the re-rankers learn and are gated; the figures before and after are printed."""
    day = date or _yesterday()
    problem = _not_a_partition(day)
    if problem:
        console.print(f"[red]--date: {problem}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    _feedback_loop(day, labels, transaction_rows, _load(config).seed + TRANSACTION_SEED_OFFSET)


def _write_day(cfg, day: str, landing: Path) -> None:
    from bankanom_pipeline.generator.engine import Generator
    from bankanom_pipeline.generator.writer import write_range

    start_s = _epoch(day)
    began = time.perf_counter()
    summary = write_range(Generator(cfg), landing / "logs", start_s, end_s=start_s + 86_400)
    console.print(
        f"generated {day} (seed {cfg.seed}, customers of seed {cfg.customer_seed}): "
        f"{summary.events:,} events, {summary.anomalous:,} anomalous, "
        f"in {time.perf_counter() - began:.1f}s"
    )


def _summary(day: str) -> None:
    """Incidents by severity and the evaluation table of a day, from the warehouse."""
    from bankanom_pipeline.warehouse import store

    with store.from_settings().reading() as con:
        severity = con.execute(
            """SELECT severity, count(*) FILTER (WHERE reported), count(*) FROM incidents
               WHERE partition_date = ? GROUP BY 1
               ORDER BY list_position(['Critical', 'High', 'Medium', 'Low'], severity)""",
            [day],
        ).fetchall()
        metrics = con.execute(
            """PIVOT (SELECT model, metric, value FROM evaluation_metrics WHERE partition_date = ?
                      AND metric IN ('precision', 'recall', 'f1', 'pr_auc', 'roc_auc', 'fp_per_10k_normal'))
               ON metric IN ('f1', 'fp_per_10k_normal', 'pr_auc', 'precision', 'recall', 'roc_auc')
               USING first(value) GROUP BY model ORDER BY model""",
            [day],
        ).fetchall()
        incident_level = dict(
            con.execute(
                "SELECT metric, value FROM evaluation_metrics WHERE partition_date = ? AND model = 'incidents'",
                [day],
            ).fetchall()
        )
        scenarios = con.execute(
            "SELECT scenario_id, instances, detected, recall, rca_top1 FROM evaluation_scenarios WHERE partition_date = ? ORDER BY 1",
            [day],
        ).fetchall()
    table = Table(title=f"incidents on {day} by severity")
    for column in ("severity", "reported", "all"):
        table.add_column(column, justify="left" if column == "severity" else "right")
    for name, reported, total in severity:
        table.add_row(name, f"{reported:,}", f"{total:,}")
    console.print(table)
    table = Table(title=f"evaluation on {day} (held out; labels used only here)")
    table.add_column("model", no_wrap=True)
    for column in ("F1", "FP/10k normal", "PR-AUC", "precision", "recall", "ROC-AUC"):
        table.add_column(column, justify="right")
    short = {
        "isolation_forest": "IF",
        "local_outlier_factor": "LOF",
        "baseline_isolation_forest": "baseline IF",
    }
    for model, *values in metrics:
        table.add_row(short.get(model, model), *(f"{v:.3f}" if v is not None else "" for v in values))
    console.print(table)
    table = Table(title="instances per scenario (detected = inside a reported incident)")
    for column in ("scenario", "instances", "detected", "recall", "RCA top-1"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for scenario, instances, detected, recall, rca in scenarios:
        table.add_row(
            scenario,
            f"{instances:,}",
            f"{detected:,}",
            f"{recall:.2f}",
            f"{rca:.2f}" if rca is not None else "-",
        )
    console.print(table)
    console.print(
        "incident precision {incident_precision:.3f}, instance recall {instance_recall:.3f}, "
        "RCA scenario top-1 {rca_scenario_top1:.3f}, origin top-1 {rca_origin_top1:.3f}".format(
            **incident_level
        )
    )
    if settings.storage_mode() == "lake":
        console.print(f"lake: {settings.lake_root()}  (Parquet per table and partition: <table>/date=<day>/)")
    else:
        console.print(
            f"warehouse: {settings.warehouse_path()}  (try: duckdb -readonly {settings.warehouse_path()})"
        )
    from bankanom_api.security import key_id

    console.print(
        f"API snapshot: {settings.snapshots_dir()}  (serve it: BANKANOM_API_KEYS=change-me "
        f'BANKANOM_ANALYSTS="{DEMO_ANALYST}={key_id("change-me")}" bankanom api; everything live: bankanom up)'
    )


# the log day's assets that follow an incident re-ranker's promotion, the snapshot without its online
# checkpoint (the day's one is kept: the events did not change, and it costs minutes on a default day)
_RERANKED_DAY = ["incident_reranks", "evaluation", "api_snapshot"]
_NO_CHECKPOINT = {"ops": {"api_snapshot": {"config": {"online_checkpoint": False}}}}


def _feedback_loop(day: str, budget: int, rows: int, seed: int) -> None:
    """The demo's feedback loop on the log ``day`` (already scored) and on two new transaction deliveries
    of ``rows`` each (seeds ``seed``, ``seed + 1``, delivered 30 days before ``day`` and on ``day``): the
    simulated analyst labels ``budget`` items of each source the review queue asks about through a real
    API, each re-ranker job runs, a promoted re-ranker re-scores its day, and the figures before and
    after are printed (reranking/feedback_loop.py computes them)."""
    import tempfile

    from bankanom_pipeline.reranking import feedback_loop as loop
    from bankanom_pipeline.reranking.incident_truth import from_warehouse
    from bankanom_pipeline.reranking.simulated_analyst import label, transaction_truth
    from bankanom_pipeline.transactions.generator import write
    from bankanom_pipeline.warehouse import store

    began = time.perf_counter()
    seconds: dict[str, float] = {}
    console.rule("learning from analysts' feedback")
    console.print(loop.NOTICE, soft_wrap=True)
    held_out = dt.date.fromisoformat(day)
    deliveries = [held_out - dt.timedelta(days=30), held_out]  # train on the first, label the second
    with tempfile.TemporaryDirectory(prefix="bankanom-demo-") as folder:
        for k, delivered in enumerate(deliveries):
            csv = Path(folder) / f"demo-transactions-{delivered}.csv"
            written, fraud = write(
                csv,
                csv.with_name(f"{csv.stem}.labels.csv"),
                rows=rows,
                seed=seed + k,
                start=delivered - dt.timedelta(days=30),
                days=30,
                first_id=1 + k * rows,
            )
            console.print(
                f"generated {written:,} transactions ({fraud:,} fraud, seed {seed + k}) for {delivered}"
            )
            if not _deliver_transactions(csv, delivered.isoformat(), train=k == 0):
                raise typer.Exit(1)
    tx_day = deliveries[1].isoformat()
    tx_truth = settings.landing_dir() / "transactions" / tx_day / f"demo-transactions-{tx_day}.labels.csv"
    seconds["transactions"] = time.perf_counter() - began

    mark = time.perf_counter()
    with loop.AnalystApi(settings.data_dir() / "demo-feedback-api.log") as api:
        asked = {
            "incident": label(api.url, api.key, "incident", budget, from_warehouse(), partition_date=day),
            "transaction": label(
                api.url, api.key, "transaction", budget, transaction_truth([tx_truth]), partition_date=tx_day
            ),
        }
    seconds["labelling"] = time.perf_counter() - mark

    mark = time.perf_counter()
    verdicts = {}
    for kind, job, rescore in (
        (
            "incident",
            "incident_reranker_job",
            lambda: _run_job("pipeline_job", day, _NO_CHECKPOINT, _RERANKED_DAY),
        ),
        ("transaction", "transaction_reranker_job", lambda: _run_job("transactions_job", tx_day)),
    ):
        ran = _run_job(job, None)
        if ran is None:
            raise typer.Exit(1)
        verdicts[kind] = loop.verdict(ran[f"{kind}_reranker"])
        if verdicts[kind]["promoted"] and rescore() is None:
            raise typer.Exit(1)
    seconds["learning"] = time.perf_counter() - mark

    with store.from_settings().reading() as con:
        figures = {
            "incident": loop.incident_figures(con, day, loop.labelled_ids("incident")),
            "transaction": loop.transaction_figures(con, tx_day, loop.labelled_ids("transaction")),
        }
    seconds["total"] = time.perf_counter() - began
    _print_feedback(asked, verdicts, figures, seconds)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _print_feedback(asked: dict, verdicts: dict, figures: dict, seconds: dict) -> None:
    """The feedback loop's outcome per source: what the simulated analyst labelled, the gate's verdict, and
    each figure before -> after, over every item of the day and over those no analyst labelled."""
    say = lambda line: console.print(line, soft_wrap=True, highlight=False)  # noqa: E731
    sources = {
        "incident": ("log incidents", "incident_precision", "min_scenario_recall"),
        "transaction": ("transactions", "pr_auc", "incident_precision"),
    }
    for kind, (title, *_) in sources.items():
        done, v, f = asked[kind], verdicts[kind], figures[kind]
        positives = sum(done.labels)
        reasons = ", ".join(f"{r} {n}" for r, n in done.by_reason().items())
        say(f"[bold]{title} of {f['day']}[/bold]")
        say(
            f"  labelled by the simulated analyst: {len(done.labels)} ({positives} true positives, "
            f"{len(done.labels) - positives} false positives; {reasons or 'the queue was empty'})"
        )
        say(
            f"  re-ranker trained on {v['labels']} labels in the feedback store "
            f"({v['true_positives']} true, {v['false_positives']} false positives)"
        )
        say(f"  gate: {v['outcome']}")  # the gate's reason names its held-out labels and the gain
        if not v["promoted"]:
            say("  no after figures: the re-ranker was not promoted, the day keeps its unsupervised ranking")
        if kind == "incident":
            rows = [
                ("incident precision", "incident_precision", 3),
                ("reported incidents", "reported", 0),
                ("lowest scenario recall", "min_scenario_recall", 3),
            ]
            scopes = [
                ("all", f"every incident ({f['incidents']:,})"),
                ("unlabelled", f"the {f['incidents'] - f['labelled']:,} incidents no analyst labelled"),
            ]
        else:
            rows = [
                ("PR-AUC", "pr_auc", 3),
                ("precision", "precision", 3),
                ("recall", "recall", 3),
                ("incident precision", "incident_precision", 3),
                ("incidents", "incidents", 0),
            ]
            scopes = [
                ("all", f"every transaction ({f['transactions']:,})"),
                ("unlabelled", f"the {f['transactions'] - f['labelled']:,} transactions no analyst labelled"),
            ]
        for scope, described in scopes:
            before, after = f[scope]["before"], f[scope]["after"] if v["promoted"] else None
            for name, key, digits in rows:
                line = f"  {name}, {described}: {_fmt(before[key], digits)}"
                say(line + (f" -> {_fmt(after[key], digits)}" if after is not None else ""))
        if kind == "incident":
            say(
                "  (recall counts every instance of the day; over the unlabelled incidents the cut is "
                "applied to them only, the labelled ones keeping the unsupervised decision)"
            )
        else:
            say("  (the unlabelled figures' incidents are those holding none of the labelled transactions)")
    say(
        f"feedback loop: {seconds['total']:.0f}s (two transaction deliveries {seconds['transactions']:.0f}s, "
        f"labelling {seconds['labelling']:.0f}s, re-rankers and re-scoring {seconds['learning']:.0f}s)"
    )


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
    stream_buffer: Annotated[
        int,
        typer.Option(
            min=1, help="Lines GET /stream keeps in memory for consumers that fall behind (~670 bytes each)."
        ),
    ] = 200_000,
    redis_url: Annotated[
        str | None,
        typer.Option(help="Also XADD every line to a Redis Stream at this URL (redis://host:port/db)."),
    ] = None,
    redis_stream: Annotated[str, typer.Option(help="The Redis Stream's key.")] = "bankanom:logs",
    redis_maxlen: Annotated[
        int, typer.Option(min=1, help="Retention: keep about this many entries (XADD MAXLEN ~), ~710 B each.")
    ] = 500_000,
) -> None:
    """Serve the predecessor-compatible mock log server, writing rotating JSONL files to the landing zone,
    numbering every line for live consumers (GET /stream) and, with --redis-url, adding it to a Redis
    Stream (docs/live-sources.md)."""
    import uvicorn

    from bankanom_pipeline.mock_server.app import create_app
    from bankanom_pipeline.mock_server.stream import RedisPublisher

    cfg = _load(config)
    publisher = RedisPublisher(redis_url, redis_stream, redis_maxlen) if redis_url else None
    application = create_app(
        cfg,
        landing_logs=(landing or settings.landing_dir()) / "logs",
        auto_start=auto_start,
        rotate_seconds=rotate_seconds,
        stream_buffer=stream_buffer,
        publisher=publisher,
    )
    uvicorn.run(application, host=host, port=port, log_level="info")


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes (each loads the models).")] = 1,
) -> None:
    """Serve the prediction API (needs BANKANOM_API_KEYS; reads data/models and data/snapshots)."""
    import uvicorn

    from bankanom_api.settings import ApiSettings

    try:
        configured = ApiSettings.from_env()
    except ValueError as error:  # e.g. a malformed BANKANOM_ANALYSTS
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None
    if not configured.api_keys:
        raise typer.BadParameter("set BANKANOM_API_KEYS (comma-separated) to the keys clients will send")
    uvicorn.run(
        "bankanom_api.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # per-request lines would cost more than a prediction; /metrics counts them
    )


@app.command("key-id")
def key_id_command() -> None:
    """Print the non-secret id of the API key read from stdin (one line): what BANKANOM_ANALYSTS maps to a
    person (name=key_id), so the setting never repeats a secret. Example:
    `read -s KEY; echo "$KEY" | bankanom key-id`."""
    from bankanom_api.security import key_id

    key = sys.stdin.readline().strip()
    if not key:
        console.print('[red]no key on stdin: pipe the key in (echo "$KEY" | bankanom key-id)[/red]')
        raise typer.Exit(2)
    print(key_id(key))


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First partition (UTC day), YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last partition, inclusive.")],
    job: Annotated[str, typer.Option(help="pipeline_job, features_job or ingest_job.")] = "pipeline_job",
) -> None:
    """Run a daily job for every partition from START to END, one recorded Dagster run each (the UI shows
    them under Runs and the partitions as materialized)."""
    if job not in {"pipeline_job", "features_job", "ingest_job"}:
        raise typer.BadParameter(f"unknown daily job {job!r}")
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    if last < first:
        raise typer.BadParameter("--end is before --start")
    days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    failed = [day for day in days if _run_job(job, day) is None]
    console.print(f"backfill of {job}: {len(days) - len(failed)} of {len(days)} partitions succeeded")
    if failed:
        console.print(f"[red]failed: {', '.join(failed)}[/red]")
    raise typer.Exit(1 if failed else 0)


@app.command()
def up(
    ui_port: Annotated[int, typer.Option(help="Dagster UI port.")] = 3000,
    mock_port: Annotated[int, typer.Option(help="Mock log server port.")] = 8000,
    api_port: Annotated[int, typer.Option(help="Prediction API port.")] = 8080,
    stream_port: Annotated[
        int, typer.Option(help="The live stream's internal service port (loopback).")
    ] = 8090,
    rotate_seconds: Annotated[int, typer.Option(help="Mock server: publish a landing file this often.")] = 60,
) -> None:
    """Start the Dagster UI and daemon (sensors, schedules, automation), the mock log server (emitting),
    the live stream (scoring the mock server's events as they are emitted) and the API together; Ctrl-C
    stops them all."""
    import secrets

    from bankanom_api.security import key_id
    from bankanom_pipeline.supervisor import Supervisor

    env = dict(os.environ, DAGSTER_HOME=str(_dagster_home()))
    if not env.get("BANKANOM_API_KEYS"):
        env["BANKANOM_API_KEYS"] = secrets.token_urlsafe(18)
        console.print(
            f"API key for this session (set BANKANOM_API_KEYS to choose): {env['BANKANOM_API_KEYS']}"
        )
        # the session's key belongs to a person, so the console's feedback form works as it is
        env.setdefault("BANKANOM_ANALYSTS", f"{DEMO_ANALYST}={key_id(env['BANKANOM_API_KEYS'])}")
    elif not env.get("BANKANOM_ANALYSTS"):
        console.print(
            "giving feedback needs BANKANOM_ANALYSTS (name=key_id pairs; `bankanom key-id` prints a key's id)"
        )
    # the API reaches the stream's internal service with this key; nothing else on the machine can
    env["BANKANOM_STREAM_URL"] = f"http://127.0.0.1:{stream_port}"
    env.setdefault("BANKANOM_STREAM_KEY", secrets.token_urlsafe(18))
    cli = [sys.executable, "-m", "bankanom_pipeline.cli"]
    dagster = str(Path(sys.executable).with_name("dagster"))
    # the code location workspace.yaml names, loaded by module: an installed wheel has no workspace file
    location = ["-m", "bankanom_pipeline.definitions", "-a", "defs"]
    supervisor = Supervisor(
        {
            "dagster": [dagster, "dev", *location, "-p", str(ui_port)],
            "mock-server": [
                *cli,
                "mock-server",
                "--auto-start",
                "--port",
                str(mock_port),
                "--rotate-seconds",
                str(rotate_seconds),
            ],
            # retries the mock server until it answers
            "stream": [
                *cli,
                "stream",
                "--source",
                f"mock:http://127.0.0.1:{mock_port}",
                "--port",
                str(stream_port),
            ],
            "api": [*cli, "api", "--port", str(api_port)],
        },
        env=env,
        cwd=settings.home(),
    )
    console.print(
        f"Dagster UI http://127.0.0.1:{ui_port}  mock server http://127.0.0.1:{mock_port}  "
        f"API http://127.0.0.1:{api_port}/docs  live stream on :{stream_port}  (Ctrl-C stops everything)"
    )
    raise typer.Exit(supervisor.run())


@app.command("check-deployment")
def check_deployment() -> None:
    """Check the deployment settings (storage, lake root, executor, Celery broker, Dagster's Postgres);
    exit 2 naming the first setting that cannot work."""
    from bankanom_pipeline.cli.deployment import check_deployment as check

    try:
        report = check()
    except settings.SettingError as error:
        console.print(f"[red]bad configuration[/red]: {error}")
        raise typer.Exit(2) from None
    for key, value in report.items():
        console.print(f"{key}: {value}")
    console.print("[green]ok[/green]")


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


@app.command()
def sql(
    command: Annotated[str | None, typer.Option("--command", "-c", help="Run this SQL, print, exit.")] = None,
    root: Annotated[
        Path | None,
        typer.Option(
            help="Folder to read (default: $BANKANOM_PUBLISHED_DIR, data/published; lake mode: the lake)."
        ),
    ] = None,
    max_rows: Annotated[int, typer.Option(help="Rows printed per result.")] = 40,
) -> None:
    """Query every table with SQL, read-only, at any time, even while runs write: the Parquet copy each run
    publishes (the lake itself in lake mode). SQL from -c, from standard input, or typed at the prompt."""
    import duckdb

    from bankanom_pipeline.warehouse import published, shell

    con = published.connect(root)
    if command is None and sys.stdin.isatty():
        shell.interactive(con, max_rows)
        return
    try:
        shell.run(con, command if command is not None else sys.stdin.read(), max_rows)
    except duckdb.Error as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(1) from None


# registered here, defined in its own module (the command and its report are long)
from bankanom_pipeline.cli.replay import replay as _replay  # noqa: E402

app.command("replay")(_replay)
from bankanom_pipeline.cli.stream import stream as _stream  # noqa: E402

app.command("stream")(_stream)
