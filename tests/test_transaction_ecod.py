"""The frozen ECOD detector (detection/ecod.py): PyOD's ECOD score of a row scored alone against the
training data, the same whatever else is in the call, saved and loaded through the registry, and only
where a source's config asks for it (the log detectors are untouched)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import skew

from bankanom_pipeline.detection.config import MODEL_NAMES, DetectionConfig, default_detection_config
from bankanom_pipeline.detection.ecod import FrozenEcod, HourPrior, StudentTail
from bankanom_pipeline.detection.models import ALL_TRAINERS, ensemble_with_ecod
from bankanom_pipeline.detection.registry import Registry
from bankanom_pipeline.detection.scoring import ECOD, IF, LOF, score, score_values
from bankanom_pipeline.detection.sources import LOGS, TRANSACTIONS
from bankanom_pipeline.detection.space import FeatureSpace
from bankanom_pipeline.transactions.scoring import top_features


def _pyod_ecod(train: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """PyOD 3.6.7's ECOD.decision_function after fit(train), spelled out: the ECDFs of the training
    rows plus the batch (P(X <= x), ties counted in full), the skew of the same, the larger of the
    two tails and the skew's tail, summed over features, for the batch's rows."""
    x = np.concatenate([train, batch])
    n = len(x)
    u_left = -np.log((x[None, :, :] <= x[:, None, :]).sum(axis=1) / n)
    u_right = -np.log((x[None, :, :] >= x[:, None, :]).sum(axis=1) / n)
    s = np.sign(skew(x, axis=0))
    u_skew = u_left * -np.sign(s - 1) + u_right * np.sign(s + 1)
    o = np.maximum(np.maximum(u_left, u_right), u_skew)
    return o.sum(axis=1)[-len(batch) :]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    train = np.column_stack(
        [
            rng.lognormal(0, 1, 600),  # right-skewed
            -rng.lognormal(0, 1, 600),  # left-skewed
            rng.integers(0, 4, 600).astype(float),  # ties
            (rng.random(600) < 0.05).astype(float),  # a rare flag
        ]
    )
    rows = np.column_stack(
        [
            rng.lognormal(0, 1.5, 40),
            -rng.lognormal(0, 1.5, 40),
            rng.integers(-1, 6, 40).astype(float),
            (rng.random(40) < 0.5).astype(float),
        ]
    )
    return train, rows


def test_a_rows_score_is_pyods_for_that_row_scored_alone(data):
    train, rows = data
    ecod = FrozenEcod().fit(train)
    ours = -ecod.score_samples(rows)
    alone = np.array([_pyod_ecod(train, rows[i : i + 1])[0] for i in range(len(rows))])
    np.testing.assert_allclose(ours, alone, rtol=1e-12, atol=1e-12)
    # PyOD's own batch scores move with the batch; these do not
    assert not np.allclose(_pyod_ecod(train, rows), alone)


def test_a_rows_score_does_not_depend_on_the_rows_scored_with_it(data):
    train, rows = data
    ecod = FrozenEcod(["right", "left", "both", "right"], max_weight=1.0).fit(train)
    batch = ecod.score_samples(rows)
    for i in range(len(rows)):
        assert ecod.score_samples(rows[i : i + 1])[0] == batch[i]
    assert np.array_equal(ecod.score_samples(rows[::-1])[::-1], batch)


def test_one_sided_tails_ignore_the_harmless_end_and_the_extreme_feature_counts_twice(data):
    train, _ = data
    low, high = train[:, 0].min() - 1, train[:, 0].max() + 1
    right = FrozenEcod(["right", "both", "both", "both"]).fit(train)
    both = FrozenEcod().fit(train)
    probe = np.array([[low, -1.0, 1.0, 0.0], [high, -1.0, 1.0, 0.0]])
    assert right.feature_scores(probe)[0, 0] == 0.0  # below every training value: not suspicious
    assert right.feature_scores(probe)[1, 0] == pytest.approx(np.log(len(train) + 1))
    assert both.feature_scores(probe)[0, 0] == pytest.approx(np.log(len(train) + 1))
    weighted = FrozenEcod(max_weight=1.0).fit(train)
    per_feature = both.feature_scores(probe)
    np.testing.assert_allclose(
        -weighted.score_samples(probe), per_feature.sum(axis=1) + per_feature.max(axis=1), rtol=1e-12
    )


def test_bad_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match="tails"):
        FrozenEcod(["up"])
    with pytest.raises(ValueError, match="2 tails for 3 features"):
        FrozenEcod(["left", "right"]).fit(np.ones((5, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        FrozenEcod().fit(np.array([[1.0], [np.nan]]))
    with pytest.raises(ValueError, match="trained on 2 features"):
        FrozenEcod().fit(np.ones((5, 2))).feature_scores(np.ones((1, 3)))


def test_the_log_source_trains_and_scores_only_its_two_models():
    """The log detectors and their ensemble are untouched: no ECOD section, the same two models, and
    score() gives no ECOD column."""
    assert LOGS.config.ecod is None and LOGS.config.model_names == MODEL_NAMES
    assert default_detection_config().thresholds.ensemble_ecod_weight is None
    assert TRANSACTIONS.config.model_names == (*MODEL_NAMES, ECOD)


def test_an_ecod_section_needs_its_thresholds():
    raw = TRANSACTIONS.config.model_dump()
    raw["thresholds"]["ecod"] = None
    with pytest.raises(ValueError, match=r"thresholds\.ecod"):
        DetectionConfig.model_validate(raw)
    raw = TRANSACTIONS.config.model_dump()
    raw["ecod"]["tails"] = {"hour_sin": "left"}
    with pytest.raises(ValueError, match="hour_sin"):
        DetectionConfig.model_validate(raw)


def _frame(rng: np.random.Generator, rows: int) -> pl.DataFrame:
    config = TRANSACTIONS.config
    columns = {}
    for name in config.feature_names:
        if name.startswith(("new_", "is_")):
            columns[name] = (rng.random(rows) < 0.05).astype(float)
        elif name in ("tx_1h", "tx_24h", "login_attempts", "travel_km", "travel_speed_kmh"):
            columns[name] = rng.poisson(0.3, rows).astype(float)
        elif name in ("hour_share", "drain_share", "drain_share_1h", "channel_share"):
            columns[name] = rng.random(rows)
        elif name == "hour_of_day":
            columns[name] = rng.uniform(0, 24, rows)
        elif name in ("history_count", "debit_history_count"):
            columns[name] = rng.poisson(20, rows).astype(float)
        elif name == "novelty":
            columns[name] = rng.binomial(3, 0.02, rows).astype(float)
        else:
            columns[name] = rng.normal(0, 1, rows)
    if "hour_near_count" in columns:  # the account's earlier transactions near this hour: some of all
        columns["hour_near_count"] = rng.binomial(columns["history_count"].astype(int), 0.2).astype(float)
    return pl.DataFrame(columns)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The transaction source's three detectors trained on synthetic features, saved to a registry and
    loaded back (skops trusts FrozenEcod by name)."""
    config = TRANSACTIONS.config
    frame = _frame(np.random.default_rng(5), 5000)
    registry = Registry(tmp_path_factory.mktemp("models"))
    versions = {}
    for name in config.model_names:
        space = FeatureSpace.fit(
            frame, config.model_features(name), config.scaling.min_scale, config.model_clip(name)
        )
        detector = ALL_TRAINERS[name](space.matrix(frame), space, config)
        versions[name] = registry.save(
            detector, params={}, window=("2026-01-01", "2026-01-01"), rows=frame.height, metrics={}
        ).version
    registry.promote(versions)
    return registry.load_current(), frame


