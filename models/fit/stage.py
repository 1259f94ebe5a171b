"""Stage model: where a prospect is in its buying cycle, as ordered classes.

Stages are buckets of time to conversion after ``as_of`` (default ``decision`` <= 30 days,
``consideration`` 31-90, ``awareness`` 91-365, ``not_in_market`` beyond 365 or never). A bucket covers
``(previous max_days, max_days]``, so with whole days 30 is ``decision`` and 31 ``consideration``;
fractional days fall on the same side (30.5 is ``consideration``).

A label is *determined* when the conversion was observed (its bucket is then known), or when no
conversion was seen during at least the largest finite bound (365 days) of observed history: then it is
the open-ended last bucket. Otherwise (no conversion yet, less history) the label is unknown: the
prospect may still convert within the remaining buckets. :func:`stage_labels` returns missing there and
the split (:mod:`models.fit.split`) only uses snapshots with the full window observed, so the model never
learns from the selection "only converted rows of recent snapshots".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from models.config import StageBucket
from models.fit.encoding import FeatureEncoder
from models.fit.readiness import train_booster

STAGE_TARGET = "stage_label"


def _bucket_pairs(buckets: Sequence[StageBucket | tuple[str, float | None] | Mapping[str, Any]]) -> list[tuple]:
    pairs: list[tuple[str, float | None]] = []
    for b in buckets:
        if isinstance(b, StageBucket):
            pairs.append((b.name, b.max_days))
        elif isinstance(b, Mapping):
            pairs.append((str(b["name"]), b.get("max_days")))
        else:
            pairs.append((str(b[0]), b[1]))
    # Validate with the config model so the rules live in one place.
    from models.config import StageConfig

    StageConfig(buckets=[StageBucket(name=n, max_days=m) for n, m in pairs])
    return pairs


def _float_array(values: Any, what: str) -> np.ndarray:
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if not pd.api.types.is_numeric_dtype(series.dtype):
        try:
            series = pd.to_numeric(series, errors="raise")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{what} must be numeric: {exc}") from exc
    return series.to_numpy(dtype=np.float64, na_value=np.nan)


def stage_labels(
    days_to_conversion: Any,
    observed_days: Any,
    buckets: Sequence[StageBucket | tuple[str, float | None] | Mapping[str, Any]],
) -> pd.Categorical:
    """Stage label per snapshot from time to conversion (ordered Categorical; missing = undetermined).

    Args:
        days_to_conversion: days from ``as_of`` to the first conversion after it, NaN if none observed.
        observed_days: days of data after ``as_of``.
        buckets: ordered ``(name, max_days)`` buckets, the last open-ended (``max_days=None``).

    Raises:
        ValueError: negative or missing ``observed_days``, negative ``days_to_conversion``, or bad buckets.
    """
    pairs = _bucket_pairs(buckets)
    names = [n for n, _ in pairs]
    bounds = np.array([float(m) for _, m in pairs[:-1]], dtype=np.float64)
    days = _float_array(days_to_conversion, "days_to_conversion")
    observed = _float_array(observed_days, "observed_days")
    if days.shape != observed.shape:
        raise ValueError(f"days_to_conversion ({days.shape}) and observed_days ({observed.shape}) differ in length")
    if np.isnan(observed).any() or (observed < 0).any():
        i = int(np.argmax(np.isnan(observed) | (observed < 0)))
        raise ValueError(f"observed_days must be a number >= 0 (position {i}: {observed[i]})")
    if (days < 0).any():
        i = int(np.nanargmin(days))
        raise ValueError(f"days_to_conversion must be >= 0 or missing (position {i}: {days[i]})")
    codes = np.full(len(days), -1, dtype=np.int64)
    seen = ~np.isnan(days)
    # First bucket whose bound is >= days: (previous, max] intervals; beyond every bound -> the open bucket.
    codes[seen] = np.searchsorted(bounds, days[seen], side="left")
    never = ~seen & (observed >= bounds[-1])
    codes[never] = len(names) - 1
    return pd.Categorical.from_codes(codes, categories=pd.Index(names), ordered=True)


def recorded_stage_labels(
    df: pd.DataFrame, column: str, order: Sequence[str] | None, bucket_names: Sequence[str]
) -> tuple[pd.Categorical, list[str]]:
    """Stage labels from a column recording the stage per snapshot, and the class order.

    The order is ``order`` when given (every value must be in it), else the bucket names when they cover
    every recorded value, else the sorted recorded values.
    """
    if column not in df.columns:
        raise ValueError(f"stage.use_recorded_stage_column names '{column}', which the feature table does not have")
    values = df[column]
    present = sorted({str(v) for v in values.dropna().unique()})
    if order is not None:
        unknown = [v for v in present if v not in order]
        if unknown:
            raise ValueError(f"recorded stage column '{column}' has values {unknown} missing from recorded_stage_order")
        classes = list(order)
    elif set(present) <= set(bucket_names):
        classes = list(bucket_names)
    else:
        classes = present
    text = values.astype(object).where(values.notna(), None)
    labels = pd.Categorical([None if v is None else str(v) for v in text], categories=classes, ordered=True)
    return labels, classes


def macro_f1_codes(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Macro F1 over ``n_classes`` integer-coded classes (classes absent from both count as 0)."""
    cm = np.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1.mean())


