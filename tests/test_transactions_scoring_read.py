"""What a day's transaction scoring reads and how its batches run: only the features the detectors and
the stored explanations read (the same scores and explanations as from every feature), and batches
scored side by side in their order, without reading the whole day ahead."""

from __future__ import annotations

import threading
import time

import pytest

from bankanom_pipeline.detection.partition_scoring import features_read, score_frames
from bankanom_pipeline.detection.row_blocks import map_in_order
from bankanom_pipeline.detection.scoring import ECOD, IF, LOF
from bankanom_pipeline.detection.sources import TRANSACTIONS
from tests.test_partition_scoring import transactions  # noqa: F401 (the fixture)


def test_features_read_are_the_detectors_and_the_explanations_only(transactions):  # noqa: F811
    _, detectors, config = transactions
    read = features_read(TRANSACTIONS, detectors, config)
    wanted = (
        set(detectors[IF].input_features())
        | set(detectors[LOF].space.names)
        | set(detectors[ECOD].space.names)  # the scores, then top_features and evidence
    )
    assert set(read) == wanted
    assert read == [f for f in config.feature_names if f in wanted]  # the config's order
    assert "tx_24h" not in read and "is_weekend" not in read  # features no transaction model reads


def test_scoring_the_features_read_gives_what_every_feature_gives(transactions):  # noqa: F811
    frame, detectors, config = transactions
    config = config.model_copy(update={"scoring": config.scoring.model_copy(update={"chunk_rows": 700})})
    narrow = frame.select(*TRANSACTIONS.scored_columns, *features_read(TRANSACTIONS, detectors, config))
    assert narrow.width < frame.width
    scored = score_frames(TRANSACTIONS, narrow.iter_slices(500), detectors, config)
    assert scored.equals(score_frames(TRANSACTIONS, frame.iter_slices(500), detectors, config))
    assert 0 < scored["top_features"].is_not_null().sum() < frame.height
    # without an ECOD detector the explanations rank in the forest's space: every feature it holds
    no_ecod = {k: v for k, v in detectors.items() if k != ECOD}
    assert set(features_read(TRANSACTIONS, no_ecod, config)) == set(detectors[IF].space.names)


def test_map_in_order_keeps_the_order_and_takes_items_only_as_workers_free_up():
    taken, running, most = [], [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(12):
            taken.append(i)
            yield i

    def work(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            # at most the two running, the one waiting for a worker and the one just taken
            assert len(taken) <= i + 4
        time.sleep(0.01 * (i % 3 == 0))  # some finish out of order
        with lock:
            running[0] -= 1
        return i * i

    assert list(map_in_order(work, items(), workers=2)) == [i * i for i in range(12)]
    assert most[0] <= 2
    assert list(map_in_order(abs, iter([-3, 1]), workers=1)) == [3, 1]
    assert list(map_in_order(abs, iter([]), workers=2)) == []


def test_map_in_order_passes_a_failure_on():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("batch 3")
        return i

    with pytest.raises(ValueError, match="batch 3"):
        list(map_in_order(work, range(6), workers=2))
