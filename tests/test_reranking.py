"""The re-ranking core and the queue's selection: fitting, the minimum of labels, the held-out split,
the promotion gate, and which items the queue asks about."""

import numpy as np
import polars as pl
import pytest

from bankanom_pipeline.reranking import core
from bankanom_pipeline.reranking.selection import RANDOM_SHARE, select

NAMES = ["a", "b", "c"]


def _labelled(n: int = 300, seed: int = 0):
    """Items whose truth depends on feature ``a``, which the unsupervised score barely sees."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    y = (X[:, 0] + rng.normal(0, 0.3, n) > 0.8).astype(np.int8)
    unsupervised = np.clip(0.5 + 0.05 * X[:, 0] + rng.normal(0, 0.3, n), 0, 1)
    return [f"tx-{seed}-{i}" for i in range(n)], X, unsupervised, y


def test_fit_predicts_probabilities_that_rank_the_labels():
    _ids, X, u, y = _labelled()
    reranker = core.fit(X, u, y, NAMES, "transaction")
    p = reranker.predict(X, u)
    assert p.dtype == np.float64 and p.shape == (len(y),)
    assert ((p >= 0) & (p <= 1)).all()
    assert reranker.names == NAMES
    assert p[y == 1].mean() > p[y == 0].mean() + 0.5
    # same inputs, same model: deterministic
    assert np.array_equal(core.fit(X, u, y, NAMES, "transaction").predict(X, u), p)


def test_fit_refuses_too_few_labels_with_the_counts():
    _ids, X, u, y = _labelled()
    y = np.array([1] * 12 + [0] * 25, dtype=np.int8)
    with pytest.raises(core.TooFewLabels) as refused:
        core.fit(X[:37], u[:37], y, NAMES, "transaction")
    assert str(refused.value) == (
        "a transaction re-ranker needs at least 50 labelled items, 10 of each class; it has 37 "
        "(12 true positives, 25 false positives)"
    )
    # enough in all, too few of one class
    y = np.array([1] * 5 + [0] * 95, dtype=np.int8)
    with pytest.raises(
        core.TooFewLabels, match=r"^an incident re-ranker needs .* it has 100 \(5 true positives"
    ):
        core.fit(X[:100], u[:100], y, NAMES, "incident")


def test_fit_rejects_mismatched_inputs():
    _ids, X, u, y = _labelled()
    with pytest.raises(ValueError, match="feature names"):
        core.fit(X, u, y, ["a"], "transaction")
    with pytest.raises(ValueError, match="labels for"):
        core.fit(X, u, y[:-1], NAMES, "transaction")


def test_held_out_is_deterministic_and_near_its_share():
    ids = [f"id-{i}" for i in range(5000)]
    mask = core.held_out(ids)
    assert mask.dtype == bool and mask.shape == (5000,)
    assert np.array_equal(mask, core.held_out(list(ids)))
    assert abs(mask.mean() - 0.3) < 0.03
    assert abs(core.held_out(ids, 0.5).mean() - 0.5) < 0.03
    # an item's membership depends on its id alone, not on its neighbours or order
    assert np.array_equal(core.held_out(ids[::-1]), mask[::-1])
    with pytest.raises(ValueError, match="share"):
        core.held_out(ids, 1.2)


def test_gate_promotes_a_reranker_that_ranks_better():
    ids, X, u, y = _labelled(600)
    trained = core.train_and_gate(ids, X, u, y, NAMES, "transaction", ["random"] * 600)
    gate = trained.gate
    test = core.held_out(ids)
    assert gate.n_test == int(test.sum()) and trained.n_train == int((~test).sum())
    assert gate.promoted and gate.gain > core.MIN_GAIN
    assert gate.gain == pytest.approx(gate.ap_reranked - gate.ap_unsupervised)
    assert "beats" in gate.reason
    assert gate.random_only is not None and gate.random_only["n_test"] == gate.n_test
    assert trained.labels["by_selection"] == {"random": 600}


def test_gate_refuses_no_real_gain():
    _ids, X, u, y = _labelled(600)
    reranker = core.fit(X, u, y, NAMES, "transaction")

    class SameOrder:
        """A re-ranker that returns the unsupervised order itself: no gain."""

        def predict(self, X, unsupervised):
            return np.asarray(unsupervised, dtype=np.float64)

    gate = core.gate(SameOrder(), X, u, y)
    assert not gate.promoted and gate.gain == pytest.approx(0.0)
    assert "does not beat" in gate.reason
    # a re-ranker that ranks worse than the unsupervised score
    worse = core.gate(reranker, X, u, 1 - y)
    assert not worse.promoted and worse.gain < 0


def test_gate_refuses_a_single_class_test_set():
    _ids, X, u, y = _labelled()
    reranker = core.fit(X, u, y, NAMES, "transaction")
    gate = core.gate(reranker, X[:40], u[:40], np.zeros(40, dtype=np.int8))
    assert not gate.promoted and gate.n_test == 40
    assert "all false positives" in gate.reason
    assert np.isnan(gate.gain)


def _candidates(n: int = 1000, rerank: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame(
        {
            "target_id": [f"c{i}" for i in range(n)],
            "score": rng.random(n),
            "rerank_score": rng.random(n) if rerank else [None] * n,
        },
        schema_overrides={"rerank_score": pl.Float64},
    )


def test_select_reasons_and_what_each_picks():
    candidates = _candidates()
    chosen = select(candidates, set(), 20, seed=1, threshold=0.9)
    assert chosen.columns == ["target_id", "reason", "score", "rerank_score"]
    counts = dict(chosen["reason"].value_counts().iter_rows())
    assert counts == {"top": 8, "uncertain": 8, "random": round(20 * RANDOM_SHARE)}
    assert chosen["target_id"].n_unique() == 20
    top = chosen.filter(pl.col("reason") == "top")["score"]
    assert top.to_list() == candidates["score"].sort(descending=True).head(8).to_list()
    uncertain = chosen.filter(pl.col("reason") == "uncertain")["score"].to_numpy()
    unpicked = candidates.filter(~pl.col("target_id").is_in(chosen["target_id"].to_list()))["score"]
    assert np.abs(uncertain - 0.9).max() <= np.abs(unpicked.to_numpy() - 0.9).min()


def test_select_uses_the_rerank_score_when_a_reranker_is_promoted():
    candidates = _candidates(rerank=True)
    chosen = select(candidates, set(), 20)
    top = chosen.filter(pl.col("reason") == "top")["rerank_score"]
    assert top.to_list() == candidates["rerank_score"].sort(descending=True).head(8).to_list()
    uncertain = chosen.filter(pl.col("reason") == "uncertain")["rerank_score"].to_numpy()
    assert np.abs(uncertain - 0.5).max() < 0.01


def test_select_is_deterministic_and_never_returns_labelled_items():
    candidates = _candidates()
    labelled = set(candidates.sort("score", descending=True)["target_id"].head(50).to_list())
    first = select(candidates, labelled, 20, seed=5)
    shuffled = candidates.sample(fraction=1.0, shuffle=True, seed=9)
    assert first.equals(select(shuffled, labelled, 20, seed=5))
    assert not set(first["target_id"]) & labelled
    assert not select(candidates, labelled, 20, seed=6).equals(first)  # another seed, other random picks
    # fewer candidates than asked: every unlabelled one, once
    small = candidates.head(30)
    rest = select(small, set(small["target_id"].head(25).to_list()), 20)
    assert sorted(rest["target_id"]) == sorted(small["target_id"].tail(5))
    assert select(candidates, set(candidates["target_id"]), 20).height == 0


def test_below_its_floor_a_reranker_keeps_the_unsupervised_order_beneath_the_items_it_judges():
    _ids, X, u, y = _labelled()
    reranker = core.fit(X, u, y, NAMES, "transaction", floor=0.5)
    p = reranker.predict(X, u)
    below = u < 0.5
    assert np.allclose(p[below], u[below] * core.BELOW_FLOOR)
    assert np.array_equal(p[~below], core.fit(X, u, y, NAMES, "transaction").predict(X[~below], u[~below]))
    assert p[below].max() < 0.5 * core.BELOW_FLOOR <= 0.5


def test_refit_returns_a_reranker_fitted_on_every_label_with_the_gate_of_the_share():
    ids, X, u, y = _labelled(600)
    share = core.train_and_gate(ids, X, u, y, NAMES, "transaction")
    refit = core.train_and_gate(ids, X, u, y, NAMES, "transaction", refit=True)
    assert refit.gate == share.gate and refit.n_train == 600 and share.n_train < 600
    assert np.array_equal(refit.reranker.predict(X, u), core.fit(X, u, y, NAMES, "transaction").predict(X, u))
    # the manifest's gate says which: the measured model's labels, and whether the version is another
    assert refit.gate_dict()["refit"] is True and share.gate_dict()["refit"] is False
    assert refit.gate_dict()["n_fit"] == share.n_train == share.gate_dict()["n_train"]
    assert refit.gate_dict()["n_train"] == 600


class _Fixed:
    """A re-ranker returning given scores (the gate reads only its predictions)."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float64)

    def predict(self, X, unsupervised):
        return self.scores


