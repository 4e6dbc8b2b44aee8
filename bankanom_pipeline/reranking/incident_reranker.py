"""The log-incident re-ranker: learnt from analysts' labels on incidents, applied to a day's incidents.

``train`` is the body of the ``incident_reranker`` asset: the labels that count
(``feedback.labels(frame, "incident")``, the only way labels reach it) joined to each labelled incident's
features (``incident_features``), a re-ranker fitted on the labels outside a hashed held-out share and
gated on that share (``core.train_and_gate``), then written to the log registry as ``incident_reranker``
and promoted when the gate passes.

The cut. A re-ranked incident is *suppressed* (kept, marked, no longer reported) when its re-ranked
score is below the cut, chosen on the gate's held-out labels only (ground truth is never read for it):
the lowest score the promoted re-ranker gives a held-out true positive, so that nothing an analyst
confirmed there would have been suppressed, and at most MAX_CUT; 0 (nothing suppressed) when no
held-out false positive scores below it. MAX_CUT bounds what a few dozen held-out labels can say: the
lowest of ~50 true positives is a poor estimate of the lowest of thousands, and a scenario the queue
never asked about (a rare one: ten instances a day) may score low without being false. On the dev days
(2026-06-02 labelled, 2026-06-03 measured; docs/detection.md) the lowest held-out true positive was at
0.92, which suppressed instances of two rare scenarios; below 0.2 no scenario lost one.

``score_day`` is the body of the ``incident_reranks`` asset: every incident of the day with its
re-ranked score, ``suppressed`` and the re-ranker's version (no rows while none is promoted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from bankanom_pipeline import feedback
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.online.version import FEATURES_TABLE
from bankanom_pipeline.reranking import core, incident_features

NAME = "incident_reranker"
KIND = "incident"
RERANKS_SCHEMA = {
    "incident_id": pl.String,
    "partition_date": pl.Date,
    "rerank_score": pl.Float64,
    "suppressed": pl.Boolean,
    "reranker_version": pl.String,
}


@dataclass(frozen=True)
class Outcome:
    labels: int  # labels that count (true or false positive) on incidents
    matched: int  # of them, incidents the warehouse still has (the ones learnt from)
    positives: int
    negatives: int
    needed: str  # what a re-ranker needs (core.MIN_LABELS, core.MIN_PER_CLASS)
    refused: str | None = None  # TooFewLabels' message when there are too few
    version: str | None = None
    promoted: bool = False
    gate: dict | None = None
    cut: float | None = None


# the highest suppression cut: an incident is suppressed only when the re-ranker gives it less than a
# one-in-five chance of being confirmed (see the module's docstring)
MAX_CUT = 0.2


def choose_cut(scores: np.ndarray, y: np.ndarray) -> float:
    """The suppression cut from held-out labels (``scores``: the re-ranker's, ``y``: 1 true positive):
    the lowest true positive's score, at most MAX_CUT, when some false positive scores below it; else 0."""
    scores, y = np.asarray(scores, dtype=np.float64), np.asarray(y).astype(bool)
    if not y.any():
        return 0.0
    cut = min(float(scores[y].min()), MAX_CUT)
    return cut if bool((scores[~y] < cut).any()) else 0.0


def labelled(con: duckdb.DuckDBPyConnection, rows: pl.DataFrame) -> pl.DataFrame:
    """The incident labels of feedback ``rows`` joined to their incidents' features (labels whose
    incident the warehouse no longer has are left out). A label without a day (the feedback file allows
    one) takes its incident's; such labels are found only on the days other labels name."""
    labels = feedback.labels(rows, KIND)
    days = [d.isoformat() for d in labels["partition_date"].drop_nulls().unique().to_list()]
    features = incident_features.read(con, days).rename({"partition_date": "_incident_day"})
    return (
        labels.join(features, left_on="target_id", right_on="incident_id", how="inner")
        .with_columns(partition_date=pl.coalesce("partition_date", "_incident_day"))
        .drop("_incident_day")
        .sort("created_at", "target_id")
    )


def train(con: duckdb.DuckDBPyConnection, models: Registry, rows: pl.DataFrame) -> Outcome:
    """Fit, gate, register and (on a pass) promote an incident re-ranker on feedback ``rows``."""
    all_labels = feedback.labels(rows, KIND)
    data = labelled(con, rows)
    y = data["y"].to_numpy().astype(np.int8)
    counts = {
        "labels": all_labels.height,
        "matched": data.height,
        "positives": int((y == 1).sum()),
        "negatives": int((y == 0).sum()),
        "needed": f"{core.MIN_LABELS} labelled incidents, {core.MIN_PER_CLASS} of each class",
    }
    names = list(incident_features.feature_names())
    X, unsupervised = incident_features.matrix(data, names)
    ids = data["target_id"].to_list()
    try:
        trained = core.train_and_gate(ids, X, unsupervised, y, names, KIND, data["selection"].to_list())
    except core.TooFewLabels as error:
        return Outcome(**counts, refused=str(error))
    test = core.held_out(ids)
    cut = choose_cut(trained.reranker.predict(X[test], unsupervised[test]), y[test])
    gate = {**trained.gate_dict(), "cut": cut}
    days = sorted(d.isoformat() for d in data["partition_date"].drop_nulls().unique().to_list())
    version = models.save_reranker(
        trained.reranker,
        name=NAME,
        gate=gate,
        labels={**trained.labels, "train": trained.n_train},
        window=(days[0], days[-1]),
        features_table=FEATURES_TABLE,
    )
    if trained.gate.promoted:
        models.promote({NAME: version.version})
    return Outcome(
        **counts,
        version=version.version,
        promoted=trained.gate.promoted,
        gate=gate,
        cut=cut,
    )


def score_day(con: duckdb.DuckDBPyConnection, models: Registry, day: str) -> pl.DataFrame:
    """The day's incidents re-ranked by the promoted incident re-ranker (empty while none is)."""
    version = models.current().get(NAME)
    if version is None:
        return pl.DataFrame(schema=RERANKS_SCHEMA)
    reranker = models.load_reranker(version)
    cut = float(models.manifest(version)["gate"]["cut"])
    features = incident_features.read(con, [day])
    X, unsupervised = incident_features.matrix(features, reranker.names)
    scores = reranker.predict(X, unsupervised)
    return pl.DataFrame(
        {
            "incident_id": features["incident_id"],
            "partition_date": pl.Series([dt.date.fromisoformat(day)] * features.height, dtype=pl.Date),
            "rerank_score": scores,
            "suppressed": scores < cut,
            "reranker_version": [version] * features.height,
        },
        schema=RERANKS_SCHEMA,
    )
