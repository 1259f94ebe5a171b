"""Leakage probe: flag single features that predict the label too well on their own.

A feature recorded after (or because of) the outcome, such as a sales "status tag", the deal revenue or a
field only filled in on won deals, usually separates the classes almost perfectly by itself. Before
training, :func:`probe_leakage` measures every feature alone on the training rows and flags it when

- its **own ROC AUC** exceeds ``threshold`` (0.95 by default), symmetrised as ``max(auc, 1 - auc)`` so that
  a feature that is *low* for converters counts too; or
- it is **populated for only one class**: non-missing on at least ``min_populated`` rows of one class and on
  none of the other (e.g. closed-deal fields that exist only for won leads), where the other class is large
  enough for that absence to mean something: populated at the first class's rate, it would hold at least
  ``min_populated`` populated rows too. (A sparse feature, e.g. filled on 1% of rows, is naturally absent
  from a few hundred converted rows by chance: with an expected count of 4 the chance of none is 2%.) With
  ``groups`` (lead ids) that expectation is counted in distinct leads, since the snapshots of one lead are
  not independent.

How a feature's own AUC is measured
-----------------------------------
- **Numeric**: the rank (Mann-Whitney) AUC of the raw values. Missing values are placed once below and
  once above every value and the larger of the two (symmetrised) AUCs counts, because a tree can send
  missing values to either side of a split: a feature whose *missingness* reveals the label is caught.
- **Categorical**: the AUC of its target-rate encoding computed **out of fold** (``n_folds`` stratified
  folds, grouped by ``groups``, e.g. the lead id, when given, so that one lead's snapshots never encode
  each other). Each row's value is encoded with the smoothed converted rate of that value in the *other*
  folds, ``(sum_y + m * prior) / (count + m)`` with ``m = smoothing``; missing is a category of its own and
  values unseen in the other folds get the prior. In-fold encoding would give any high-cardinality column
  (an id, a landing-page hash) a trivially high AUC, since every rare value would encode its own label;
  out of fold such a column encodes to the prior and scores about 0.5, while a genuinely leaky
  categorical (a status tag) keeps its AUC.

With more than ``max_rows`` training rows, a stratified seeded sample of ``max_rows`` rows is probed.

Flagged features stop training (:meth:`LeakageReport.raise_for_leaks` raises :class:`LeakageError`, whose
message names each feature, its AUC or reason, and how to acknowledge it) unless they are listed in
``acknowledged`` (the training config's ``leakage.acknowledge``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.stats import rankdata
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

__all__ = [
    "ACKNOWLEDGE_CONFIG_PATH",
    "FeatureLeakage",
    "LeakageConfig",
    "LeakageError",
    "LeakageReport",
    "probe_leakage",
]

#: Where a user acknowledges a flagged feature (quoted in the error message).
ACKNOWLEDGE_CONFIG_PATH = ("train", "leakage", "acknowledge")


class LeakageConfig(BaseModel):
    """Leakage-probe settings (meant as the ``leakage`` section of the training config)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    threshold: float = Field(default=0.95, gt=0.5, le=1.0, description="flag a feature whose own AUC exceeds this")
    acknowledge: list[str] = Field(default_factory=list, description="flagged features the user vouches for")
    min_populated: int = Field(default=10, ge=1, description="rows a one-class-only feature needs to be flagged")
    n_folds: int = Field(default=5, ge=2, description="folds of the out-of-fold categorical encoding")
    smoothing: float = Field(default=10.0, ge=0, description="prior weight m of the categorical target rates")
    max_rows: int = Field(default=200_000, ge=100, description="probe a stratified sample of at most this many rows")