def _biased_gain_random_loss():
    """60 queue-chosen items the re-ranker orders perfectly and the unsupervised score badly, and 20
    random ones where it is the other way round."""
    rng = np.random.default_rng(4)
    y = np.array([1, 0] * 40, dtype=np.int8)
    noise = rng.random(80)
    reranked = np.where(y == 1, 0.6 + 0.4 * noise, 0.4 * noise)
    unsupervised = noise.copy()
    random = np.arange(80) >= 60
    reranked[random], unsupervised[random] = unsupervised[random], reranked[random]
    selection = np.where(random, "random", "top").tolist()
    return reranked, unsupervised, y, selection


def test_gate_refuses_a_gain_on_the_chosen_items_that_the_random_ones_contradict():
    reranked, u, y, selection = _biased_gain_random_loss()
    X = np.zeros((len(y), 1))
    gate = core.gate(_Fixed(reranked), X, u, y, selection)
    assert gate.gain > core.MIN_GAIN  # the held-out share as a whole shows a gain...
    assert (
        gate.random_only["n_test"] == 20 and gate.random_only["gain"] < -core.MIN_GAIN
    )  # ...its random part a loss
    assert not gate.promoted
    assert "random" in gate.reason and "loss" in gate.reason
    # the same figures without the random part's loss: promoted
    fine = core.gate(_Fixed(reranked), X, u, y, ["top"] * 60 + ["uncertain"] * 20)
    assert fine.promoted and fine.random_only is None
    assert "no random labels with both classes" in fine.reason


