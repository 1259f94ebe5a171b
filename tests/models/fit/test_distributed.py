"""Training on a Dask cluster (models/fit/distributed.py) against the single-machine training on the same split."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.config import FeatureConfig
from features.partitioned import build_partitioned_features, partition_data_dir, read_partitioned_features
from features.simulator import generate
from models.fit import training
from models.fit.distributed import DaskFeaturePartitions, _iteration_losses, early_stopping_iteration
from models.fit.encoding import FeatureEncoder, add_category_counts, category_counts
from models.fit.split import READINESS_TARGET
from models.fit.stage import STAGE_TARGET
from models.package.tracking import drift_reference_rows
from tests.models.conftest import fast_config

NOW = pd.Timestamp("2026-06-01T00:00:00Z")
#: Enough leads that two fits of the same rows (one per machine, one on two workers) are compared on
#: hundreds of converted test snapshots (714 here), not on a handful: with 2,500 leads (~80 converted test
#: snapshots) two equally good models differ by 0.01-0.02 ROC AUC from test-set noise alone.
N_LEADS = 8000
CONFIG = fast_config(split={"test_fraction": 0.3, "valid_fraction": 0.2})


# -- pieces that need no cluster ----------------------------------------------------------------------------


def _binary_data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=1.5, size=n) > 1.2).astype(int)
    return X, y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_emulated_early_stopping_picks_lightgbms_iteration_and_losses(n_classes: int) -> None:
    X, y = _binary_data(1, 3000)
    Xv, yv = _binary_data(2, 1500)
    if n_classes == 3:
        y, yv = y + (X[:, 2] > 0.8), yv + (Xv[:, 2] > 0.8)
    params = {"objective": "binary", "metric": "binary_logloss"}
    if n_classes == 3:
        params = {"objective": "multiclass", "num_class": 3, "metric": "multi_logloss"}
    params.update(learning_rate=0.3, num_leaves=31, verbosity=-1, seed=1, deterministic=True, num_threads=1)
    metric = params["metric"]
    evals: dict = {}
    stopped = lgb.train(
        params,
        lgb.Dataset(X, y),
        num_boost_round=300,
        valid_sets=[lgb.Dataset(Xv, yv)],
        callbacks=[lgb.early_stopping(10, verbose=False), lgb.record_evaluation(evals)],
    )
    full = lgb.train(params, lgb.Dataset(X, y), num_boost_round=300)
    losses = _iteration_losses(full, Xv, yv, n_classes)
    assert stopped.best_iteration < 290  # early stopping did stop
    best, evaluated = early_stopping_iteration(losses, 10)
    assert best == stopped.best_iteration
    np.testing.assert_allclose(losses[:evaluated], evals["valid_0"][metric], rtol=1e-6, atol=1e-9)


def test_early_stopping_iteration_without_a_stop_keeps_the_best_of_all() -> None:
    assert early_stopping_iteration([0.5, 0.4, 0.3, 0.35, 0.29], rounds=3) == (5, 5)
    assert early_stopping_iteration([0.5, 0.4, 0.41, 0.42, 0.43, 0.2], rounds=3) == (2, 5)


def test_encoder_from_counts_added_over_parts_equals_the_encoder_of_the_whole() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "a": rng.choice(["x", "y", "z", None], size=500, p=[0.5, 0.3, 0.15, 0.05]),
            "b": rng.integers(0, 40, size=500).astype(str),
            "n": rng.normal(size=500),
        }
    )
    whole = FeatureEncoder(["a", "b"], ["n"], max_categories=12, min_category_count=3).fit(frame)
    total: dict = {}
    for part in np.array_split(np.arange(len(frame)), 4):
        add_category_counts(total, category_counts(frame.iloc[part], ["a", "b"]))
    summed = FeatureEncoder(["a", "b"], ["n"], max_categories=12, min_category_count=3).fit_counts(total)
    assert summed.categories_ == whole.categories_
    np.testing.assert_array_equal(summed.transform(frame), whole.transform(frame))
    with pytest.raises(ValueError, match="no category counts"):
        FeatureEncoder(["a", "c"], ["n"]).fit_counts(total)


# -- on a LocalCluster of 2 workers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dask-train")
    generate(N_LEADS, 11, root / "plain")
    partition_data_dir(root / "plain", root / "parts", 3)
    build_partitioned_features(root / "parts", root / "features", FeatureConfig(snapshot_every_days=14), now=NOW)
    return root / "features"


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None) as c,
        Client(c) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def single(features_dir: Path) -> training.PreparedTraining:
    frame, spec = read_partitioned_features(features_dir)
    return training.prepare_training(frame, spec, CONFIG)


@pytest.fixture(scope="module")
def on_dask(features_dir: Path, client) -> training.PreparedTraining:
    assert len(client.scheduler_info()["workers"]) == 2
    return training.prepare_partitioned_training(DaskFeaturePartitions.open(client, features_dir), CONFIG)


@pytest.mark.slow
def test_the_split_on_the_cluster_selects_the_single_machine_rows(single, on_dask) -> None:
    assert on_dask.split.summary() == single.split.summary()
    r, s = single.split.readiness, single.split.stage
    pd.testing.assert_frame_equal(on_dask.split.readiness.valid, r.valid)
    pd.testing.assert_frame_equal(on_dask.split.readiness.test, r.test)
    assert s is not None and on_dask.split.stage is not None
    pd.testing.assert_frame_equal(on_dask.split.stage.valid, s.valid)
    pd.testing.assert_frame_equal(on_dask.split.stage.test, s.test)
    # The training rows stay on the workers: the client holds their keys only.
    assert on_dask.split.readiness.train.index.equals(r.train.index)
    assert len(on_dask.split.readiness.train.columns) < 10 < len(r.train.columns)
    assert training.test_ids_digest(on_dask.split.readiness.test[["lead_id", "as_of"]].reset_index(drop=True)) == (
        training.test_ids_digest(r.test[["lead_id", "as_of"]].reset_index(drop=True))
    )
    assert on_dask.encoder.categories_ == single.encoder.categories_
    assert on_dask.leakage is not None and single.leakage is not None
    assert on_dask.leakage.features == single.leakage.features
    assert on_dask.client_sample is not None
    pd.testing.assert_frame_equal(on_dask.client_sample, r.train)  # under leakage.max_rows: every training row


@pytest.mark.slow
def test_boosters_trained_on_dask_match_the_single_machine_models_on_the_same_test_rows(single, on_dask) -> None:
    test = single.split.readiness.test
    y = test[READINESS_TARGET].to_numpy()
    local = training.fit_readiness(single)
    dask = training.fit_readiness(on_dask)
    auc_local, auc_dask = (
        roc_auc_score(y, local.predict_readiness(test)),
        roc_auc_score(y, dask.predict_readiness(test)),
    )
    assert abs(auc_dask - auc_local) <= 0.01, (auc_local, auc_dask)
    assert auc_dask > 0.7
    assert dask.best_iteration_ == dask.booster_.current_iteration() <= CONFIG.readiness.num_boost_round
    assert dask.calibration_method_ == local.calibration_method_ and dask.n_train_ == local.n_train_

    local_stage, dask_stage = training.fit_stage(single), training.fit_stage(on_dask)
    assert local_stage is not None and dask_stage is not None
    stage_test = single.split.stage.test  # type: ignore[union-attr]
    codes = dask_stage.label_codes(stage_test[STAGE_TARGET])

    def log_loss(model) -> float:
        p = np.clip(model.predict_proba(stage_test)[np.arange(len(codes)), codes], 1e-15, 1)
        return float(-np.log(p).mean())

    assert abs(log_loss(dask_stage) - log_loss(local_stage)) <= 0.01
    assert dask_stage.class_counts_ == local_stage.class_counts_

    # Evaluated, assembled and served like a single-machine model.
    result = training.evaluate_models(on_dask, dask, dask_stage, training.fit_baseline_models(on_dask, dask))
    assert result.readiness_metrics["leadscore"]["roc_auc"] == pytest.approx(auc_dask)
    np.testing.assert_allclose(result.model.predict_readiness(test), dask.predict_readiness(test))
    # The drift reference logged with the model: the single-machine reference rows, pulled from the workers.
    local_result = training.evaluate_models(single, local, local_stage, {})
    columns = ["lead_id", "as_of", *single.spec.features]
    reference, local_reference = drift_reference_rows(result), drift_reference_rows(local_result)
    assert reference is not None and local_reference is not None and len(reference) > 100
    pd.testing.assert_frame_equal(reference[columns], local_reference[columns])
    assert result.model.predict(test.head(50))["stage"].isin(single.split.stage_labels).all()
