"""The stream's batch figures (live/timings.py): stages, slow batches, the collector's pauses, and what
the scorer puts in its status and leaves frozen."""

from __future__ import annotations

import gc

from bankanom_pipeline.live.timings import BUCKETS, STAGES, Timings
from tests.test_live_scorer import batches, items, new_scorer, promote, world


def test_batches_are_counted_by_stage_and_the_slow_ones_kept():
    timings = Timings(slow_s=0.5, keep=2)
    for wall in (0.01, 0.7, 0.9, 6.0):
        stages = dict.fromkeys(STAGES, 0.0) | {"engine": wall * 0.5, "rca": wall * 0.25}
        timings.record(1000, stages, 10.0, 10.0 + wall, cpu_s=wall / 2, gc_s=0.0)
    described = timings.describe()
    assert described["batches"] == 4 and described["lines"] == 4000
    assert described["stage_total_s"]["engine"] == round(0.5 * (0.01 + 0.7 + 0.9 + 6.0), 3)
    assert described["stage_max_s"]["rca"] == 1.5
    assert sum(described["wall_le_s"].values()) == 4 and described["wall_le_s"]["inf"] == 1
    assert described["wall_le_s"][str(BUCKETS[0])] == 1
    assert [b["wall_s"] for b in described["slow_batches"]] == [0.9, 6.0]  # the newest slow ones
    assert described["slow_batches"][-1]["cpu_s"] == 3.0 and described["wall_max_s"] == 6.0


def test_the_collectors_pauses_are_timed_by_generation():
    timings = Timings()
    timings.watch_gc()
    try:
        before = timings.gc_seconds()
        gc.collect()
        assert timings.summary()["gc_collections"][2] >= 1
        assert timings.gc_seconds() > before
    finally:
        timings.unwatch_gc()
    counted = timings.summary()["gc_collections"][2]
    gc.collect()
    assert timings.summary()["gc_collections"][2] == counted  # no longer watched


def test_the_scorer_reports_its_batches_and_freezes_its_state(tmp_path):
    promote(tmp_path / "models", 0)
    lines = world()[1][:400]
    scorer = new_scorer(tmp_path)
    try:
        assert gc.get_freeze_count() > 0  # the restored state is out of the full passes
        for batch in batches(items(lines), 100):
            scorer.process(batch, "mock")
        status = scorer.status()["timings"]
        assert status["batches"] == 4 and status["lines"] == 400
        assert status["stage_total_s"]["engine"] > 0 and status["stage_total_s"]["commit"] > 0
        assert status["wal_checkpoints"]["every_s"] == 1.0
        # each commit's meta.status carries the summary (what every API worker reads)
        assert scorer.store.meta_json("status")["timings"]["batches"] == 3  # written before its own
    finally:
        scorer.close()
    assert gc.get_freeze_count() == 0
