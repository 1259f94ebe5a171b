from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.config import TrainConfig
from models.fit.encoding import FeatureEncoder
from models.fit.split import temporal_split
from models.fit.stage import STAGE_TARGET, StageModel, recorded_stage_labels, stage_labels
from tests.models.conftest import fast_config

BUCKETS = TrainConfig().stage.buckets


@pytest.mark.parametrize(
    ("days", "observed", "expected"),
    [
        (0.0, 10.0, "decision"),
        (30.0, 400.0, "decision"),
        (30.5, 400.0, "consideration"),
        (31.0, 400.0, "consideration"),
        (90.0, 400.0, "consideration"),
        (91.0, 400.0, "awareness"),
        (365.0, 400.0, "awareness"),
        (366.0, 400.0, "not_in_market"),
        (np.nan, 365.0, "not_in_market"),
        (np.nan, 800.0, "not_in_market"),
        (45.0, 50.0, "consideration"),  # an observed conversion is known even with little history
    ],
)
def test_stage_label_edges(days: float, observed: float, expected: str) -> None:
    labels = stage_labels([days], [observed], BUCKETS)
    assert labels[0] == expected


@pytest.mark.parametrize("observed", [0.0, 29.0, 100.0, 364.9])
def test_unconverted_with_short_history_is_undetermined(observed: float) -> None:
    labels = stage_labels([np.nan], [observed], BUCKETS)
    assert labels.isna()[0]


def test_labels_are_ordered_categorical_in_bucket_order() -> None:
    labels = stage_labels(pd.Series([400.0, 5.0]), pd.Series([500.0, 500.0]), [("soon", 10), ("later", None)])
    assert list(labels.categories) == ["soon", "later"]
    assert labels.ordered
    assert list(labels) == ["later", "soon"]


def test_stage_label_input_errors() -> None:
    with pytest.raises(ValueError, match="observed_days must be a number >= 0"):
        stage_labels([1.0], [np.nan], BUCKETS)
    with pytest.raises(ValueError, match="days_to_conversion must be >= 0"):
        stage_labels([-2.0], [10.0], BUCKETS)
    with pytest.raises(ValueError, match="open-ended"):
        stage_labels([1.0], [10.0], [("a", 10), ("b", 20)])


def test_recorded_stage_labels_order() -> None:
    df = pd.DataFrame({"crm": ["b", None, "a", "b"]})
    labels, order = recorded_stage_labels(df, "crm", None, ["x", "y"])
    assert order == ["a", "b"]
    assert labels.isna()[1] and labels[0] == "b"
    _, order = recorded_stage_labels(df, "crm", None, ["b", "a", "c"])
    assert order == ["b", "a", "c"]  # bucket names cover the values: their order wins
    with pytest.raises(ValueError, match="missing from recorded_stage_order"):
        recorded_stage_labels(df, "crm", ["a"], [])
    with pytest.raises(ValueError, match="does not have"):
        recorded_stage_labels(df, "nope", None, [])


def test_stage_model_learns_and_orders_classes(long_feature_frame) -> None:
    df, spec = long_feature_frame
    config = fast_config()
    split = temporal_split(df, config, horizon_days=spec.horizon_days)
    s = split.stage
    assert s is not None
    model = StageModel(
        split.stage_labels,
        spec.categorical,
        spec.numeric,
        params={"num_threads": 1, "verbosity": -1},
        num_boost_round=60,
    ).fit(s.train, s.train[STAGE_TARGET], s.valid, s.valid[STAGE_TARGET])
    proba = model.predict_proba(s.test)
    assert proba.shape == (len(s.test), 4)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert list(model.classes_) == ["decision", "consideration", "awareness", "not_in_market"]
    # Signal: the predicted chance of converting soon ranks the truly early converters higher.
    truth = s.test[STAGE_TARGET].astype(str).to_numpy()
    soon = proba[:, 0] + proba[:, 1]
    assert soon[np.isin(truth, ["decision", "consideration"])].mean() > soon[truth == "not_in_market"].mean() + 0.05
    assert sum(model.class_counts_.values()) == len(s.train)


def test_stage_model_rejects_bad_labels(long_feature_frame) -> None:
    df, spec = long_feature_frame
    X = df.head(200)
    model = StageModel(["a", "b"], spec.categorical, spec.numeric, params={"num_threads": 1, "verbosity": -1})
    with pytest.raises(ValueError, match="outside the stage labels"):
        model.fit(X, ["a"] * 199 + ["zzz"])
    with pytest.raises(ValueError, match="single stage"):
        model.fit(X, ["a"] * 200)
    with pytest.raises(ValueError, match="undetermined"):
        model.fit(X, ["a"] * 199 + [None])


def test_stage_model_shares_a_given_encoder(long_feature_frame) -> None:
    df, spec = long_feature_frame
    X = df.head(500)
    encoder = FeatureEncoder(spec.categorical, spec.numeric).fit(X)
    y = np.where(X["visits_30d"] > 1, "a", "b")
    model = StageModel(
        ["a", "b"], spec.categorical, spec.numeric, params={"num_threads": 1, "verbosity": -1}, encoder=encoder
    )
    model.fit(X, y)
    assert model.encoder_ is encoder


def test_decision_weights_name_rare_stages_that_plain_argmax_never_names() -> None:
    from models.fit.stage import fit_decision_weights, macro_f1_codes

    rng = np.random.default_rng(0)
    n = 20_000
    truth = rng.choice(3, size=n, p=[0.03, 0.07, 0.90])
    # calibrated-looking probabilities: informative but never above the majority class for the rare ones
    signal = np.eye(3)[truth] * 0.25
    raw = signal + rng.dirichlet([1, 2, 30], size=n)
    proba = raw / raw.sum(axis=1, keepdims=True)
    plain = np.argmax(proba, axis=1)
    weights = fit_decision_weights(proba, truth)
    weighted = np.argmax(proba * weights, axis=1)
    assert weights[2] == 1.0  # the majority class keeps weight 1
    assert macro_f1_codes(truth, weighted, 3) > macro_f1_codes(truth, plain, 3) + 0.05
    assert set(np.unique(weighted)) == {0, 1, 2}


def test_macro_f1_codes_matches_sklearn() -> None:
    from sklearn.metrics import f1_score

    from models.fit.stage import macro_f1_codes

    rng = np.random.default_rng(1)
    truth, pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    assert macro_f1_codes(truth, pred, 4) == pytest.approx(f1_score(truth, pred, average="macro"))
