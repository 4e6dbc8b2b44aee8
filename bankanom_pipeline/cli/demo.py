"""``bankanom demo`` and ``bankanom demo-feedback``: the main job on generated days, its summary, and the
feedback loop on both sources."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bankanom_pipeline import settings
from bankanom_pipeline.cli import (
    DEMO_ANALYST,
    ConfigOption,
    _deliver_transactions,
    _epoch,
    _load,
    _not_a_partition,
    _run_job,
    _yesterday,
    console,
)

# the demo's feedback loop: labels the simulated analyst gives per source (the 200), and the size of
# each of the two transaction deliveries: ~350 frauds each, enough for 200 labels to hold both classes
# and for the re-ranker to be promoted, and ~40 s each on the shared 2-core machine (docs/reranking.md);
# their seeds are the log config's seed plus this, so that no log day shares one
DEMO_LABELS = 200
DEMO_TRANSACTION_ROWS = 50_000
TRANSACTION_SEED_OFFSET = 100


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
    each figure before -> after, first over the items no analyst labelled, then over every item of the day
    (the labelled ones included: a re-ranker trained on them, so those figures flatter it)."""
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
                ("unlabelled", f"the {f['incidents'] - f['labelled']:,} incidents no analyst labelled"),
                ("all", f"every incident ({f['incidents']:,}, the {f['labelled']:,} labelled included)"),
            ]
        else:
            rows = [
                ("PR-AUC", "pr_auc", 3),
                ("precision", "precision", 3),
                ("recall", "recall", 3),
                ("incident precision", "incident_precision", 3),
                ("incidents", "incidents", 0),
                ("instance recall", "instance_recall", 3),
            ]
            scopes = [
                ("unlabelled", f"the {f['transactions'] - f['labelled']:,} transactions no analyst labelled"),
                (
                    "all",
                    f"every transaction ({f['transactions']:,}, the {f['labelled']:,} labelled included)",
                ),
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
        if v["promoted"]:
            say("  (the figures over every item include the labelled ones the re-ranker was trained on)")
    say(
        f"feedback loop: {seconds['total']:.0f}s (two transaction deliveries {seconds['transactions']:.0f}s, "
        f"labelling {seconds['labelling']:.0f}s, re-rankers and re-scoring {seconds['learning']:.0f}s)"
    )
