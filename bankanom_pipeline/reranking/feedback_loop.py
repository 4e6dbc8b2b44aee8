"""The feedback loop as the demo and the benchmarks run it, for measuring only: a real API serving the
published snapshot, the simulated analyst labelling what its review queue asks about
(``simulated_analyst.label``), and a day's figures before and after a re-ranker.

The re-ranker jobs themselves are Dagster runs (``incident_reranker_job``, ``transaction_reranker_job``):
the CLI and the benchmarks run them; ``verdict`` reads what their asset recorded. The figures are
computed here from the warehouse, with the evaluation's own functions, over every item of the day and
over the items no analyst labelled: a re-ranker has seen its labelled items, so figures that include
them flatter it.
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Collection
from pathlib import Path

import duckdb
import polars as pl

from bankanom_pipeline import feedback, settings
from bankanom_pipeline.ports import free_port

ANALYST = "simulated analyst"
NOTICE = "simulated analyst: reads the generator's ground truth, for the demo only"


class AnalystApi:
    """``bankanom api`` (uvicorn, a subprocess) over the configured data folder, with one new API key
    mapped to ``analyst``: the server the simulated analyst posts its labels to. A context manager: up
    (the review queue answers) on entry, stopped on exit. Its log goes to ``log``."""

    def __init__(self, log: Path, analyst: str = ANALYST, timeout: float = 300):
        from bankanom_api.security import key_id

        self.key = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.timeout = timeout
        self.env = {
            **os.environ,
            "BANKANOM_API_KEYS": self.key,
            "BANKANOM_ANALYSTS": f"{analyst}={key_id(self.key)}",
            "BANKANOM_API_RATE_LIMIT": "100000/minute",
            # no live stream here: a port nothing listens on, never a stream another process runs
            "BANKANOM_STREAM_URL": f"http://127.0.0.1:{free_port()}",
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> AnalystApi:
        import httpx

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        command = [sys.executable, "-m", "bankanom_pipeline.cli", "api", "--port", str(self.port)]
        self.process = subprocess.Popen(command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the API exited ({self.process.returncode}); see {self.log_path}")
                try:
                    # up when the snapshot is loaded: the queue answers
                    asked = httpx.get(
                        f"{self.url}/feedback/queue",
                        params={"kind": "incident", "n": 1},
                        headers={"X-API-Key": self.key},
                        timeout=10,
                    )
                    if asked.status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            raise RuntimeError(f"the API did not answer within {self.timeout:.0f}s; see {self.log_path}")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self._log.close()


def labelled_ids(kind: str) -> set[str]:
    """Every ``kind`` item some analyst labelled (unsure included: the queue no longer asks about it)."""
    rows = feedback.read(settings.feedback_path())
    return set(rows.filter(pl.col("kind") == kind)["target_id"].to_list())


def verdict(metadata: dict) -> dict:
    """What a re-ranker asset run recorded (``incident_reranker`` or ``transaction_reranker``'s
    materialization metadata), as ``promoted`` (bool), ``outcome`` (one line) and the gate's figures.
    The gate measured a model fitted without its held-out labels; when the version was then refitted on
    every label (``gate["refit"]``), the line says so, as the console does."""
    gate = metadata.get("gate") or {}
    if not metadata.get("trained"):
        line = f"refused, none trained: {metadata['reason']}"
    else:
        line = (
            f"{'promoted' if metadata['promoted'] else 'refused'} {metadata['version']}: {metadata['reason']}"
        )
        if gate.get("refit"):
            line += (
                f"; this version was then refitted on all {gate['n_train']}, those held-out labels included"
            )
    return {
        "promoted": bool(metadata.get("trained") and metadata.get("promoted")),
        "outcome": line,
        "labels": metadata.get("labels"),
        "true_positives": metadata.get("true_positives"),
        "false_positives": metadata.get("false_positives"),
        "n_test": gate.get("n_test"),
        "gain": metadata.get("gain"),
        "cut": metadata.get("cut", gate.get("cut")),
    }


def _finite(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


# -- log incidents ------------------------------------------------------------------------------------------


def incident_figures(con: duckdb.DuckDBPyConnection, day: str, labelled: Collection[str] = ()) -> dict:
    """A log day's incident figures before the incident re-ranker's cut and after it (``after`` None
    when the day has no re-ranked incidents), over every incident (``all``, what the evaluation stores)
    and over the incidents not in ``labelled`` (``unlabelled``: their precision; the lowest scenario
    recall with the cut applied to them only, labelled incidents keeping their own decision)."""
    import datetime as dt

    from bankanom_pipeline.detection.day_evaluation import incident_reranks, log_day
    from bankanom_pipeline.detection.evaluation import after_cut, incident_evaluation, join_labels
    from bankanom_pipeline.warehouse.frames import read_frame

    joined = join_labels(*log_day(con, day))
    built = read_frame(con, "SELECT * FROM incidents WHERE partition_date = ?", [day])
    members = read_frame(con, "SELECT * FROM incident_events WHERE partition_date = ?", [day])
    reranks = incident_reranks(con, day)
    date = dt.date.fromisoformat(day)
    mine = set(built["incident_id"].to_list()) & set(labelled)
    is_labelled = pl.col("incident_id").is_in(list(mine))

    def figures(incidents: pl.DataFrame) -> dict:
        rows, per_scenario = incident_evaluation(joined, incidents, members, date)
        values = dict(rows)
        lowest = per_scenario.sort("recall").head(1)
        return {
            "incident_precision": _finite(values["incident_precision"]),
            "reported": int(values["incidents_reported"]),
            "true": int(values["incidents_true"]),
            "instance_recall": _finite(values["instance_recall"]),
            "min_scenario_recall": _finite(values["min_scenario_recall"]),
            "lowest_scenario": lowest["scenario_id"][0] if lowest.height else None,
        }

    def unlabelled(incidents: pl.DataFrame) -> dict:
        # precision over the incidents no analyst labelled; recall over every instance, the labelled
        # incidents kept as the unsupervised decision reported them (``incidents`` differs from ``built``
        # only on unlabelled ones)
        out = figures(incidents)
        kept = figures(incidents.filter(~is_labelled))
        return {**out, **{k: kept[k] for k in ("incident_precision", "reported", "true")}}

    result = {
        "day": day,
        "incidents": built.height,
        "labelled": len(mine),
        "reranked": reranks.height,
        "all": {"before": figures(built), "after": None},
        "unlabelled": {"before": unlabelled(built), "after": None},
    }
    if reranks.height:
        result["suppressed"] = int(reranks["suppressed"].sum())
        result["all"]["after"] = figures(after_cut(built, reranks))
        result["unlabelled"]["after"] = unlabelled(
            after_cut(built, reranks.filter(~pl.col("incident_id").is_in(list(mine))))
        )
    return result


# -- transactions -------------------------------------------------------------------------------------------


def transaction_figures(con: duckdb.DuckDBPyConnection, day: str, labelled: Collection[str] = ()) -> dict:
    """A delivery's figures before the transaction re-ranker (the ensemble's score and its own flag; the
    incidents the unsupervised decision alone makes) and after it (``after`` None when the day was not
    re-ranked), over every transaction (``all``, what ``transaction_evaluation`` stores) and over the
    transactions not in ``labelled`` with the incidents holding none of them (``unlabelled``)."""
    from bankanom_pipeline.transactions.evaluation import (
        evaluate,
        reranked,
        scored_day,
        unsupervised_incidents,
    )
    from bankanom_pipeline.warehouse.frames import read_frame

    scored, labels = scored_day(con, day)
    shown = read_frame(con, "SELECT * FROM transaction_incidents WHERE partition_date = ?", [day])
    is_reranked = reranked(scored)
    before_incidents = unsupervised_incidents(con, day) if is_reranked else shown
    mine = list(set(scored["transaction_id"].to_list()) & set(labelled))

    def figures(items: pl.DataFrame, incidents: pl.DataFrame, after: bool) -> dict:
        model = "reranked" if after else "ensemble"
        # evaluate measures the ensemble on its own flag (ensemble_flag) when the day is re-ranked
        metrics, _ = evaluate(items, labels, incidents, {"ensemble": ("ensemble_score", "is_anomaly")})
        values = {(m, k): v for m, k, v in metrics.iter_rows()}
        return {
            "pr_auc": _finite(values.get((model, "pr_auc"))),
            "precision": _finite(values.get((model, "precision"))),
            "recall": _finite(values.get((model, "recall"))),
            "incident_precision": _finite(values[("incidents", "incident_precision")]),
            "incidents": int(values[("incidents", "incidents_total")]),
            "instance_recall": _finite(values[("incidents", "instance_recall")]),
        }

    untouched = pl.col("transaction_ids").list.eval(pl.element().is_in(mine)).list.any().not_()
    items = scored.filter(~pl.col("transaction_id").is_in(mine))
    result = {
        "day": day,
        "transactions": scored.height,
        "labelled": len(mine),
        "all": {"before": figures(scored, before_incidents, False), "after": None},
        "unlabelled": {"before": figures(items, before_incidents.filter(untouched), False), "after": None},
    }
    if is_reranked:
        result["all"]["after"] = figures(scored, shown, True)
        result["unlabelled"]["after"] = figures(items, shown.filter(untouched), True)
    return result
