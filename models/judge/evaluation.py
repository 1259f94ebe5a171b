"""Evaluation metrics for readiness (binary, calibrated) and stage (ordered multiclass) predictions.

Definitions
-----------
- ``roc_auc``: area under the ROC curve. ``pr_auc``: average precision (the step-wise area under the
  precision-recall curve, scikit-learn ``average_precision_score``; no optimistic interpolation).
  Both are NaN when the labels hold a single class.
- ``log_loss`` and ``brier``: mean binary log loss (probabilities clipped to [1e-15, 1 - 1e-15]) and
  mean squared error of the probability.
- ``ece``: expected calibration error over **equal-mass bins**: rows sorted by predicted probability
  are cut into ``n_bins`` groups of (nearly) equal size, and ECE = sum over bins of
  ``bin_share * |mean(y) - mean(p)|``. Equal-mass bins suit the skewed probabilities of a rare outcome,
  where equal-width bins would put almost every row in the first bin.
- ``lift_at_k`` / ``recall_at_k`` (k = 10, 20 percent): the ``ceil(k% * n)`` rows with the highest
  probabilities (ties broken by row order) are the "top"; lift = conversion rate in the top / base rate,
  recall = share of all conversions that are in the top.
- ``base_rate``: share of converted rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
)

from models.config import GradesConfig
from models.fit.scoring import GRADE_LETTERS, assign_grades, check_grade_cutoffs

READINESS_METRIC_KEYS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "brier",
    "ece",
    "lift_at_10",
    "recall_at_10",
    "lift_at_20",
    "recall_at_20",
    "base_rate",
)
_EPS = 1e-15


def _check_binary(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true)
    p = np.asarray(proba, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true and proba must be 1-D of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("cannot evaluate on zero rows")
    if not np.isin(y, [0, 1]).all():
        raise ValueError("y_true must hold only 0 and 1")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("proba must be finite probabilities in [0, 1]")
    return y.astype(np.int64), p


def binary_log_loss(y_true: Any, proba: Any) -> float:
    y, p = _check_binary(y_true, proba)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def calibration_bins(y_true: Any, proba: Any, n_bins: int = 10) -> pd.DataFrame:
    """Equal-mass bins of the sorted probabilities: rows, mean predicted and observed rate per bin."""
    y, p = _check_binary(y_true, proba)
    order = np.argsort(p, kind="stable")
    rows = []
    for idx in np.array_split(order, min(n_bins, len(p))):
        if len(idx):
            rows.append(
                {
                    "rows": len(idx),
                    "p_min": float(p[idx].min()),
                    "p_max": float(p[idx].max()),
                    "mean_predicted": float(p[idx].mean()),
                    "observed_rate": float(y[idx].mean()),
                }
            )
    return pd.DataFrame(rows)


def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = 10) -> float:
    """ECE over equal-mass bins (see the module docstring)."""
    bins = calibration_bins(y_true, proba, n_bins)
    weights = bins["rows"] / bins["rows"].sum()
    return float((weights * (bins["observed_rate"] - bins["mean_predicted"]).abs()).sum())


def top_fraction_metrics(y_true: Any, proba: Any, fraction: float) -> tuple[float, float]:
    """(lift, recall) of the top ``ceil(fraction * n)`` rows by probability."""
    y, p = _check_binary(y_true, proba)
    k = max(1, math.ceil(fraction * len(p)))
    top = np.argsort(-p, kind="stable")[:k]
    positives = y.sum()
    if positives == 0:
        return float("nan"), float("nan")
    rate_top = y[top].mean()
    return float(rate_top / y.mean()), float(y[top].sum() / positives)


def readiness_metrics(y_true: Any, proba: Any, n_bins: int = 10) -> dict[str, float]:
    """The readiness metric set, keys exactly :data:`READINESS_METRIC_KEYS` (see the module docstring)."""
    y, p = _check_binary(y_true, proba)
    both = 0 < y.sum() < len(y)
    out = {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": binary_log_loss(y, p),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p, n_bins),
    }
    for k in (10, 20):
        out[f"lift_at_{k}"], out[f"recall_at_{k}"] = top_fraction_metrics(y, p, k / 100)
    out["base_rate"] = float(y.mean())
    return out


def gains_curve(y_true: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative gains: (share of rows contacted, share of conversions captured), best-first."""
    y, p = _check_binary(y_true, proba)
    order = np.argsort(-p, kind="stable")
    captured = np.concatenate([[0.0], np.cumsum(y[order]) / max(y.sum(), 1)])
    contacted = np.arange(len(y) + 1) / len(y)
    return contacted, captured


