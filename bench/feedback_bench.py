"""Transactions: what 200 analyst labels add to the unsupervised ranking (issue 26 part 2).

Three generated deliveries (200,000 transactions each, 30 days, ~5,000 accounts of a new seed each, disjoint
TransactionID ranges), one a month:

1. the first trains and promotes the unsupervised detectors (``transaction_train_job``) and is scored;
2. the second is scored and published, then served by a real API (uvicorn, a subprocess); the simulated
   analyst (``reranking/simulated_analyst.py``) labels ``--budget`` transactions of that day that
   ``GET /feedback/queue`` asks about, ``--batch`` at a time, posting each verdict (the generator's label)
   to ``POST /feedback``; then ``transaction_reranker_job`` trains, gates and (on a pass) promotes a
   re-ranker from the feedback store;
3. the third (new accounts, never labelled) is scored with the detectors and the re-ranker; its
   ``transaction_evaluation`` gives the figures before (the unsupervised ensemble, its own flag and the
   incidents it alone would make) and after (the re-ranked order and decision).

The re-ranker is trained once, after the whole budget: between batches it would change the queue only
through a re-scored, re-published day (a transactions_job run per batch), and the gate needs 50 labels
before anything can be promoted; docs/reranking.md.

Seeds are recorded in bench/README.md before use: dev 51 / 52 / 53 (``--seeds 51,52,53 --start
2026-06-01``), 141 / 142 / 143 (``--start 2025-03-01``) and 151 / 152 / 153 (``--start 2025-06-01``);
held out, each run once: 91 / 92 / 93 (``--start 2026-09-01``), 111 / 112 / 113 (``--start
2026-03-01``), 131 / 132 / 133 (``--start 2025-09-01``). The figures after the re-ranker
include its incidents (a lone flagged transaction makes one at a re-ranked score of 0.8,
``transactions.reranking.LONE_INCIDENT_CUT``); ``before`` is what the unsupervised decision alone makes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import record

# the measurement before issue 26 (trained on seed 1, evaluated on seed 2): the predecessor-style
# ensemble of IF and LOF
PREDECESSOR = {
    "pr_auc": 0.115,
    "roc_auc": 0.918,
    "precision": 0.174,
    "recall": 0.287,
    "incident_precision": 0.14,
}
TARGETS = {"pr_auc": 0.70, "incident_precision": 0.80}


def _month(start: dt.date, k: int) -> dt.date:
    month = start.month - 1 + k
    return dt.date(start.year + month // 12, month % 12 + 1, 1)


def _run(job: str, day: str | None = None, run_config: dict | None = None) -> dict:
    """A recorded Dagster run of ``job`` (the CLI's runner, in this bench's DAGSTER_HOME): metadata
    per asset."""
    from bankanom_pipeline.cli import _run_job

    ran = _run_job(job, day, run_config)
    if ran is None:
        raise RuntimeError(f"{job} {day or ''} failed")
    return ran


def _figures(con, day: dt.date) -> dict:
    """The evaluation of ``day``: event metrics per model, incident metrics after and before the
    re-ranker, per-pattern recall after and before."""
    from bankanom_pipeline.transactions.evaluation import (
        evaluate,
        reranked,
        scored_day,
        unsupervised_incidents,
    )
    from bankanom_pipeline.warehouse.frames import read_frame

    metrics = read_frame(
        con, "SELECT model, metric, value FROM transaction_evaluation_metrics WHERE partition_date = ?", [day]
    )
    table: dict[str, dict[str, float]] = {}
    for model, metric, value in metrics.iter_rows():
        table.setdefault(model, {})[metric] = value
    patterns = read_frame(
        con,
        "SELECT pattern, instances, recall, pattern_top1 FROM transaction_evaluation_patterns "
        "WHERE partition_date = ? ORDER BY pattern",
        [day],
    )
    out = {"metrics": table, "patterns": patterns.to_dicts()}
    scored, labels = scored_day(con, day)
    if reranked(scored):
        _, before = evaluate(scored, labels, unsupervised_incidents(con, day), {})
        out["patterns_unsupervised"] = before.select(
            "pattern", "instances", "recall", "pattern_top1"
        ).to_dicts()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="51,52,53", help="train, labelled, evaluated delivery seeds")
    parser.add_argument("--start", default="2026-06-01", help="first day of the first delivery's month")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--root", help="keep the data here (default: a temporary folder, removed)")
    parser.add_argument("--name", default="feedback", help="the bench/results record's name")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = dt.date.fromisoformat(args.start)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="bankanom-feedback-bench-"))
    data = root / "data"
    os.environ["BANKANOM_HOME"] = str(root)  # data/ and the Dagster instance of the runs
    os.environ["DAGSTER_HOME"] = str(root / "dagster_home")
    for name in (
        "BANKANOM_DATA_DIR",
        "BANKANOM_MODELS_DIR",
        "BANKANOM_SNAPSHOTS_DIR",
        "BANKANOM_WAREHOUSE",
        "BANKANOM_LANDING_DIR",
        "BANKANOM_FEEDBACK_DB",
    ):
        os.environ.pop(name, None)

    import duckdb

    from bankanom_pipeline.defs.detection.jobs import train_run_config
    from bankanom_pipeline.detection.sources import TRANSACTIONS
    from bankanom_pipeline.reranking.feedback_loop import AnalystApi
    from bankanom_pipeline.reranking.simulated_analyst import label, transaction_truth
    from bankanom_pipeline.transactions.generator import write

    seconds: dict[str, float] = {}
    began = time.perf_counter()
    deliveries = []
    for k, seed in enumerate(seeds):
        first, delivered = _month(start, k), _month(start, k + 1)
        folder = data / "landing" / "transactions" / delivered.isoformat()
        rows, fraud = write(
            folder / "tx.csv",
            folder / "tx.labels.csv",
            rows=args.rows,
            seed=seed,
            start=first,
            days=30,
            first_id=1 + k * args.rows,
        )
        deliveries.append(
            {
                "seed": seed,
                "start": first.isoformat(),
                "delivered": delivered.isoformat(),
                "rows": rows,
                "fraud": fraud,
                "labels": folder / "tx.labels.csv",
            }
        )
    (data / "models").mkdir(parents=True, exist_ok=True)
    seconds["generate"] = time.perf_counter() - began
    train_day, label_day, eval_day = (d["delivered"] for d in deliveries)
    print("deliveries", [{k: v for k, v in d.items() if k != "labels"} for d in deliveries], flush=True)

    mark = time.perf_counter()
    _run("transaction_features_job", train_day)
    _run("transaction_train_job", None, train_run_config(train_day, TRANSACTIONS))
    _run("transactions_job", train_day)
    for day in (label_day, eval_day):
        _run("transaction_features_job", day)
    _run("transactions_job", label_day)
    seconds["unsupervised"] = time.perf_counter() - mark
    print("unsupervised pipeline done", round(seconds["unsupervised"]), "s", flush=True)

    mark = time.perf_counter()
    # a real API (and no live stream: AnalystApi points it at a port nothing listens on)
    with AnalystApi(root / "api.log") as api:
        truth = transaction_truth([deliveries[1]["labels"]])
        done = label(
            api.url, api.key, "transaction", args.budget, truth, batch=args.batch, partition_date=label_day
        )
    seconds["labelling"] = time.perf_counter() - mark
    print(
        "labelled",
        len(done.target_ids),
        done.by_reason(),
        "true positives",
        done.positives_by_reason(),
        flush=True,
    )

    mark = time.perf_counter()
    trained = _run("transaction_reranker_job")["transaction_reranker"]
    seconds["reranker"] = time.perf_counter() - mark
    print("re-ranker", json.dumps(trained, default=str), flush=True)

    mark = time.perf_counter()
    _run("transactions_job", eval_day)
    seconds["evaluation_day"] = time.perf_counter() - mark
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    try:
        figures = _figures(con, dt.date.fromisoformat(eval_day))
    finally:
        con.close()
    m = figures["metrics"]
    after = m.get("reranked", {})
    incidents_before = m.get("incidents_unsupervised", m.get("incidents", {}))
    summary = {
        "before": {
            "pr_auc": m["ensemble"]["pr_auc"],
            "roc_auc": m["ensemble"]["roc_auc"],
            "precision": m["ensemble"]["precision"],
            "recall": m["ensemble"]["recall"],
            "incident_precision": incidents_before.get("incident_precision"),
            "incidents": incidents_before.get("incidents_total"),
            "instance_recall": incidents_before.get("instance_recall"),
        },
        "after": {
            "pr_auc": after.get("pr_auc"),
            "roc_auc": after.get("roc_auc"),
            "precision": after.get("precision"),
            "recall": after.get("recall"),
            "incident_precision": m["incidents"]["incident_precision"] if after else None,
            "incidents": m["incidents"]["incidents_total"] if after else None,
            "instance_recall": m["incidents"]["instance_recall"] if after else None,
        },
        "predecessor": PREDECESSOR,
        "baseline_same_day": m.get("baseline_isolation_forest"),
        "targets": TARGETS,
    }
    result = {
        "seeds": seeds,
        "deliveries": [{k: v for k, v in d.items() if k != "labels"} for d in deliveries],
        "budget": args.budget,
        "batch": args.batch,
        "labels_by_reason": done.by_reason(),
        "true_positives_by_reason": done.positives_by_reason(),
        "reranker": {k: v for k, v in trained.items() if k != "gate"},
        "gate": trained.get("gate"),
        "summary": summary,
        "figures": figures,
        "seconds": seconds,
    }
    print(json.dumps(summary, indent=2, default=str), flush=True)
    print("patterns after", figures["patterns"], flush=True)
    print("patterns before", figures.get("patterns_unsupervised"), flush=True)
    record(args.name, json.loads(json.dumps(result, default=str)))
    if not args.root:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
