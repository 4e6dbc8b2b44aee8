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
    seed: Annotated[
        int,
        typer.Option(
            help="Random seed; same arguments give identical files. AccountIDs carry it: another seed, "
            "other customers."
        ),
    ] = 7,
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


# the demo's commands, in their own module (they use the helpers above); registered here for --help's order
from bankanom_pipeline.cli.demo import demo as _demo  # noqa: E402
from bankanom_pipeline.cli.demo import demo_feedback as _demo_feedback  # noqa: E402

app.command("demo")(_demo)
app.command("demo-feedback")(_demo_feedback)


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
    from bankanom_pipeline.http_protocol import CoalescingHttpToolsProtocol

    uvicorn.run(
        "bankanom_api.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # per-request lines would cost more than a prediction; /metrics counts them
        http=CoalescingHttpToolsProtocol,  # an answer's head and body in one write
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