def test_the_registry_round_trips_ecod_and_scoring_reads_it(trained):
    detectors, frame = trained
    config = TRANSACTIONS.config
    assert set(detectors) == {IF, LOF, ECOD}
    result = score(frame, detectors, config)
    assert result.ecod is not None and result.ecod.min() >= 0 and result.ecod.max() <= 1
    expected = ensemble_with_ecod(_base(result, config), result.ecod, config.thresholds)
    np.testing.assert_array_equal(result.ensemble, expected)
    np.testing.assert_array_equal(result.is_anomaly, expected >= config.thresholds.ensemble)
    assert set(result.frame().columns) >= {"ecod_score", "ecod_flag"}
    values = frame.to_numpy()
    by_values = score_values(values, frame.columns, detectors, config)
    np.testing.assert_array_equal(by_values.ecod, result.ecod)
    without = {k: v for k, v in detectors.items() if k != ECOD}
    with pytest.raises(ValueError, match="no promoted ECOD model"):
        score(frame, without, config)


def _base(result, config):
    from bankanom_pipeline.detection.models import ensemble

    return ensemble(result.isolation_forest, result.local_outlier_factor, config.thresholds)


def test_scores_and_top_features_of_a_row_are_the_same_alone_and_in_a_batch(trained):
    detectors, frame = trained
    config = TRANSACTIONS.config
    batch = score(frame[:300], detectors, config)
    batch_top = top_features(frame[:300], detectors).to_list()
    for i in (0, 17, 299):
        alone = score(frame[i : i + 1], detectors, config)
        assert alone.ecod[0] == batch.ecod[i]
        assert alone.ensemble[0] == batch.ensemble[i]
        assert alone.isolation_forest[0] == batch.isolation_forest[i]
        assert top_features(frame[i : i + 1], detectors).to_list()[0] == batch_top[i]