def fit_decision_weights(
    proba: np.ndarray, truth: np.ndarray, grid: np.ndarray | None = None, passes: int = 3
) -> np.ndarray:
    """Per-class multipliers ``w`` so that ``argmax(proba * w)`` maximises macro F1 on held-out rows.

    Why: with rare buying stages (a few percent of snapshots are within 90 days of buying) the plain
    argmax of calibrated probabilities names the majority stage for nearly every lead, which tells
    sales nothing. The probabilities stay calibrated and are served as they are; only the named stage
    uses the weights. The most frequent class keeps weight 1 (the rule is scale-invariant); the others
    are set by coordinate ascent over a log-spaced grid.
    """
    n_classes = proba.shape[1]
    grid = np.exp(np.linspace(-2.0, 6.0, 41)) if grid is None else grid
    weights = np.ones(n_classes)
    reference = int(np.argmax(np.bincount(truth, minlength=n_classes)))
    best = macro_f1_codes(truth, np.argmax(proba, axis=1), n_classes)
    for _ in range(passes):
        improved = False
        for k in range(n_classes):
            if k == reference:
                continue
            for value in grid:
                trial = weights.copy()
                trial[k] = value
                score = macro_f1_codes(truth, np.argmax(proba * trial, axis=1), n_classes)
                if score > best + 1e-12:
                    best, weights, improved = score, trial, True
        if not improved:
            break
    return weights


