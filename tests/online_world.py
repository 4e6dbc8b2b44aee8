"""A small world for the online API's fast tests, with no pipeline run: two generated days of log lines
(the tiny platform's seeds and rate: ~4k and ~5k events) and a model pair trained on the online
engine's features of the first, saved and promoted in a registry of their own (``models_dir``).

``client`` is the API as deployed: the real stream service (``bankanom_pipeline.live.service``, its
``LiveScorer`` over the test's folder) served by uvicorn in a thread on a free loopback port, with a
stream key, and the real API app in process forwarding to it and reading its live store.

The equality with what the pipeline stores is tests/test_predict_context.py's (on the tiny platform);
these models only have to be real detectors over the engine's features."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import orjson
import polars as pl
from pydantic import ValidationError

from bankanom_api.schemas import LogEvent
from bankanom_api.state import Models, _single_threaded
from bankanom_pipeline.detection.config import MODEL_NAMES, default_detection_config
from bankanom_pipeline.detection.models import TRAINERS
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.live.lines import as_event
from bankanom_pipeline.online.engine import FEATURES, OnlineEngine
from bankanom_pipeline.online.events import to_micros
from tests.api_server import api_client, free_port
from tests.tiny_platform import DAY, RATE, TRAIN_DAY

SEEDS = {TRAIN_DAY: 100, DAY: 101}
# the online tests' API: a reading key and an ingest key, and no rate limit in the way
KEY, INGEST = "reader-key", "ingest-key"
H, HI = {"X-API-Key": KEY}, {"X-API-Key": INGEST}
UNLIMITED = "100000/second"
STREAM_KEY = "stream-key"


def serve(
    app, port: int | None = None, http: str | type = "auto", lifespan: str = "off", name: str = "test-server"
) -> tuple[str, callable]:
    """``app`` under a real uvicorn on loopback (``port`` or a free one; ``http``: uvicorn's protocol;
    ``lifespan``: "off" for a bare ASGI function), in a thread; returns its URL and a function that stops it."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            stop()
            raise RuntimeError(f"{name} did not start on port {port}")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", stop


@contextmanager
def stream_service(root: Path, key: str | None = STREAM_KEY, incidents=None, **options):
    """The stream's internal service over ``root`` (``live/``, ``models/``, ``snapshots/``), without a
    source (only what is posted), served on a free loopback port; yields its URL and its scorer."""
    from bankanom_pipeline.live.scorer import LiveScorer
    from bankanom_pipeline.live.service import create_app

    scorer = LiveScorer(root / "live", root / "models", root / "snapshots", incidents=incidents, **options)
    try:
        url, stop = serve(create_app(scorer, None, key), lifespan="auto", name="test-stream-service")
    except BaseException:
        scorer.close()
        raise
    try:
        yield url, scorer
    finally:
        stop()
        scorer.close()


@contextmanager
def client(root: Path, models: bool = False, incidents=None, stream: dict | None = None, **overrides):
    """The API over ``root`` with an ingest key, forwarding to a real stream service over the same
    folder; with ``models`` the world's promoted pair is copied into ``root/models`` first, so both
    score with it. ``stream``: the scorer's options. ``app.stream_scorer`` is the stream's scorer."""
    root.mkdir(parents=True, exist_ok=True)
    if models:
        shutil.copytree(built()[3], root / "models", dirs_exist_ok=True)
    with stream_service(root, incidents=incidents, **(stream or {})) as (url, scorer):
        settings = {
            "ingest_keys": [INGEST],
            "rate_limit": UNLIMITED,
            "stream_url": url,
            "stream_key": STREAM_KEY,
            "live_dir": root / "live",
            **overrides,
        }
        with api_client(root, KEY, **settings) as app:
            app.stream_scorer = scorer
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


def trained_models(events: list[dict], registry: Path) -> Models:
    """Isolation Forest and LOF trained on the engine's features of ``events``, saved and promoted in
    ``registry``; returned as the API serves them."""
    config = default_detection_config()
    frame = pl.DataFrame(engine_features(events), schema=list(FEATURES), orient="row")
    detectors, manifests = {}, {}
    for name in MODEL_NAMES:
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        detector = TRAINERS[name](space.matrix(frame), space, config)
        saved = Registry(registry).save(
            detector, params={}, window=("2026-02-01", "2026-02-01"), rows=len(events), metrics={}
        )
        assert saved.manifest["feature_set_version"] == OnlineEngine.FEATURE_SET_VERSION
        detector.version = saved.version
        detectors[name] = _single_threaded(detector)
        manifests[name] = saved.manifest
    Registry(registry).promote({n: d.version for n, d in detectors.items()})
    return Models(detectors, manifests, time.time())


@functools.lru_cache(maxsize=1)
def built() -> tuple[list[dict], list[dict], Models, Path]:
    """Both days' accepted lines in order, the models trained on the first and the registry folder
    holding them promoted, built once per test process (the test modules use them, read-only)."""
    root = Path(tempfile.mkdtemp(prefix="online-world-"))
    atexit.register(shutil.rmtree, root, True)
    landing = generate(root)
    first, second = landed(landing, TRAIN_DAY), landed(landing, DAY)
    return first, second, trained_models(first, root / "models"), root / "models"