def test_top_features_name_the_feature_ecod_finds_most_extreme(trained):
    detectors, frame = trained
    row = frame[:1].with_columns(login_attempts=pl.lit(9.0))
    top = top_features(row, detectors).to_list()[0]
    assert top[0]["feature"] == "login_attempts" and top[0]["deviation"] > 0


def test_last_bit_differences_land_on_the_same_step_once_rounded(data):
    """The API's features and the pipeline's can differ in the last bits (running sums over other
    window layouts); ECOD's distributions are steps, so unrounded a training value nudged by 1e-14
    scores differently, rounded it does not."""
    train, _ = data
    value = train[:1].copy()
    nudged = value + np.array([[1e-14, 0, 0, 0]])
    exact = FrozenEcod(["right"] * 4).fit(train)
    assert exact.score_samples(value)[0] != exact.score_samples(nudged)[0]
    rounded = FrozenEcod(["right"] * 4, decimals=9).fit(train)
    assert rounded.score_samples(value)[0] == rounded.score_samples(nudged)[0]
    assert TRANSACTIONS.config.ecod.decimals == 9


def _prior(window: int = 2, weight: float = 2.0) -> HourPrior:
    """Columns count, total, hour (0, 1, 2) of an unscaled matrix."""
    return HourPrior(0, 1, 2, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), window, weight)


def test_the_hour_is_judged_by_the_accounts_habit_with_the_populations_as_a_prior():
    """HourPrior: p = (count + weight * share(hour)) / (total + weight). A long daytime history makes a
    first 2 a.m. transaction surprising where a night owl's is not; with no history the population's
    rarity of 2 a.m. decides, so 2 a.m. is more surprising than 2 p.m. for a new account."""
    rng = np.random.default_rng(0)
    hours = np.where(rng.random(4000) < 0.01, rng.integers(0, 5, 4000), rng.integers(8, 21, 4000))
    train = np.column_stack([rng.integers(0, 10, 4000), np.full(4000, 40), hours]).astype(float)
    ecod = FrozenEcod(["right", "none", "none"], hour_prior=_prior()).fit(train)
    near_2am = sum(np.mean(hours == h) for h in (0, 1, 2, 3, 4))
    np.testing.assert_allclose(ecod.hour_shares_[2], near_2am)
    probe = np.array(
        [
            [0, 40, 2],  # daytime account, 40 earlier transactions, none near 2 a.m.
            [6, 40, 2],  # night owl: 6 of its 40 near 2 a.m.
            [0, 0, 2],  # a new account at 2 a.m.
            [0, 0, 14],  # a new account at 2 p.m.
            [30, 40, 14],  # an afternoon account in the afternoon
        ],
        dtype=float,
    )
    surprise = ecod._prepared(probe)[:, 0]
    np.testing.assert_allclose(surprise[0], -np.log(2 * near_2am / 42))
    assert surprise[0] > surprise[2] > surprise[3] > surprise[4]
    assert surprise[0] > surprise[1] + 3
    scores = ecod.feature_scores(probe)
    assert scores[0, 0] > scores[1, 0] and (scores[:, 1:] == 0).all()  # total and hour are inputs only


def test_excess_counts_each_feature_beyond_its_floor(data):
    train, rows = data
    plain = FrozenEcod(["right"] * 4).fit(train)
    floored = FrozenEcod(["right"] * 4, max_weight=1.0, excess=0.5).fit(train)
    beyond = np.maximum(plain.feature_scores(rows) - 0.5, 0)
    np.testing.assert_allclose(
        -floored.score_samples(rows), beyond.sum(axis=1) + beyond.max(axis=1), rtol=1e-12
    )
    np.testing.assert_array_equal(floored.feature_scores(rows), plain.feature_scores(rows))  # the evidence
    with pytest.raises(ValueError, match="excess"):
        FrozenEcod(excess=-1)
    with pytest.raises(ValueError, match="hour_prior"):
        FrozenEcod(hour_prior=_prior(weight=0))
    with pytest.raises(ValueError, match="outside"):
        FrozenEcod(hour_prior=HourPrior(0, 1, 5, (0.0,) * 3, (1.0,) * 3)).fit(np.ones((5, 3)))


