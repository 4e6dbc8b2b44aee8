"""A small world for the online API's fast tests, with no pipeline run: two generated days of log lines
(the tiny platform's seeds and rate: ~4k and ~5k events) and a model pair trained on the online
engine's features of the first, recording the engine's feature-set version as a promoted pair does.

The equality with what the pipeline stores is tests/test_predict_context.py's (on the tiny platform);
these models only have to be real detectors over the engine's features."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson
import polars as pl
from pydantic import ValidationError

from bankanom_api.online import as_event
from bankanom_api.schemas import LogEvent
from bankanom_api.state import Models, _single_threaded
from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
from bankanom_pipeline.detection.models import TRAINERS
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine
from bankanom_pipeline.online.events import to_micros
from tests.api_server import api_client
from tests.tiny_platform import DAY, RATE, TRAIN_DAY

SEEDS = {TRAIN_DAY: 100, DAY: 101}
# the online tests' API: a reading key and an ingest key, and no rate limit in the way
KEY, INGEST = "reader-key", "ingest-key"
H, HI = {"X-API-Key": KEY}, {"X-API-Key": INGEST}
UNLIMITED = "100000/second"


@contextmanager
def client(root, models=None, **overrides):
    """The API over ``root`` with an ingest key, serving ``models`` (set once the lifespan built the state)."""
    settings = {"ingest_keys": [INGEST], "rate_limit": UNLIMITED, **overrides}
    with api_client(root, KEY, **settings) as app:
        if models is not None:
            app.app.state.serving.models = models
        yield app


def landed(landing: Path, day: str) -> list[dict]:
    """The day's generated lines the API accepts, in the engine's order ``(ts, event_id)``."""
    lines = []
    for path in sorted((landing / "logs" / day).glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            event = orjson.loads(line)
            try:
                LogEvent.model_validate(event)
            except ValidationError:
                continue
            lines.append(event)
    return sorted(lines, key=lambda e: (to_micros(e["timestamp"].replace("Z", "+00:00")), e["event_id"]))


def generate(root: Path) -> Path:
    """``root/landing`` with the two days."""
    from tests.conftest import generated_days

    generated_days(root / "landing", SEEDS, RATE)
    return root / "landing"


def engine_features(events: list[dict]) -> np.ndarray:
    """Each event's features as a fresh engine ingests the events in order."""
    engine = OnlineEngine()
    rows = [engine.ingest(as_event(LogEvent.model_validate(e))).features for e in events]
    return np.asarray(rows, dtype=np.float64)


def trained_models(events: list[dict]) -> Models:
    """Isolation Forest and LOF trained on the engine's features of ``events``, as promoted models."""
    config = default_detection_config()
    frame = pl.DataFrame(engine_features(events), schema=list(FEATURES), orient="row")
    detectors, manifests = {}, {}
    for name in MODEL_NAMES:
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        detector = TRAINERS[name](space.matrix(frame), space, config)
        detector.version = f"{name}-online-test"
        detectors[name] = _single_threaded(detector)
        manifests[name] = {
            "version": detector.version,
            "created_at": "2026-02-01T23:59:59+00:00",
            "feature_set_version": OnlineEngine.FEATURE_SET_VERSION,
        }
    return Models(detectors, manifests, time.time())


@functools.lru_cache(maxsize=1)
def built() -> tuple[list[dict], list[dict], Models]:
    """Both days' accepted lines in order and the models trained on the first, built once per test
    process (both test modules use them, read-only)."""
    root = Path(tempfile.mkdtemp(prefix="online-world-"))
    atexit.register(shutil.rmtree, root, True)
    landing = generate(root)
    first, second = landed(landing, TRAIN_DAY), landed(landing, DAY)
    return first, second, trained_models(first)