# -- grades -------------------------------------------------------------------------------------------


def grade_cutoffs_from_config(config: GradesConfig, reference_proba: Any) -> dict[str, float]:
    """Probability cut-offs A, B, C: fixed (``probability`` mode) or quantiles of ``reference_proba``.

    In ``top_fraction`` mode, cut-off G is the ``1 - top_fractions[G]`` quantile of the reference
    (calibration-set) probabilities, so about that share of reference snapshots grade G or better.
    """
    if config.mode == "probability":
        assert config.cutoffs is not None
        return check_grade_cutoffs(config.cutoffs)
    p = np.asarray(reference_proba, dtype=np.float64)
    if len(p) == 0:
        raise ValueError("top_fraction grades need reference probabilities")
    cut = {g: float(np.quantile(p, 1 - config.top_fractions[g])) for g in GRADE_LETTERS[:-1]}
    return check_grade_cutoffs(cut)


def grade_table(y_true: Any, proba: Any, cutoffs: Mapping[str, float]) -> pd.DataFrame:
    """Conversion per grade: rows, share, conversions, conversion rate, mean probability, cut-off."""
    y, p = _check_binary(y_true, proba)
    cutoffs = check_grade_cutoffs(cutoffs)
    grades = assign_grades(p, cutoffs)
    rows = []
    for g in GRADE_LETTERS:
        mask = grades == g
        n = int(mask.sum())
        rows.append(
            {
                "grade": g,
                "min_probability": cutoffs.get(g, 0.0),
                "rows": n,
                "share": n / len(y),
                "conversions": int(y[mask].sum()),
                "conversion_rate": float(y[mask].mean()) if n else float("nan"),
                "mean_probability": float(p[mask].mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


# -- stage --------------------------------------------------------------------------------------------


def stage_metrics(
    y_true_labels: Any, proba: Any, labels: Sequence[str], weights: Sequence[float] | np.ndarray | None = None
) -> dict[str, Any]:
    """Accuracy, macro F1, multiclass log loss and the confusion matrix (rows = true, columns = predicted).

    The predicted stage is ``argmax(proba * weights)`` (plain argmax without weights), the rule the
    served model uses (see :func:`models.fit.stage.fit_decision_weights`).

    Returns:
        ``{"accuracy", "macro_f1", "log_loss", "n", "labels", "confusion_matrix", "support"}``; the
        matrix is a nested list in ``labels`` order.
    """
    labels = [str(s) for s in labels]
    truth = np.asarray(pd.Series(np.asarray(y_true_labels, dtype=object)).map(str), dtype=object)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape != (len(truth), len(labels)):
        raise ValueError(f"proba must have shape ({len(truth)}, {len(labels)}), got {p.shape}")
    unknown = sorted(set(truth) - set(labels))
    if unknown:
        raise ValueError(f"true stage labels {unknown[:5]} are not among {labels}")
    if len(truth) == 0:
        raise ValueError("cannot evaluate on zero rows")
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    predicted = np.array(labels, dtype=object)[np.argmax(p * w, axis=1)]
    codes = pd.Index(labels).get_indexer(pd.Index(truth))
    p_true = np.clip(p[np.arange(len(truth)), codes], _EPS, 1.0)
    cm = confusion_matrix(truth, predicted, labels=labels)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "macro_f1": float(f1_score(truth, predicted, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(-np.mean(np.log(p_true))),
        "n": len(truth),
        "labels": labels,
        "confusion_matrix": cm.tolist(),
        "support": dict(zip(labels, cm.sum(axis=1).tolist(), strict=True)),
    }