def test_the_trained_hour_prior_undoes_the_feature_spaces_scaling(trained):
    """Through the transaction config, the registry and back: the hour's surprise is computed from the
    raw count, total and hour, whatever the feature space's robust scaling made of them."""
    detectors, frame = trained
    ecod = detectors[ECOD]
    prior = ecod.estimator.hour_prior
    names = ecod.space.names
    assert (names[prior.count], names[prior.total], names[prior.hour]) == (
        "hour_near_count",
        "history_count",
        "hour_of_day",
    )
    hour = np.floor(frame["hour_of_day"].to_numpy()).astype(int)
    per_hour = np.bincount(hour, minlength=24) / len(hour)
    shares = np.array([sum(per_hour[(h + d) % 24] for d in range(-2, 3)) for h in range(24)])
    np.testing.assert_allclose(ecod.estimator.hour_shares_, shares, atol=1e-12)
    expected = -np.log(
        (frame["hour_near_count"].to_numpy() + 2 * shares[hour]) / (frame["history_count"].to_numpy() + 2)
    )
    got = ecod.estimator._prepared(ecod.space.matrix(frame))[:, prior.count]
    np.testing.assert_allclose(got, expected, atol=1e-8)


def test_the_hour_prior_must_name_untransformed_ecod_features():
    raw = TRANSACTIONS.config.model_dump()
    raw["ecod"]["hour_prior"]["total"] = "tx_24h"  # not an ECOD feature
    with pytest.raises(ValueError, match="hour_prior"):
        DetectionConfig.model_validate(raw)
    raw = TRANSACTIONS.config.model_dump()
    raw["features"]["history_count"] = "log1p"
    with pytest.raises(ValueError, match="transform none"):
        DetectionConfig.model_validate(raw)


def test_a_geometric_tail_scores_each_step_above_the_usual_count_as_rare_again():
    """Login attempts: 1 usually, 2 for 2%, never more in training; 3 and 4 are each a step rarer
    (k * -ln q), where the empirical right tail stops at the rarest training value's share."""
    train = np.where(np.arange(1000) < 980, 1.0, 2.0)[:, None]
    ecod = FrozenEcod(["geometric"]).fit(train)
    per_step = -np.log(20 / 1000)
    got = ecod.feature_scores(np.array([[0.0], [1.0], [2.0], [3.0], [4.0]]))[:, 0]
    np.testing.assert_allclose(got, [0, 0, per_step, 2 * per_step, 3 * per_step])
    scaled = FrozenEcod(["geometric"]).fit(train * 40 - 3)  # the feature space's scaling: same steps
    np.testing.assert_allclose(scaled.feature_scores(np.array([[4.0 * 40 - 3]]))[:, 0], [3 * per_step])
    right = FrozenEcod(["right"]).fit(train).feature_scores(np.array([[4.0]]))[0, 0]
    assert right == pytest.approx(np.log(1001))  # the empirical tail: no rarer than one in n + 1
    with pytest.raises(ValueError, match="geometric"):
        FrozenEcod(["geometric"]).fit(np.ones((10, 1)))


def test_a_z_on_a_long_history_counts_in_students_tail_beyond_the_empirical_floor():
    """StudentTail: z = 6 on 40 earlier debits is rarer than one in n + 1 (the empirical tail's floor);
    the same z on 3 earlier debits is not; below 3 earlier debits only the empirical tail counts."""
    from scipy.stats import t

    rng = np.random.default_rng(2)
    train = np.column_stack([rng.normal(0, 1, 2000), rng.integers(0, 60, 2000)]).astype(float)
    student = StudentTail(0, 1, (0.0, 0.0), (1.0, 1.0))
    plain = FrozenEcod(["right", "none"]).fit(train)
    ecod = FrozenEcod(["right", "none"], student=student).fit(train)
    probe = np.array([[6.0, 40], [6.0, 3], [6.0, 2], [-1.0, 40]])
    got = ecod.feature_scores(probe)[:, 0]
    floor = np.log(len(train) + 1)
    assert got[0] == pytest.approx(-t.logsf(6 * np.sqrt(40 / 41), 39)) and got[0] > floor + 5
    assert got[1] == pytest.approx(floor)  # t with 2 degrees of freedom: not beyond the empirical tail
    assert got[2] == pytest.approx(floor)
    assert got[3] == plain.feature_scores(probe)[3, 0]  # an ordinary value: the empirical tail
    with pytest.raises(ValueError, match="student"):
        FrozenEcod(student=StudentTail(0, 4, (0.0, 0.0), (1.0, 1.0))).fit(train)


