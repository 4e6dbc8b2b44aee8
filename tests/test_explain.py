"""Score explanations (detection/explain.py) as the API's predictions, ``scored_transactions`` and
incidents give them, compared with ``fixtures/explanations.json``: what the three callers returned on the
inputs built here when each still ranked features its own way. Same inputs, same numbers, to the bit."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.detection.config import default_detection_config
from bankanom_pipeline.detection.explain import furthest_from_normal, normal_values
from bankanom_pipeline.detection.incidents import build_incidents
from bankanom_pipeline.detection.models import TRAINERS
from bankanom_pipeline.detection.scoring import IF, LOF
from bankanom_pipeline.detection.sources import TRANSACTIONS
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.transactions.scoring import top_features

EXPECTED = json.loads((Path(__file__).parent / "fixtures" / "explanations.json").read_text())


def feature_frame(names, rows, seed):
    """Skewed, sometimes negative, sometimes missing values: every transform and the null fill matter."""
    rng = np.random.default_rng(seed)
    columns = {}
    for i, name in enumerate(names):
        values = rng.lognormal(0.0, 1.0 + (i % 3), rows) * rng.choice([-1.0, 1.0, 1.0, 1.0], rows)
        values = np.round(values, 3)
        columns[name] = pl.Series(name, values).scatter(rng.choice(rows, rows // 10, replace=False), None)
    return pl.DataFrame(columns)


def detectors(config, seed):
    train = feature_frame(config.feature_names, 300, seed)
    out = {}
    for name in (IF, LOF):
        space = FeatureSpace.fit(
            train, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        out[name] = TRAINERS[name](space.matrix(train), space, config)
    return out


def flagged_events(names, seed):
    """Five users' lines (three of them a burst) with the detector's numbers drawn at random."""
    rng = np.random.default_rng(seed)
    t0 = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
    rows = []
    for i in range(11):
        rows.append(
            {
                "partition_date": dt.date(2026, 1, 5),
                "event_id": f"e{i:02d}",
                "ts": t0 + dt.timedelta(minutes=i),
                "source_service": ["auth-service", "payments-service"][i % 2],
                "user_id": ["alice", "bob", "carol", None, None][i % 5],
                "ip_address": f"10.0.{i % 5}.{i}",
                "correlation_id": None,
                "template": "Login failed for user <id> from <id>: invalid credentials",
                "if_score": 0.99,
                "lof_score": 0.99,
                "ensemble_score": float(np.round(rng.uniform(0.9, 1.0), 4)),
            }
        )
    frame = pl.DataFrame(rows).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    # sevenths: values the explanation's own rounding changes
    values = feature_frame(names, len(rows), seed + 1).fill_null(0.0).with_columns(pl.all() / 7)
    deviation = np.round(rng.normal(0.0, 4.0, (len(rows), len(names))), 3)
    attribution = np.round(rng.normal(0.0, 0.05, (len(rows), len(names))), 4)
    return pl.concat([frame, values], how="horizontal"), deviation, attribution


@pytest.fixture(scope="module")
def logs():
    config = default_detection_config()
    return config, detectors(config, 1)


@pytest.mark.parametrize("models", [[IF, LOF], [IF], [LOF]])
def test_predict_top_features_unchanged(logs, models):
    config, found = logs
    events = feature_frame(config.feature_names, 12, 2)
    got = furthest_from_normal(events, found, models, 5, values=True).records()
    assert got == EXPECTED["predict"][",".join(models)]


def test_scored_transactions_top_features_unchanged():
    config = TRANSACTIONS.config
    found = detectors(config, 3)
    rows = feature_frame(config.feature_names, 12, 4)
    assert top_features(rows, found).to_list() == EXPECTED["transactions"]
    assert top_features(rows, found, 5).to_list() == EXPECTED["transactions_n5"]
    assert top_features(rows.head(0), found).to_list() == []


def test_incident_top_features_and_summaries_unchanged(logs):
    config, found = logs
    names = config.feature_names
    flagged, deviation, attribution = flagged_events(names, 5)
    normals = normal_values(found[IF].space)
    # within an ulp or two: numpy's exp/expm1 take another SIMD path on AVX-512 processors (0.101 came out
    # ...02 on one machine and ...03 on another); the summaries below round them and stay exact
    assert normals.tolist() == pytest.approx(EXPECTED["incidents"]["normals"], rel=1e-12, abs=1e-15)
    for label, explain, given in [
        ("attributed", lambda rows: attribution[rows], normals),
        ("deviations", None, normals),
        ("no_normals", lambda rows: attribution[rows], None),
    ]:
        incidents, _ = build_incidents(flagged, deviation, names, explain, normals=given)
        got = incidents.select("incident_id", "top_features", "summary").to_dicts()
        assert got == EXPECTED["incidents"][label], label


def test_nothing_to_explain(logs):
    config, found = logs
    ranking = furthest_from_normal(feature_frame(config.feature_names, 3, 2).head(0), found, [IF], 5, True)
    assert ranking.features.shape == (0, 5) and ranking.records() == []
    with pytest.raises(ValueError, match="without values"):
        furthest_from_normal(feature_frame(config.feature_names, 3, 2), found, [IF], 5, False).records()