def test_gate_names_too_few_random_labels():
    reranked, u, y, _ = _biased_gain_random_loss()
    gate = core.gate(_Fixed(reranked), np.zeros((80, 1)), u, y, ["random"] * 5 + ["top"] * 75)
    assert gate.random_only is None and "no random labels with both classes" in gate.reason


def test_select_draws_the_random_share_above_the_floor_only():
    candidates = _candidates()
    chosen = select(candidates, set(), 50, seed=2, threshold=0.5, random_min_score=0.9)
    random = chosen.filter(pl.col("reason") == "random")
    assert random.height == 10 and random["score"].min() >= 0.9
    # too few above the floor: the rest of the batch is uncertain, and the batch is full
    few = candidates.with_columns(score=pl.when(pl.col("target_id") == "c1").then(0.99).otherwise(0.1))
    short = select(few, set(), 20, seed=2, threshold=0.1, random_min_score=0.9)
    assert short.height == 20
    assert dict(short["reason"].value_counts().iter_rows()) == {"top": 8, "uncertain": 12}


def test_select_uncertain_reranked_items_are_nearest_the_rerankers_cut():
    candidates = _candidates(rerank=True)
    chosen = select(candidates, set(), 20, rerank_threshold=0.05)
    uncertain = chosen.filter(pl.col("reason") == "uncertain")["rerank_score"].to_numpy()
    assert np.abs(uncertain - 0.05).max() < 0.01


def test_a_training_share_without_one_class_is_refused_with_its_own_message():
    ids, X, u, _y = _labelled(200)
    test = core.held_out(ids)
    # every false positive falls in the held-out share: enough labels in all, none left to learn one class
    y = np.where(test, (np.arange(200) % 2).astype(np.int8), 1).astype(np.int8)
    assert (y == 0).sum() >= core.MIN_PER_CLASS and (y[~test] == 1).all()
    with pytest.raises(core.TooFewLabels) as refused:
        core.train_and_gate(ids, X, u, y, NAMES, "incident")
    message = str(refused.value)
    assert message.startswith("an incident re-ranker cannot be fitted")
    assert "outside the held-out share" in message and "hold no false positive" in message


def test_verdict_says_when_the_version_was_refitted_on_the_held_out_labels_too():
    from bankanom_pipeline.reranking.feedback_loop import verdict

    ids, X, u, y = _labelled(600)
    trained = core.train_and_gate(ids, X, u, y, NAMES, "transaction", refit=True)
    metadata = {
        "trained": True,
        "promoted": True,
        "version": "transaction_reranker-1",
        "reason": trained.gate.reason,
        "gate": trained.gate_dict(),
    }
    refitted = verdict(metadata)
    assert refitted["promoted"] and refitted["outcome"].startswith(
        f"promoted transaction_reranker-1: {trained.gate.reason}"
    )
    assert refitted["outcome"].endswith(
        "; this version was then refitted on all 600, those held-out labels included"
    )
    # the model the gate measured is the version: nothing to add
    measured = core.train_and_gate(ids, X, u, y, NAMES, "transaction")
    plain = verdict({**metadata, "reason": measured.gate.reason, "gate": measured.gate_dict()})
    assert plain["outcome"] == f"promoted transaction_reranker-1: {measured.gate.reason}"
    assert verdict({"trained": False, "reason": "too few"})["outcome"] == "refused, none trained: too few"
