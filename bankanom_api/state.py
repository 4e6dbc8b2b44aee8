"""What the API serves: the promoted models and the current snapshot, reloaded when newer ones appear.

A request takes the ``Models`` and ``Snapshot`` objects current when it starts and uses only them, so a
reload (which builds new objects and swaps a reference) never changes anything under a request in
flight. A version that fails to load (a model or a snapshot whose sha256 does not match the one recorded
when it was written, among others) is logged, counted and reported, and the previous one keeps serving.
The reloader thread does the verifying, so a large snapshot's hashing never holds up a request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.registry import CURRENT as MODELS_POINTER
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.detection.sources import TRANSACTIONS
from bankanom_pipeline.serving import snapshot as snapshots

log = logging.getLogger("bankanom_api")


@dataclass(frozen=True)
class Models:
    detectors: dict[str, Detector]
    manifests: dict[str, dict]
    loaded_at: float

    @property
    def versions(self) -> dict[str, str]:
        return {name: d.version for name, d in self.detectors.items()}


@dataclass(frozen=True)
class Snapshot:
    pointer: dict
    con: duckdb.DuckDBPyConnection
    loaded_at: float
    # A published snapshot file never changes (a publish writes a new file and a new Snapshot is
    # loaded), so an answer read from it stays right for this object's life: repeated pages of
    # /incidents or /scores/latest cost a dictionary lookup instead of two DuckDB queries.
    _answers: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)
    _answers_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    ANSWER_ROWS = 200_000  # rows kept per snapshot, least recently used answers dropped first
    LARGEST_ANSWER = 10_000  # rows; bigger answers are not kept

    def has(self, table: str) -> bool:
        return table in self.pointer.get("rows", {})

    def query(self, sql: str, params: list | None = None) -> tuple[list[str], list[tuple]]:
        """Column names and rows (shared with other callers: do not modify them); parameters are bound,
        never formatted into the SQL."""
        # typed: 1, 1.0 and True are equal keys but not equal parameters
        key = (sql, *((type(p), tuple(p) if isinstance(p, list) else p) for p in params or ()))
        with self._answers_lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
                return answer
        cursor = self.con.cursor()  # one per request: a DuckDB connection runs one query at a time
        try:
            cursor.execute(sql, params or [])
            answer = [d[0] for d in cursor.description], cursor.fetchall()
        finally:
            cursor.close()
        if len(answer[1]) <= self.LARGEST_ANSWER:
            with self._answers_lock:
                self._answers[key] = answer
                kept = sum(len(rows) + 1 for _, rows in self._answers.values())
                while kept > self.ANSWER_ROWS:
                    _, (_, rows) = self._answers.popitem(last=False)
                    kept -= len(rows) + 1
        return answer


def _single_threaded(detector: Detector) -> Detector:
    # n_jobs=-1 (right for scoring a day) costs a thread-pool round trip per call: for the API's small
    # batches that overhead is most of the time, and requests already run in parallel; an estimator that
    # is not scikit-learn's has no such parameters
    if not hasattr(detector.estimator, "get_params"):
        return detector
    params = detector.estimator.get_params()
    detector.estimator.set_params(**{k: 1 for k in params if k == "n_jobs" or k.endswith("__n_jobs")})
    return detector


@dataclass
class ServingState:
    models_dir: Path
    snapshots_dir: Path
    models: Models | None = None
    transaction_models: Models | None = None
    snapshot: Snapshot | None = None
    errors: dict[str, str] = field(default_factory=dict)  # kind -> last load failure
    reload_failures: int = 0
    _seen: dict[str, str] = field(default_factory=dict)  # kind -> pointer content last acted on
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        """Load whatever pointer changed since the last call (cheap when nothing did)."""
        with self._lock:  # one reload at a time; requests never wait on this lock
            self._reload("models", self.models_dir / MODELS_POINTER, self._load_models)
            self._reload(
                "transaction_models",
                self.transaction_models_dir / MODELS_POINTER,
                self._load_transaction_models,
            )
            self._reload("snapshot", self.snapshots_dir / snapshots.CURRENT, self._load_snapshot)

    def unavailable(self, kind: str, otherwise: str) -> str:
        """Why nothing of ``kind`` is served: its load failure if it had one, else ``otherwise``."""
        error = self.errors.get(kind)
        return f"{kind}: {error}; no {kind.replace('_', ' ')} loaded yet" if error else otherwise

    def _reload(self, kind: str, pointer: Path, load: Callable[[str], Models | Snapshot]) -> None:
        """Swap in what ``pointer`` names once it changes; on failure keep serving the previous one
        and do not retry the same broken pointer every tick."""
        try:
            text = pointer.read_text()
        except FileNotFoundError:
            return
        if self._seen.get(kind) == text:
            return
        self._seen[kind] = text
        try:
            loaded = load(text)
        except Exception as error:
            self.errors[kind] = str(error)
            self.reload_failures += 1
            if getattr(self, kind) is None:
                log.error("could not load %s: %s; no %s loaded yet", kind, error, kind.replace("_", " "))
            else:
                log.error("could not load the new %s, still serving the previous one: %s", kind, error)
            return
        setattr(self, kind, loaded)  # the previous one lives on in requests still holding it
        self.errors.pop(kind, None)
        log.info("serving %s from %s", kind, text.strip())

    @property
    def transaction_models_dir(self) -> Path:
        return TRANSACTIONS.registry(self.models_dir).root

    def _load_models(self, _pointer: str) -> Models:
        return _load_registry(Registry(self.models_dir))

    def _load_transaction_models(self, _pointer: str) -> Models:
        return _load_registry(TRANSACTIONS.registry(self.models_dir))

    def _load_snapshot(self, pointer: str) -> Snapshot:
        parsed = json.loads(pointer)
        path = snapshots.SnapshotPublisher(self.snapshots_dir).verified(parsed)
        if "sha256" not in parsed:
            log.warning("%s was published without a checksum: served unverified", parsed["file"])
        con = duckdb.connect(str(path), read_only=True)
        # and DuckDB must be able to open it
        table = next(iter(parsed.get("rows") or {"incidents": 0}))
        con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
        return Snapshot(parsed, con, time.time())


def _load_registry(registry: Registry) -> Models:
    detectors = {name: _single_threaded(d) for name, d in registry.load_current().items()}
    manifests = {name: registry.manifest(d.version) for name, d in detectors.items()}
    return Models(detectors, manifests, time.time())


class Reloader:
    """Polls the pointers in a background thread."""

    def __init__(self, state: ServingState, interval: float):
        self.state, self.interval = state, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bankanom-reloader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.state.refresh()
            except Exception:  # never let the reloader die: the next tick retries
                log.exception("reload failed")
