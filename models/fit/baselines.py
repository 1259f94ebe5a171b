"""Baseline readiness models trained on the same temporal split as LightGBM.

- ``logistic_regression``: numeric features get a signed log transform ``sign(x) * log1p(|x|)`` (counts
  and recencies are heavy-tailed), median imputation with missing-value indicators and standard
  scaling; categoricals get a constant "missing" fill and one-hot encoding with
  ``handle_unknown="ignore"``; then an L2 logistic regression.
- ``hist_gradient_boosting``: scikit-learn ``HistGradientBoostingClassifier`` with native categorical
  support (categoricals ordinal-encoded, unknown and missing -> NaN, at most 250 categories per
  column with rarer ones grouped), early stopping on the same validation snapshots as LightGBM.

Both are calibrated on the validation snapshots with the same method as the readiness model, so their
log loss, Brier score and ECE compare fairly; the ranking metrics are unaffected (monotone calibration).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler

from models.config import BaselinesConfig

LOGISTIC = "logistic_regression"
HIST_GB = "hist_gradient_boosting"
_MISSING_CATEGORY = "__missing__"
_HGB_MAX_CATEGORIES = 250  # HistGradientBoosting needs category codes below max_bins (255)


def signed_log1p(X: Any) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: tames heavy tails, keeps order and sign, maps 0 to 0, keeps NaN."""
    arr = np.asarray(X, dtype=np.float64)
    return np.sign(arr) * np.log1p(np.abs(arr))


def _categorical_as_object(X: pd.DataFrame, categorical: Sequence[str]) -> pd.DataFrame:
    """Categorical columns as object dtype with NaN for every kind of missing (what the encoders expect)."""
    out = X.copy()
    for col in categorical:
        values = X[col].astype(object)
        out[col] = values.where(values.notna(), np.nan)
    return out


class BaselineModel:
    """A fitted scikit-learn pipeline plus its probability calibrator, scoring feature tables."""

    def __init__(self, name: str, pipeline: Pipeline, categorical: Sequence[str], numeric: Sequence[str]) -> None:
        self.name = name
        self.pipeline = pipeline
        self.categorical = list(categorical)
        self.numeric = list(numeric)
        self.calibrator: CalibratedClassifierCV | None = None

    def _inputs(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in (*self.categorical, *self.numeric) if c not in X.columns]
        if missing:
            raise ValueError(f"{self.name}: input lacks feature columns {missing}")
        frame = X[[*self.categorical, *self.numeric]]
        frame = _categorical_as_object(frame, self.categorical)
        frame[self.numeric] = frame[self.numeric].astype(np.float64)
        return frame

    def calibrate(self, X_valid: pd.DataFrame, y_valid: Any, method: str) -> BaselineModel:
        self.calibrator = CalibratedClassifierCV(FrozenEstimator(self.pipeline), method=method).fit(
            self._inputs(X_valid), np.asarray(y_valid)
        )
        return self

    def predict_uncalibrated(self, X: pd.DataFrame) -> np.ndarray:
        return self.pipeline.predict_proba(self._inputs(X))[:, 1]

    def predict_readiness(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated probability when calibrated, else the pipeline's own."""
        model = self.calibrator if self.calibrator is not None else self.pipeline
        return model.predict_proba(self._inputs(X))[:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.predict_readiness(X)
        return np.column_stack([1 - p, p])


def make_logistic_pipeline(categorical: Sequence[str], numeric: Sequence[str], C: float, max_iter: int) -> Pipeline:
    numeric_steps = Pipeline(
        [
            ("log", FunctionTransformer(signed_log1p, feature_names_out="one-to-one")),
            ("impute", SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True)),
            ("scale", StandardScaler()),
        ]
    )
    categorical_steps = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", fill_value=_MISSING_CATEGORY)),
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ]
    )
    prep = ColumnTransformer(
        [("num", numeric_steps, list(numeric)), ("cat", categorical_steps, list(categorical))],
        sparse_threshold=0.3,
    )
    return Pipeline([("prep", prep), ("model", LogisticRegression(C=C, max_iter=max_iter))])


def _hgb_preprocessor(categorical: Sequence[str], numeric: Sequence[str]) -> ColumnTransformer:
    ordinal = OrdinalEncoder(
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
        max_categories=_HGB_MAX_CATEGORIES,
    )
    return ColumnTransformer(
        [("cat", ordinal, list(categorical)), ("num", "passthrough", list(numeric))],
        sparse_threshold=0.0,
    )


def fit_baselines(
    X_train: pd.DataFrame,
    y_train: Any,
    X_valid: pd.DataFrame,
    y_valid: Any,
    *,
    categorical: Sequence[str],
    numeric: Sequence[str],
    config: BaselinesConfig,
    calibration_method: str,
    seed: int,
) -> dict[str, BaselineModel]:
    """Fit and calibrate both baselines on the readiness train / valid snapshots."""
    y_tr, y_va = np.asarray(y_train), np.asarray(y_valid)
    out: dict[str, BaselineModel] = {}

    lr = config.logistic
    logistic = BaselineModel(
        LOGISTIC, make_logistic_pipeline(categorical, numeric, lr.C, lr.max_iter), categorical, numeric
    )
    logistic.pipeline.fit(logistic._inputs(X_train), y_tr)
    out[LOGISTIC] = logistic.calibrate(X_valid, y_va, calibration_method)

    hg = config.hist_gradient_boosting
    # A feature missing on every training row carries nothing a tree could split on, and scikit-learn's
    # binning fails on such a column (no distinct values): the HistGradientBoosting inputs leave it out.
    train_inputs = _categorical_as_object(X_train[[*categorical, *numeric]], categorical)
    empty = {c for c in (*categorical, *numeric) if train_inputs[c].isna().all()}
    hgb_categorical = [c for c in categorical if c not in empty]
    prep = _hgb_preprocessor(hgb_categorical, [c for c in numeric if c not in empty])
    placeholder = BaselineModel(HIST_GB, Pipeline([("prep", prep)]), categorical, numeric)
    Xt = prep.fit_transform(placeholder._inputs(X_train))
    Xv = prep.transform(placeholder._inputs(X_valid))
    hgb = HistGradientBoostingClassifier(
        learning_rate=hg.learning_rate,
        max_iter=hg.max_iter,
        max_leaf_nodes=hg.max_leaf_nodes,
        min_samples_leaf=hg.min_samples_leaf,
        l2_regularization=hg.l2_regularization,
        categorical_features=list(range(len(hgb_categorical))),
        early_stopping=True,
        n_iter_no_change=hg.n_iter_no_change,
        random_state=seed,
    )
    # Early stopping on the temporal validation snapshots, not a random slice of training rows.
    hgb.fit(Xt, y_tr, X_val=Xv, y_val=y_va)
    model = BaselineModel(HIST_GB, Pipeline([("prep", prep), ("model", hgb)]), categorical, numeric)
    out[HIST_GB] = model.calibrate(X_valid, y_va, calibration_method)
    return out