class LeakageError(ValueError):
    """Features that look like label leakage and were not acknowledged (``report`` has the details)."""

    def __init__(self, message: str, report: LeakageReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class FeatureLeakage:
    """The probe's verdict on one feature."""

    feature: str
    kind: str  # "numeric" or "categorical"
    auc: float  # symmetrised own AUC, NaN when undefined (no values, or a constant)
    populated_positive: int
    populated_negative: int
    flagged: bool
    reason: str  # why it is flagged ("" when it is not)
    acknowledged: bool = False


@dataclass(frozen=True)
class LeakageReport:
    """Every probed feature (most predictive first) and which ones are flagged."""

    threshold: float
    features: list[FeatureLeakage]
    n_rows: int
    n_positive: int
    rows_probed: int
    seconds: float = 0.0
    config_path: tuple[str, ...] = field(default=ACKNOWLEDGE_CONFIG_PATH)

    @property
    def flagged(self) -> list[FeatureLeakage]:
        """Flagged features that were not acknowledged (these stop training)."""
        return [f for f in self.features if f.flagged and not f.acknowledged]

    @property
    def acknowledged(self) -> list[FeatureLeakage]:
        """Flagged features the user acknowledged (training goes on; worth a note in the run)."""
        return [f for f in self.features if f.flagged and f.acknowledged]

    @property
    def ok(self) -> bool:
        return not self.flagged

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([f.__dict__ for f in self.features])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for run metadata)."""
        return {
            "threshold": self.threshold,
            "n_rows": self.n_rows,
            "n_positive": self.n_positive,
            "rows_probed": self.rows_probed,
            "flagged": [f.feature for f in self.flagged],
            "acknowledged": [f.feature for f in self.acknowledged],
            "features": {
                f.feature: {
                    "kind": f.kind,
                    "auc": None if np.isnan(f.auc) else round(f.auc, 4),
                    "populated_positive": f.populated_positive,
                    "populated_negative": f.populated_negative,
                    "flagged": f.flagged,
                    "reason": f.reason,
                    "acknowledged": f.acknowledged,
                }
                for f in self.features
            },
        }

    def message(self) -> str:
        """The explanation :class:`LeakageError` carries (empty when nothing unacknowledged is flagged)."""
        flagged = self.flagged
        if not flagged:
            return ""
        n_neg = self.n_rows - self.n_positive
        lines = [
            f"Possible label leakage: {len(flagged)} feature(s) predict the label on their own in the "
            f"{self.n_rows:,} training rows ({self.n_positive:,} converted, {n_neg:,} not):"
        ]
        lines += [f"  - {f.feature}: {f.reason}" for f in flagged]
        names = ", ".join(f.feature for f in flagged)
        *sections, key = self.config_path
        yaml_lines = [f"{'  ' * i}{name}:" for i, name in enumerate(sections)]
        yaml_lines.append(f"{'  ' * len(sections)}{key}: [{names}]")
        lines += [
            "A single feature this predictive is usually recorded after, or because of, the outcome. Exclude it "
            "(in the import mapping: excluded, with reason leaky or post_outcome; or drop it from the data "
            "contract), or, if it is genuinely known before the outcome, acknowledge it in the training config "
            f"({'.'.join(self.config_path)}):",
            "",
            *(f"    {line}" for line in yaml_lines),
        ]
        return "\n".join(lines)

    def raise_for_leaks(self) -> None:
        """Raise :class:`LeakageError` if any unacknowledged feature is flagged."""
        if self.flagged:
            raise LeakageError(self.message(), self)


# -- AUCs -------------------------------------------------------------------------------------------


def _rank_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank sum (ties count one half); ``scores`` may hold +-inf."""
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    ranks = rankdata(scores, method="average")
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _symmetric(auc: float) -> float:
    return max(auc, 1.0 - auc)


def _numeric_auc(values: np.ndarray, y: np.ndarray) -> float:
    missing = np.isnan(values)
    if missing.all():
        return float("nan")
    if not missing.any():
        return _symmetric(_rank_auc(values, y))
    low = np.where(missing, -np.inf, values)
    high = np.where(missing, np.inf, values)
    return max(_symmetric(_rank_auc(low, y)), _symmetric(_rank_auc(high, y)))


def _folds(y: np.ndarray, groups: np.ndarray | None, n_folds: int, seed: int) -> list[np.ndarray]:
    """Test-fold row indices: stratified by y, grouped when ``groups`` is given."""
    n_minority = int(min(y.sum(), len(y) - y.sum()))
    if groups is not None:
        n_groups = len(pd.unique(groups))
        k = max(2, min(n_folds, n_groups))
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return [test for _, test in splitter.split(np.zeros(len(y)), y, groups)]
    k = max(2, min(n_folds, n_minority))
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return [test for _, test in splitter.split(np.zeros(len(y)), y)]


