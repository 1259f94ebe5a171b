"""SmallBatchPredictor: the C API path returns exactly what Booster.predict returns."""

from __future__ import annotations

import pickle

import lightgbm as lgb
import numpy as np
import pytest

from models.fit.fastpredict import SmallBatchPredictor

N_FEATURES = 6


def _data(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES))
    X[:, 5] = rng.integers(0, 4, size=n)  # a categorical column (codes)
    X[rng.random(size=(n, N_FEATURES)) < 0.1] = np.nan  # missing values take the trees' default branches
    return X


def _train(objective: str, *, early_stopping: bool = False) -> lgb.Booster:
    X = _data(600, 1)
    signal = np.nan_to_num(X[:, 0]) + 0.5 * np.nan_to_num(X[:, 1]) + (np.nan_to_num(X[:, 5]) == 2)
    params: dict[str, object] = {"objective": objective, "num_leaves": 7, "verbose": -1, "seed": 3}
    if objective == "multiclass":
        y = np.digitize(signal, np.quantile(signal, [0.25, 0.5, 0.75]))
        params["num_class"] = 4
    else:
        y = (signal > np.median(signal)).astype(int)
    train = lgb.Dataset(X[:450], y[:450], categorical_feature=[5], free_raw_data=False)
    if not early_stopping:
        return lgb.train(params, train, num_boost_round=25)
    valid = lgb.Dataset(X[450:], y[450:], reference=train)
    booster = lgb.train(
        {**params, "learning_rate": 0.3},
        train,
        num_boost_round=200,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(3, verbose=False)],
        keep_training_booster=True,  # keeps the trees after the best iteration
    )
    assert 0 < booster.best_iteration < booster.current_iteration()  # early stopping left extra trees
    return booster


@pytest.fixture(scope="module")
def binary() -> lgb.Booster:
    return _train("binary")


@pytest.fixture(scope="module")
def multiclass() -> lgb.Booster:
    return _train("multiclass")


@pytest.mark.parametrize("n", [1, 7, 64])
def test_binary_predictions_equal_booster_predict(binary: lgb.Booster, n: int) -> None:
    X = _data(n, 2)
    fast = SmallBatchPredictor(binary)
    np.testing.assert_array_equal(fast.predict(X, "normal"), binary.predict(X))
    np.testing.assert_array_equal(fast.predict(X, "raw"), binary.predict(X, raw_score=True))
    contrib = fast.predict(X, "contrib")
    np.testing.assert_array_equal(contrib, binary.predict(X, pred_contrib=True))
    assert contrib.shape == (n, N_FEATURES + 1)


@pytest.mark.parametrize("n", [1, 9])
def test_multiclass_predictions_equal_booster_predict(multiclass: lgb.Booster, n: int) -> None:
    X = _data(n, 4)
    fast = SmallBatchPredictor(multiclass)
    proba = fast.predict(X, "normal")
    assert proba.shape == (n, 4)
    np.testing.assert_array_equal(proba, multiclass.predict(X))
    np.testing.assert_array_equal(fast.predict(X, "raw"), multiclass.predict(X, raw_score=True))
    np.testing.assert_array_equal(fast.predict(X, "contrib"), multiclass.predict(X, pred_contrib=True))


def test_best_iteration_is_used_as_booster_predict_uses_it() -> None:
    booster = _train("binary", early_stopping=True)
    X = _data(20, 5)
    fast = SmallBatchPredictor(booster).predict(X, "raw")
    np.testing.assert_array_equal(fast, booster.predict(X, raw_score=True))
    # and it differs from using every tree, so the check above could fail
    assert not np.array_equal(fast, booster.predict(X, raw_score=True, num_iteration=booster.current_iteration()))


