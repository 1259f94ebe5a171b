from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.baselines import HIST_GB, LOGISTIC, fit_baselines, signed_log1p
from models.split import temporal_split
from tests.models.conftest import fast_config


@pytest.fixture(scope="module")
def fitted(feature_frame):
    df, spec = feature_frame
    r = temporal_split(df, fast_config(), horizon_days=spec.horizon_days).readiness
    models = fit_baselines(
        r.train,
        r.train["converted"],
        r.valid,
        r.valid["converted"],
        categorical=spec.categorical,
        numeric=spec.numeric,
        config=fast_config().baselines,
        calibration_method="sigmoid",
        seed=0,
    )
    return models, r


def test_both_baselines_learn(fitted) -> None:
    from sklearn.metrics import roc_auc_score

    models, r = fitted
    assert set(models) == {LOGISTIC, HIST_GB}
    for model in models.values():
        p = model.predict_readiness(r.test)
        assert p.shape == (len(r.test),)
        assert roc_auc_score(r.test["converted"], p) > 0.7


def test_unseen_categories_do_not_crash(fitted) -> None:
    models, r = fitted
    rows = r.test.head(4).copy()
    rows["industry"] = "aerospace"
    rows["region"] = pd.array([None] * 4, dtype="str")
    rows["company_size"] = pd.Categorical(["huge"] * 4)
    for model in models.values():
        p = model.predict_readiness(rows)
        assert np.isfinite(p).all()


def test_hist_gb_stops_early_on_the_validation_snapshots(fitted) -> None:
    from sklearn.metrics import log_loss

    models, r = fitted
    pipeline = models[HIST_GB].pipeline
    hgb = pipeline.named_steps["model"]
    Xv = pipeline.named_steps["prep"].transform(models[HIST_GB]._inputs(r.valid))
    # The recorded validation loss is the loss on our temporal valid snapshots, not a random slice of train.
    assert -hgb.validation_score_[-1] == pytest.approx(log_loss(r.valid["converted"], hgb.predict_proba(Xv)[:, 1]))


def test_signed_log1p() -> None:
    out = signed_log1p(np.array([[-np.e + 1, 0.0, np.e - 1, np.nan]]))
    assert np.allclose(out[0, :3], [-1.0, 0.0, 1.0])
    assert np.isnan(out[0, 3])
