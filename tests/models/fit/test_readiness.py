from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.fit.readiness import ReadinessModel
from models.fit.split import temporal_split
from models.judge.evaluation import binary_log_loss, expected_calibration_error
from tests.models.conftest import fast_config

PARAMS = {"num_threads": 1, "verbosity": -1, "num_leaves": 15, "learning_rate": 0.1, "min_data_in_leaf": 40}


@pytest.fixture(scope="module")
def split(feature_frame):
    df, spec = feature_frame
    return temporal_split(df, fast_config(), horizon_days=spec.horizon_days).readiness, spec


def _fit(split, spec, **kwargs) -> ReadinessModel:
    params = {**PARAMS, **kwargs.pop("params", {})}
    return ReadinessModel(spec.categorical, spec.numeric, params=params, num_boost_round=100, **kwargs).fit(
        split.train, split.train["converted"], split.valid, split.valid["converted"]
    )


def test_calibration_repairs_a_miscalibrated_booster(split) -> None:
    r, spec = split
    # Training on all converted but only a quarter of the non-converted snapshots (case-control sampling)
    # makes the booster's own probabilities far too high; calibration on valid must repair them.
    rng = np.random.default_rng(0)
    keep = (r.train["converted"] == 1).to_numpy() | (rng.random(len(r.train)) < 0.25)
    train = r.train.loc[keep]
    model = ReadinessModel(spec.categorical, spec.numeric, params=PARAMS, num_boost_round=100, calibration="sigmoid")
    model.fit(train, train["converted"], r.valid, r.valid["converted"])
    y = r.test["converted"].to_numpy()
    raw, calibrated = model.predict_uncalibrated(r.test), model.predict_readiness(r.test)
    assert raw.mean() > y.mean() + 0.15
    assert binary_log_loss(y, calibrated) < binary_log_loss(y, raw) - 0.05
    assert expected_calibration_error(y, calibrated) < expected_calibration_error(y, raw) / 3
    assert abs(calibrated.mean() - y.mean()) < 0.03


def test_sigmoid_parameters_reproduce_sklearn(split) -> None:
    r, spec = split
    model = _fit(r, spec, calibration="sigmoid")
    expected = model.calibrator_.predict_proba(model.encoder_.transform(r.test))[:, 1]
    assert model.calibration_method_ == "sigmoid"
    assert np.allclose(model.predict_readiness(r.test), expected, atol=1e-12)


def test_isotonic_is_centered_and_keeps_the_ranking(split) -> None:
    from sklearn.metrics import roc_auc_score

    r, spec = split
    model = _fit(r, spec, calibration="isotonic")
    cal = model.calibration_
    iso = model.calibrator_.calibrated_classifiers_[0].calibrators[0]
    # Knots: strictly increasing, and at each knot the value of scikit-learn's isotonic fit.
    assert (np.diff(cal.knots_x) > 0).all() and (np.diff(cal.knots_y) > 0).all()
    assert np.allclose(iso.predict(cal.knots_x), cal.knots_y)
    # Inside the outer knots the map is strictly increasing: no ties, so ranking equals the raw margin's.
    margin = model.predict_margin(r.test)
    inside = (margin > cal.knots_x[0]) & (margin < cal.knots_x[-1])
    y = r.test["converted"].to_numpy()
    p = model.predict_readiness(r.test)
    assert len(np.unique(p[inside])) == len(np.unique(margin[inside]))
    assert roc_auc_score(y[inside], p[inside]) == pytest.approx(roc_auc_score(y[inside], margin[inside]))
    # And it stays close to scikit-learn's step function.
    assert np.abs(p - model.calibrator_.predict_proba(model.encoder_.transform(r.test))[:, 1]).mean() < 0.02


def test_auto_calibration_follows_calibration_set_size(split) -> None:
    r, spec = split
    n, pos = len(r.valid), int(r.valid["converted"].sum())
    assert _fit(r, spec, isotonic_min_rows=n, isotonic_min_positives=pos).calibration_method_ == "isotonic"
    assert _fit(r, spec, isotonic_min_rows=n + 1).calibration_method_ == "sigmoid"
    assert _fit(r, spec, isotonic_min_positives=pos + 1).calibration_method_ == "sigmoid"


def test_early_stopping_keeps_only_best_trees(split) -> None:
    r, spec = split
    model = _fit(r, spec, params={"learning_rate": 0.3}, early_stopping_rounds=5)
    assert model.best_iteration_ < 100
    assert model.booster_.num_trees() == model.best_iteration_


def test_unseen_and_missing_categories_score_finitely(split) -> None:
    r, spec = split
    model = _fit(r, spec)
    rows = r.test.head(5).copy()
    novel = rows.copy()
    novel["industry"] = "aerospace"  # never seen in training
    novel["region"] = pd.array([None] * 5, dtype="str")
    novel["company_size"] = pd.Categorical(["huge"] * 5, categories=["huge"])
    p = model.predict_readiness(novel)
    assert np.isfinite(p).all() and ((p > 0) & (p < 1)).all()
    # Unseen categories are treated exactly like missing ones.
    missing = rows.copy()
    missing["industry"] = pd.array([None] * 5, dtype="str")
    missing["region"] = pd.array([None] * 5, dtype="str")
    missing["company_size"] = pd.Categorical([None] * 5, categories=["small"])
    assert np.allclose(p, model.predict_readiness(missing))


def test_predict_shapes_and_scores(split) -> None:
    r, spec = split
    model = _fit(r, spec)
    proba = model.predict_proba(r.test)
    assert proba.shape == (len(r.test), 2)
    assert np.allclose(proba.sum(axis=1), 1.0)
    score = model.score_0_100(r.test)
    assert score.dtype == np.int64 and score.min() >= 0 and score.max() <= 100
    # Percentile score: on the calibration snapshots themselves it spreads evenly over 0-100.
    valid_score = model.score_0_100(r.valid)
    assert abs(np.mean(valid_score >= 90) - 0.10) < 0.02
    assert abs(np.median(valid_score) - 50) <= 2
    probability = _fit(r, spec, score="probability").score_0_100(r.test)
    assert np.array_equal(probability, np.rint(proba[:, 1] * 100).astype(int))
    importance = model.feature_importance()
    assert set(importance.index) == set(spec.features)
    assert importance.index[0] in {"visits_30d", "industry", "emails_90d", "days_since_activity"}


def test_fit_input_errors(split) -> None:
    r, spec = split
    model = ReadinessModel(spec.categorical, spec.numeric, params=PARAMS)
    with pytest.raises(ValueError, match="only 0 and 1"):
        model.fit(r.train, r.train["converted"] * 2, r.valid, r.valid["converted"])
    tiny = r.valid.head(30)
    with pytest.raises(ValueError, match=r"calibration \(valid\) set has"):
        model.fit(r.train, r.train["converted"], tiny, np.zeros(len(tiny), dtype=int))
    with pytest.raises(ValueError, match="lacks feature columns"):
        model.fit(r.train.drop(columns=["x1"]), r.train["converted"], r.valid, r.valid["converted"])