def test_loaded_booster_and_non_contiguous_input(binary: lgb.Booster) -> None:
    loaded = lgb.Booster(model_str=binary.model_to_string())
    X = np.asfortranarray(_data(5, 6))
    np.testing.assert_array_equal(SmallBatchPredictor(loaded).predict(X, "raw"), binary.predict(X, raw_score=True))
    strided = _data(10, 7)[::2]
    np.testing.assert_array_equal(SmallBatchPredictor(loaded).predict(strided), binary.predict(strided))


def test_single_rows_from_many_threads_at_once(binary: lgb.Booster, multiclass: lgb.Booster) -> None:
    """The endpoint predicts from its event loop and its thread pool at the same time."""
    from concurrent.futures import ThreadPoolExecutor

    X = _data(200, 8)
    fast_b, fast_m = SmallBatchPredictor(binary), SmallBatchPredictor(multiclass)

    def row(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        one = X[i : i + 1]
        return fast_b.predict(one, "contrib"), fast_b.predict(one, "raw"), fast_m.predict(one)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(row, range(len(X))))
    np.testing.assert_array_equal(np.vstack([r[0] for r in results]), binary.predict(X, pred_contrib=True))
    np.testing.assert_array_equal(np.concatenate([r[1] for r in results]), binary.predict(X, raw_score=True))
    np.testing.assert_array_equal(np.vstack([r[2] for r in results]), multiclass.predict(X))


def test_matrices_over_max_rows_go_to_booster_predict_with_the_same_shapes(
    binary: lgb.Booster, multiclass: lgb.Booster
) -> None:
    X = _data(10, 9)
    capped_b, capped_m = SmallBatchPredictor(binary, max_rows=5), SmallBatchPredictor(multiclass, max_rows=5)
    for kind in ("normal", "raw", "contrib"):
        np.testing.assert_array_equal(capped_b.predict(X, kind), SmallBatchPredictor(binary).predict(X, kind))
        np.testing.assert_array_equal(capped_m.predict(X, kind), SmallBatchPredictor(multiclass).predict(X, kind))
    np.testing.assert_array_equal(capped_b.predict(X[:5], "raw"), binary.predict(X[:5], raw_score=True))


def test_empty_and_wrong_shapes(binary: lgb.Booster) -> None:
    fast = SmallBatchPredictor(binary)
    assert fast.predict(np.empty((0, N_FEATURES)), "raw").shape == (0,)
    assert fast.predict(np.empty((0, N_FEATURES)), "contrib").shape == (0, N_FEATURES + 1)
    with pytest.raises(ValueError, match="6 feature columns, got shape \\(1, 5\\)"):
        fast.predict(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="got shape \\(6,\\)"):
        fast.predict(np.zeros(N_FEATURES))
    with pytest.raises(ValueError, match="num_threads"):
        SmallBatchPredictor(binary, num_threads=0)


def test_scoring_model_small_and_large_batches_agree(trained) -> None:
    """ScoringModel takes the C API path up to SMALL_BATCH_ROWS rows and Booster.predict above: same numbers."""
    from models.fit.scoring import SMALL_BATCH_ROWS

    model = trained.model
    Xe = model.encode(trained.split.test.head(3 * SMALL_BATCH_ROWS))
    assert len(Xe) > SMALL_BATCH_ROWS
    big_margin = model.margin_from_encoded(Xe)
    small_margin = np.concatenate([model.margin_from_encoded(Xe[i : i + 10]) for i in range(0, len(Xe), 10)])
    np.testing.assert_array_equal(small_margin, big_margin)
    np.testing.assert_array_equal(model.contributions_from_encoded(Xe[:5]), model.contributions_from_encoded(Xe)[:5])
    big_stage = model.stage_proba_from_encoded(Xe)
    np.testing.assert_array_equal(model.stage_proba_from_encoded(Xe[:7]), big_stage[:7])
    restored = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(restored.margin_from_encoded(Xe[:3]), big_margin[:3])
    np.testing.assert_array_equal(restored.stage_proba_from_encoded(Xe[:3]), big_stage[:3])