class StageModel(ClassifierMixin, BaseEstimator):
    """Multiclass LightGBM over ordered stage labels.

    Args:
        labels: class names in stage order; ``classes_`` and the ``predict_proba`` columns follow it.
        categorical, numeric: feature columns.
        params: LightGBM parameters (``objective``/``num_class``/``metric`` are set here).
        num_boost_round, early_stopping_rounds: boosting rounds; early stopping on multi log loss when
            a validation set is given.
        encoder: a fitted :class:`FeatureEncoder` to share with the readiness model (else fitted here).
        max_categories, min_category_count: for a new encoder.
        decision_rule: ``"macro_f1"`` names the stage by ``argmax(proba * decision_weights_)`` with
            weights fitted on the validation set (see :func:`fit_decision_weights`); ``"argmax"`` uses
            the plain argmax. Probabilities are the same either way.
    """

    def __init__(
        self,
        labels: Sequence[str] = (),
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
        num_boost_round: int = 200,
        early_stopping_rounds: int = 20,
        encoder: FeatureEncoder | None = None,
        max_categories: int = 1000,
        min_category_count: int = 1,
        decision_rule: str = "macro_f1",
    ) -> None:
        self.labels = labels
        self.categorical = categorical
        self.numeric = numeric
        self.params = params
        self.num_boost_round = num_boost_round
        self.early_stopping_rounds = early_stopping_rounds
        self.encoder = encoder
        self.max_categories = max_categories
        self.min_category_count = min_category_count
        self.decision_rule = decision_rule

    def _codes(self, y: Any, what: str) -> np.ndarray:
        values = pd.Series(np.asarray(y, dtype=object))
        if values.isna().any():
            raise ValueError(f"{what} has undetermined (missing) stage labels; drop those snapshots first")
        codes = pd.Index(list(self.labels), dtype=object).get_indexer(pd.Index(values.map(str), dtype=object))
        if (codes < 0).any():
            bad = sorted(set(values[codes < 0].map(str)))
            raise ValueError(f"{what} has labels {bad[:5]} outside the stage labels {list(self.labels)}")
        return codes.astype(np.int64)

    def fit(
        self, X_train: pd.DataFrame, y_train: Any, X_valid: pd.DataFrame | None = None, y_valid: Any = None
    ) -> StageModel:
        """Train on ``X_train`` (labels by name); early-stop on ``X_valid`` when given."""
        if len(self.labels) < 2:
            raise ValueError(f"a stage model needs at least two labels, got {list(self.labels)}")
        y_tr = self._codes(y_train, "y_train")
        if len(np.unique(y_tr)) < 2:
            raise ValueError("the stage training set holds a single stage; a classifier needs at least two")
        self.encoder_ = self.encoder or FeatureEncoder(
            self.categorical, self.numeric, self.max_categories, self.min_category_count
        ).fit(X_train)
        enc = self.encoder_
        valid = None
        if X_valid is not None and y_valid is not None and len(X_valid) > 0:
            valid = (enc.transform(X_valid), self._codes(y_valid, "y_valid"))
        booster, best_iteration, evals = train_booster(
            self.booster_params(),
            enc.transform(X_train),
            y_tr,
            valid[0] if valid is not None else None,
            valid[1] if valid is not None else None,
            feature_names=enc.feature_names_out_,
            categorical_indices=enc.categorical_indices_,
            num_boost_round=self.num_boost_round,
            early_stopping_rounds=self.early_stopping_rounds,
        )
        counts = np.bincount(y_tr, minlength=len(self.labels))
        return self._finish(booster, best_iteration, evals, counts, X_valid, valid)

    def booster_params(self) -> dict[str, Any]:
        """The LightGBM parameters the booster is trained with (``params`` plus objective, classes, metric)."""
        params = dict(self.params or {})
        params.update(objective="multiclass", num_class=len(self.labels), metric="multi_logloss")
        return params

    def label_codes(self, y: Any, what: str = "y") -> np.ndarray:
        """Stage names -> class codes in ``labels`` order (errors name ``what``)."""
        return self._codes(y, what)

    def fit_trained_booster(
        self,
        booster: lgb.Booster,
        best_iteration: int,
        evals: dict[str, Any],
        class_counts: Sequence[int] | np.ndarray,
        X_valid: pd.DataFrame | None = None,
        y_valid: Any = None,
    ) -> StageModel:
        """Finish the fit from a booster trained elsewhere (e.g. on Dask) on ``class_counts`` rows per label.

        ``encoder`` must be the fitted encoder the booster was trained on; the decision weights are fitted on
        ``X_valid`` as :meth:`fit` does.
        """
        if self.encoder is None:
            raise ValueError("fit_trained_booster needs the fitted encoder the booster was trained on (encoder=...)")
        if len(class_counts) != len(self.labels):
            raise ValueError(f"class_counts has {len(class_counts)} entries for {len(self.labels)} stage labels")
        self.encoder_ = self.encoder
        valid = None
        if X_valid is not None and y_valid is not None and len(X_valid) > 0:
            valid = (self.encoder_.transform(X_valid), self._codes(y_valid, "y_valid"))
        return self._finish(booster, best_iteration, evals, np.asarray(class_counts), X_valid, valid)

    def _finish(
        self,
        booster: lgb.Booster,
        best_iteration: int,
        evals: dict[str, Any],
        class_counts: np.ndarray,
        X_valid: pd.DataFrame | None,
        valid: tuple[np.ndarray, np.ndarray] | None,
    ) -> StageModel:
        enc = self.encoder_
        self.booster_, self.best_iteration_, self.evals_result_ = booster, best_iteration, evals
        self.class_counts_ = dict(zip(self.labels, [int(c) for c in class_counts], strict=True))
        self.feature_names_ = list(enc.feature_names_out_)
        self.n_features_in_ = len(self.feature_names_)
        if self.decision_rule not in ("macro_f1", "argmax"):
            raise ValueError(f"decision_rule must be 'macro_f1' or 'argmax', got {self.decision_rule!r}")
        self.decision_weights_ = np.ones(len(self.labels))
        if self.decision_rule == "macro_f1" and valid is not None and X_valid is not None:
            self.decision_weights_ = fit_decision_weights(self.predict_proba(X_valid), valid[1])
        return self

    @property
    def classes_(self) -> np.ndarray:
        return np.array(list(self.labels), dtype=object)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "booster_")

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Probabilities, shape (n, n_labels), columns in ``labels`` order."""
        Xe = self.encoder_.transform(X)
        return np.asarray(self.booster_.predict(Xe)).reshape(len(Xe), len(self.labels))

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Stage names by the decision rule (see ``decision_rule``)."""
        return self.classes_[np.argmax(self.predict_proba(X) * self.decision_weights_, axis=1)]