def _categorical_auc(codes: np.ndarray, y: np.ndarray, folds: Sequence[np.ndarray], smoothing: float) -> float:
    """AUC of the out-of-fold smoothed target-rate encoding (codes >= 0; missing is its own code)."""
    n_codes = int(codes.max()) + 1
    total_sum = np.bincount(codes, weights=y, minlength=n_codes)
    total_count = np.bincount(codes, minlength=n_codes).astype(np.float64)
    encoded = np.empty(len(y), dtype=np.float64)
    for test in folds:
        fold_sum = np.bincount(codes[test], weights=y[test], minlength=n_codes)
        fold_count = np.bincount(codes[test], minlength=n_codes)
        other_sum = total_sum - fold_sum
        other_count = total_count - fold_count
        n_other = len(y) - len(test)
        prior = (y.sum() - y[test].sum()) / n_other if n_other else y.mean()
        if smoothing > 0:
            rate = (other_sum + smoothing * prior) / (other_count + smoothing)
        else:
            rate = np.where(other_count > 0, other_sum / np.maximum(other_count, 1), prior)
        encoded[test] = rate[codes[test]]
    return _symmetric(_rank_auc(encoded, y))


def _as_binary(y: Any, train_df: pd.DataFrame) -> np.ndarray:
    if isinstance(y, str):
        if y not in train_df.columns:
            raise ValueError(f"label column '{y}' is not in the training frame")
        y = train_df[y]
    arr = np.asarray(pd.Series(y).to_numpy(dtype=np.float64, na_value=np.nan))
    if len(arr) != len(train_df):
        raise ValueError(f"y has {len(arr)} values for {len(train_df)} training rows")
    bad = ~np.isin(arr, (0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"y must be 0 or 1 (position {i}: {float(arr[i])!r})")
    if arr.min() == arr.max():
        raise ValueError("the training rows hold a single class; leakage cannot be probed (nor a model trained)")
    return arr.astype(np.int8)


def stratified_sample(n: int, y: np.ndarray, max_rows: int, seed: int) -> np.ndarray | None:
    """Row positions of a stratified seeded sample of ``max_rows`` rows (None: use every row)."""
    if n <= max_rows:
        return None
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for cls in (0, 1):
        rows = np.flatnonzero(y == cls)
        take = max(1, round(max_rows * len(rows) / n))
        keep.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(keep))


def _populated_reason(
    pos: int, neg: int, n_pos: int, n_neg: int, min_populated: int, units: tuple[int, int, int, int] | None = None
) -> str:
    # The empty class must have been expected to hold min_populated rows (at the other class's fill rate):
    # absence from too few rows is chance (P(none) ~ exp(-expected)), not a sign of leakage. With ``units``
    # (the same four counts in distinct leads) the expectation is in leads: the weekly snapshots of one lead
    # are not independent evidence (60 leads seen in 12 snapshots each are not 720 chances to convert).
    u_pos, u_neg, u_n_pos, u_n_neg = units or (pos, neg, n_pos, n_neg)
    if pos >= min_populated and neg == 0 and u_pos / u_n_pos * u_n_neg >= min_populated:
        return f"populated only for converted rows ({pos:,} of {n_pos:,} converted, 0 of {n_neg:,} not converted)"
    if neg >= min_populated and pos == 0 and u_neg / u_n_neg * u_n_pos >= min_populated:
        return f"populated only for non-converted rows (0 of {n_pos:,} converted, {neg:,} of {n_neg:,} not converted)"
    return ""


