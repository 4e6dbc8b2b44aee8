"""The promotion gate's verdict (training.Gate): what passes, by how much a candidate may lose, and
what it says about it."""

from bankanom_pipeline.detection.training import QUALITY_TOLERANCE, Gate


def test_a_candidate_may_lose_up_to_the_tolerance_against_the_promoted_model():
    close = Gate([], 0.80 - QUALITY_TOLERANCE, 0.80, "v1")
    worse = Gate([], 0.80 - QUALITY_TOLERANCE - 0.001, 0.80, "v1")
    assert close.not_worse and close.passed
    assert not worse.not_worse and not worse.passed
    assert worse.note == f"candidate PR-AUC {0.80 - QUALITY_TOLERANCE - 0.001:.4f} vs current 0.8000"


def test_nothing_to_compare_passes_and_says_why_but_broken_scores_do_not_pass():
    assert Gate([], None, None, None).note == "no labelled day in the window: nothing to compare, passes"
    assert Gate([], 0.7, None, None).note == "no promoted model yet: passes"
    assert Gate([], 0.7, None, None).passed
    broken = Gate(["flagged share 0.4 outside (0.002, 0.15)"], None, None, None)
    assert broken.not_worse and not broken.passed
