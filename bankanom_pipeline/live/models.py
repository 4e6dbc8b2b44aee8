"""The promoted model pair the stream scores with, swapped without a stop.

A watcher reads the registry's pointer (``models_dir()/current.json``) every ``poll_s``; when it changes
it loads the newly promoted pair (verified by the registry: checksum, feature-set version) away from the
scoring thread and hands it over; the scorer takes it between two batches, so one batch is scored by one
pair and every stored row names the versions that scored it. A pair that fails to load is logged and the
old one kept; a pair of another feature set than the engine computes is kept out (its scores would not
mean what they did) and the events are stored unscored with the reason.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from bankanom_pipeline.detection.models import Detector
from bankanom_pipeline.detection.registry import CURRENT, Registry

log = logging.getLogger("bankanom.stream")


@dataclass(frozen=True)
class Pair:
    """A loaded promoted pair; ``unscored`` is why it cannot score the engine's features (else None)."""

    detectors: dict[str, Detector]
    versions: dict[str, str]
    unscored: str | None
    pointer: bytes


def _single_threaded(detector: Detector) -> Detector:
    # n_jobs=-1 (right for a whole day) costs a thread-pool round trip per call, most of the time of a
    # batch of tens of events; the stream has one scoring thread
    params = detector.estimator.get_params()
    detector.estimator.set_params(**{k: 1 for k in params if k == "n_jobs" or k.endswith("__n_jobs")})
    return detector


def load_pair(models_dir: Path, feature_set_version: str) -> Pair:
    """The promoted pair, loaded and verified; RegistryError when there is none or it cannot load."""
    registry = Registry(models_dir)
    pointer = (models_dir / CURRENT).read_bytes() if (models_dir / CURRENT).exists() else b""
    detectors = {name: _single_threaded(d) for name, d in registry.load_current().items()}
    unscored = None
    for name, detector in detectors.items():
        trained = registry.manifest(detector.version).get("feature_set_version")
        if trained != feature_set_version:
            unscored = (
                f"the promoted {name} ({detector.version}) was trained on feature set {trained}; the "
                f"stream computes feature set {feature_set_version}: train and promote models on the "
                "current features"
            )
    versions = {name: d.version for name, d in detectors.items()}
    return Pair(detectors, versions, unscored, pointer)


class ModelWatcher:
    """The current pair (``pair``, None before any loaded) and the next one once loaded (``take``)."""

    def __init__(self, models_dir: Path, feature_set_version: str, poll_s: float = 2.0):
        self.models_dir, self.feature_set_version, self.poll_s = Path(models_dir), feature_set_version, poll_s
        self.pair: Pair | None = None
        self.problem: str | None = "no promoted models yet: run train_job"
        self.swaps = 0
        self._seen: bytes | None = None
        self._pending: Pair | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> None:
        """Load the promoted pair if the pointer changed since the last look (in the caller's thread)."""
        path = self.models_dir / CURRENT
        try:
            pointer = path.read_bytes()
        except FileNotFoundError:
            return
        if pointer == self._seen:
            return
        self._seen = pointer
        try:
            pair = load_pair(self.models_dir, self.feature_set_version)
        except Exception as error:  # a half-written version, a checksum mismatch: keep what scores now
            kept = "kept the current pair" if self.pair is not None else "events stay unscored"
            log.error("could not load the promoted models (%s): %s", kept, error)
            with self._lock:
                if self.pair is None:
                    self.problem = f"the promoted models could not be loaded: {error}"
            return
        with self._lock:
            self._pending = pair
        log.info("promoted models loaded: %s", pair.versions)

    def take(self) -> bool:
        """Between batches: switch to the pair loaded since, if any. True when it switched."""
        with self._lock:
            pair, self._pending = self._pending, None
        if pair is None:
            return False
        if pair.unscored and self.scoring() is not None:
            log.error("promoted models not used, kept the current pair: %s", pair.unscored)
            return False
        self.pair, self.problem = pair, pair.unscored
        self.swaps += 1
        if pair.unscored:
            log.error("promoted models not used: %s", pair.unscored)
        else:
            log.info("scoring with %s", pair.versions)
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bankanom-stream-models", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check()
            except Exception:  # never let the watcher die: the next tick looks again
                log.exception("model watch failed")

    def scoring(self) -> Pair | None:
        """The pair to score with now, or None (``problem`` says why)."""
        pair = self.pair
        return pair if pair is not None and pair.unscored is None else None