def probe_leakage(
    train_df: pd.DataFrame,
    features: Sequence[str],
    categorical: Iterable[str],
    y: Any,
    threshold: float = 0.95,
    acknowledged: Iterable[str] = (),
    *,
    groups: Any = None,
    min_populated: int = 10,
    n_folds: int = 5,
    smoothing: float = 10.0,
    max_rows: int = 200_000,
    seed: int = 0,
) -> LeakageReport:
    """Measure each feature alone on the training rows and flag likely leaks (see the module docstring).

    Args:
        train_df: the training rows (never valid/test: the probe must not look at evaluation labels).
        features: feature columns to probe.
        categorical: which of them are categorical (the rest are numeric).
        y: the 0/1 label, aligned with ``train_df`` (array-like, or the name of a column).
        threshold: flag a feature whose symmetrised own AUC exceeds this (0.5 < threshold <= 1).
        acknowledged: features the user vouches for; they are reported but do not stop training. Names that
            are not features are an error (a typo would silently acknowledge nothing).
        groups: optional group per row (e.g. ``train_df["lead_id"]``) for the out-of-fold encoding.
        min_populated: rows a feature must be populated on, in one class only, to be flagged for it (and the rows
            the other class would hold at the same fill rate).
        n_folds, smoothing: the out-of-fold categorical target-rate encoding.
        max_rows: probe a stratified sample of at most this many rows.
        seed: seeds the folds and the sample.

    Returns:
        The :class:`LeakageReport`; call :meth:`LeakageReport.raise_for_leaks` to stop on flagged features.

    Raises:
        ValueError: bad threshold, missing feature columns, a non-numeric "numeric" feature, a label that is
            not 0/1 or has one class, or an acknowledged name that is not a feature.
    """
    started = time.perf_counter()
    if not 0.5 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0.5, 1], got {threshold}")
    features = list(features)
    categorical_set = set(categorical)
    unknown_cat = sorted(categorical_set - set(features))
    if unknown_cat:
        raise ValueError(f"categorical features {unknown_cat} are not among the probed features")
    missing = [f for f in features if f not in train_df.columns]
    if missing:
        raise ValueError(f"training frame lacks feature columns {missing}")
    acknowledged_set = set(acknowledged)
    stray = sorted(acknowledged_set - set(features))
    if stray:
        raise ValueError(
            f"{'.'.join(ACKNOWLEDGE_CONFIG_PATH)} names {stray}, which are not features of this model "
            f"(features: {features})"
        )
    y_all = _as_binary(y, train_df)
    n_rows, n_positive = len(y_all), int(y_all.sum())
    sample = stratified_sample(n_rows, y_all, max_rows, seed)
    frame = train_df if sample is None else train_df.iloc[sample]
    y_arr = y_all if sample is None else y_all[sample]
    group_arr = None
    if groups is not None:
        group_arr = np.asarray(groups.to_numpy() if isinstance(groups, pd.Series) else groups, dtype=object)
        if len(group_arr) != n_rows:
            raise ValueError(f"groups has {len(group_arr)} values for {n_rows} training rows")
        group_arr = group_arr if sample is None else group_arr[sample]
    folds = _folds(y_arr, group_arr, n_folds, seed) if categorical_set else []
    n_pos_s = int(y_arr.sum())
    n_neg_s = len(y_arr) - n_pos_s

    results: list[FeatureLeakage] = []
    for name in features:
        column = frame[name]
        if name in categorical_set:
            kind = "categorical"
            present = column.notna().to_numpy(dtype=bool)
            codes = pd.factorize(column.astype(object).where(present, None), use_na_sentinel=True)[0]
            codes = np.where(codes < 0, codes.max() + 1 if len(codes) else 0, codes).astype(np.int64)
            auc = _categorical_auc(codes, y_arr.astype(np.float64), folds, smoothing)
            how = "categorical, out-of-fold target rate"
        else:
            kind = "numeric"
            if not (pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)):
                raise ValueError(f"numeric feature '{name}' has non-numeric dtype {column.dtype}")
            values = column.to_numpy(dtype=np.float64, na_value=np.nan)
            present = ~np.isnan(values)
            auc = _numeric_auc(values, y_arr)
            how = "numeric, missing values placed on either side"
        pos = int(present[y_arr == 1].sum())
        neg = int(present[y_arr == 0].sum())
        reasons = []
        if not np.isnan(auc) and auc > threshold:
            reasons.append(f"ROC AUC {auc:.3f} on its own ({how}; threshold {threshold:g})")
        units = None
        if group_arr is not None and (pos == 0) != (neg == 0):  # one class only: weigh the evidence in leads
            units = (
                len(set(group_arr[present & (y_arr == 1)])),
                len(set(group_arr[present & (y_arr == 0)])),
                len(set(group_arr[y_arr == 1])),
                len(set(group_arr[y_arr == 0])),
            )
        populated = _populated_reason(pos, neg, n_pos_s, n_neg_s, min_populated, units)
        if populated:
            reasons.append(populated)
        results.append(
            FeatureLeakage(
                feature=name,
                kind=kind,
                auc=auc,
                populated_positive=pos,
                populated_negative=neg,
                flagged=bool(reasons),
                reason="; ".join(reasons),
                acknowledged=name in acknowledged_set,
            )
        )
    results.sort(key=lambda f: (not f.flagged, -(0.0 if np.isnan(f.auc) else f.auc), f.feature))
    return LeakageReport(
        threshold=threshold,
        features=results,
        n_rows=n_rows,
        n_positive=n_positive,
        rows_probed=len(y_arr),
        seconds=time.perf_counter() - started,
    )