def test_the_trained_student_tail_undoes_the_feature_spaces_scaling(trained):
    from scipy.stats import t

    detectors, frame = trained
    ecod = detectors[ECOD]
    student = ecod.estimator.student
    assert (ecod.space.names[student.value], ecod.space.names[student.count]) == (
        "debit_amount_z",
        "debit_history_count",
    )
    # the z it reads is the debit prior's, worked out here from the raw features and the frozen prior
    mu, w2, b2 = ecod.estimator.debit_params_
    n = frame["debit_history_count"].to_numpy()
    mean, sd = frame["debit_log_mean"].to_numpy(), frame["debit_log_sd"].to_numpy()
    k, strength = w2 / b2, ecod.estimator.debit_prior.strength
    s2 = (strength * w2 + np.where(n >= 2, sd**2 * (n - 1), 0)) / (strength + n)
    z = (frame["log_amount"].to_numpy() - (n * mean + k * mu) / (n + k)) / np.sqrt(s2 * (1 + 1 / (n + k)))
    z = np.where(frame["is_credit"].to_numpy() > 0.5, 0.0, z)
    expected = np.where(n >= 3, -t.logsf(z * np.sqrt(n / (n + 1)), np.maximum(n - 1, 1)), 0.0)
    got = student.surprise(ecod.estimator._prepared(ecod.space.matrix(frame)))
    np.testing.assert_allclose(got, np.maximum(expected, 0), atol=1e-6)
    raw = TRANSACTIONS.config.model_dump()
    raw["ecod"]["student"]["count"] = "tx_24h"  # not an ECOD feature
    with pytest.raises(ValueError, match="student"):
        DetectionConfig.model_validate(raw)


def test_a_debit_is_judged_with_the_populations_debits_as_a_prior():
    from bankanom_pipeline.detection.ecod import DebitPrior

    # columns: the z it replaces, log amount, credit, earlier debits, their mean and sd (unscaled)
    prior = DebitPrior(0, 1, 2, 3, 4, 5, (0.0,) * 6, (1.0,) * 6, strength=3.0)
    rng = np.random.default_rng(3)
    rows = 4000
    usual = rng.normal(4.0, 1.0, rows)  # each row's account: its usual log amount
    train = np.column_stack(
        [
            np.zeros(rows),
            usual + rng.normal(0, 0.6, rows),
            (rng.random(rows) < 0.2).astype(float),
            rng.integers(0, 60, rows).astype(float),
            usual + rng.normal(0, 0.1, rows),
            np.full(rows, 0.6),
        ]
    )
    mu, w2, b2 = prior.fit(train)
    debit = train[:, 2] < 0.5
    assert mu == pytest.approx(train[debit, 1].mean())
    assert w2 == pytest.approx(0.36) and b2 == pytest.approx(1.0, rel=0.15)

    def z(log_amount, credit, n, mean, sd):
        return prior.scaled_z(np.array([[0.0, log_amount, credit, n, mean, sd]]), (mu, w2, b2))[0]

    tenfold = np.log(10)
    # no history: judged against everyone's debits, so a tenfold debit of a typical account is unusual
    # only mildly, and a debit tenfold above the population's usual amount more
    assert 0 < z(4.0 + tenfold, 0, 0, 0, 0) < z(mu + 2 * tenfold, 0, 0, 0, 0)
    # a long steady history: close to the plain z against it, and above the no-history one
    long = z(4.0 + tenfold, 0, 40, 4.0, 0.6)
    assert long == pytest.approx(tenfold / 0.6, rel=0.1) and long > z(4.0 + tenfold, 0, 0, 0, 0)
    # three debits weigh between none and forty; a credit has no debit z
    assert z(4.0 + tenfold, 0, 0, 0, 0) < z(4.0 + tenfold, 0, 3, 4.0, 0.6) < long
    assert z(9.0, 1, 40, 4.0, 0.6) == 0.0
    # a first delivery of new accounts (no long history): the debits' own spread for both
    short = train.copy()
    short[:, 3] = 2
    spread = train[short[:, 2] < 0.5, 1].var()
    assert prior.fit(short) == pytest.approx((train[debit, 1].mean(), spread, spread))
    credits = train.copy()
    credits[:, 2] = 1.0
    assert prior.fit(credits) == (0.0, 1.0, 1.0)  # nothing to score
