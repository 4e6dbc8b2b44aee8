"""Learning from incident feedback, measured (issue 26, logs): does the incident re-ranker, trained on
200 labels a simulated analyst gives over the real feedback API, raise incident precision on the next
day without lowering any scenario's recall below 0.95?

Three generated days with the same customers and consecutive traffic seeds (``--seed`` s: s, s + 1,
s + 2), each in its own ``BANKANOM_HOME`` under ``--root``:

1. ``prepare``: day 1's features, both detectors trained on it and promoted; day 2's pipeline (scores,
   incidents, evaluation, the API snapshot).
2. ``label``: ``bankanom api`` (uvicorn, a real HTTP server, ``reranking.feedback_loop.AnalystApi``: the
   same loop ``bankanom demo`` runs) on that snapshot; the simulated analyst
   (``reranking.simulated_analyst``) asks ``GET /feedback/queue`` for incidents and posts the truth of
   each (``reranking.incident_truth``: the generator's labels, the evaluation's rule) through
   ``POST /feedback`` until ``--budget`` are labelled. The labels reach the re-ranker only that way.
3. ``learn``: the ``incident_reranker`` asset: fitted on the labels, gated on a held-out share,
   promoted on a pass.
4. ``evaluate``: day 3's pipeline; incident precision and the lowest scenario recall before the
   re-ranker's cut (the unsupervised figure) and after it (``feedback_loop.incident_figures``), beside
   the evaluation's stored metrics and per-scenario recall.

The figures are printed and written as JSON (``--out``). Each stage can be run alone (``--stages``) and
runs again in full when asked, except that ``prepare`` does not regenerate a day whose landing folder
exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

STAGES = ("prepare", "label", "learn", "evaluate")
# the API snapshot without the online engine's checkpoint: the feedback queue reads the snapshot's
# incidents only, and on a default day the checkpoint costs minutes that measure nothing here
DAY_CONFIG = {"ops": {"api_snapshot": {"config": {"online_checkpoint": False}}}}


def _env(home: Path) -> None:
    os.environ["BANKANOM_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(home / "dagster_home")
    os.environ.setdefault("BANKANOM_DUCKDB_MEMORY_LIMIT", "1GB")


def _days(first: str) -> list[str]:
    start = dt.date.fromisoformat(first)
    return [(start + dt.timedelta(days=i)).isoformat() for i in range(3)]


def _run(job: str, day: str | None, run_config: dict | None = None) -> dict:
    from bankanom_pipeline.cli import _run_job

    began = time.perf_counter()
    result = _run_job(job, day, run_config)
    if result is None:
        raise SystemExit(f"{job} {day or ''} failed")
    print(f"{job} {day or ''}: {time.perf_counter() - began:.0f}s", flush=True)
    return result


def prepare(args, home: Path) -> None:
    from bankanom_pipeline import settings
    from bankanom_pipeline.cli import _load
    from bankanom_pipeline.cli.demo import _write_day
    from bankanom_pipeline.defs.detection.jobs import train_run_config

    train_day, label_day, eval_day = _days(args.first_day)
    cfg = _load(None)
    generation = cfg.log_generation.model_copy(update={"logs_per_second": args.rate})
    customers = cfg.population.model_copy(update={"seed": args.seed})
    cfg = cfg.model_copy(update={"log_generation": generation, "population": customers})
    landing = settings.landing_dir()
    for offset, day in enumerate((train_day, label_day, eval_day)):
        if not (landing / "logs" / day).exists():
            _write_day(cfg.model_copy(update={"seed": args.seed + offset}), day, landing)
    _run("features_job", train_day)
    _run("train_job", None, train_run_config(train_day))
    _run("pipeline_job", label_day, DAY_CONFIG)


def label(args, home: Path) -> dict:
    """The simulated analyst over a real API server: what it labelled, per reason of the queue."""
    from bankanom_pipeline.reranking.feedback_loop import AnalystApi
    from bankanom_pipeline.reranking.incident_truth import from_warehouse
    from bankanom_pipeline.reranking.simulated_analyst import label as simulate

    with AnalystApi(home / "api.log") as api:
        began = time.perf_counter()
        # only day 2's incidents: the snapshot may hold other days', and labels on the evaluated day
        # would measure the re-ranker on incidents it learnt from
        label_day = _days(args.first_day)[1]
        done = simulate(
            api.url, api.key, "incident", args.budget, from_warehouse(), batch=20, partition_date=label_day
        )
        took = time.perf_counter() - began
    print(f"labelled {len(done.target_ids)} incidents in {took:.0f}s: {done.by_reason()}", flush=True)
    return {
        "labelled": len(done.target_ids),
        "true_positives": sum(done.labels),
        "by_reason": done.by_reason(),
        "true_by_reason": done.positives_by_reason(),
        "batches": done.batches,
    }


def learn(args, home: Path) -> dict:
    from bankanom_pipeline.reranking.feedback_loop import verdict

    trained = _run("incident_reranker_job", None)["incident_reranker"]
    print(f"incident re-ranker: {verdict(trained)['outcome']}", flush=True)
    return trained


def evaluate(args, home: Path) -> dict:
    """Day 3's pipeline, then its incident figures before and after the cut (``feedback_loop``'s; no
    analyst labelled day 3) and the evaluation's stored metrics and per-scenario recall."""
    from bankanom_pipeline.reranking.feedback_loop import incident_figures, labelled_ids
    from bankanom_pipeline.warehouse import store
    from bankanom_pipeline.warehouse.frames import table_exists

    eval_day = _days(args.first_day)[2]
    _run("pipeline_job", eval_day, DAY_CONFIG)
    with store.from_settings().reading() as con:
        figures = incident_figures(con, eval_day, labelled_ids("incident"))
        metrics = con.execute(
            "SELECT model, metric, value FROM evaluation_metrics WHERE partition_date = ? "
            "AND model LIKE 'incidents%'",
            [eval_day],
        ).fetchall()
        recall = {}
        for table in ("evaluation_scenarios", "evaluation_scenarios_reranked"):
            if table_exists(con, table):
                recall[table] = con.execute(
                    f"SELECT scenario_id, instances, detected, recall FROM {table} WHERE partition_date = ? "
                    "ORDER BY scenario_id",
                    [eval_day],
                ).fetchall()
    before, after = figures["all"]["before"], figures["all"]["after"]
    print(f"{eval_day}: before the cut {before}; after {after}", flush=True)
    return {
        "day": eval_day,
        "figures": figures,
        "metrics": {f"{m}.{k}": v for m, k, v in metrics},
        **recall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, required=True, help="traffic seed of day 1 and customers' seed")
    parser.add_argument("--first-day", required=True, help="day 1 (training), YYYY-MM-DD")
    parser.add_argument("--rate", type=float, default=2.0, help="mean events per second generated")
    parser.add_argument("--budget", type=int, default=200, help="incidents the simulated analyst labels")
    parser.add_argument("--root", type=Path, default=Path("/tmp/incident_feedback_bench"))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    home = args.root / f"seed{args.seed}-rate{args.rate:g}"
    home.mkdir(parents=True, exist_ok=True)
    _env(home)
    out = args.out or home / "result.json"
    figures = json.loads(out.read_text()) if out.exists() else {}
    figures.update(seed=args.seed, days=_days(args.first_day), rate=args.rate, budget=args.budget)
    for stage in args.stages.split(","):
        began = time.perf_counter()
        produced = globals()[stage](args, home)
        figures[stage] = {"seconds": round(time.perf_counter() - began, 1), "result": produced}
        out.write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps({k: figures[k] for k in figures if k != "prepare"}, indent=2, default=str))


if __name__ == "__main__":
    main()
