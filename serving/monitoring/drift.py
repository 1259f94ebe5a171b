"""Population stability: how far the scored population has moved from the champion's training data.

PSI
---
``psi(reference, current)`` = sum over bins ``(c_i - r_i) * ln(c_i / r_i)``, where ``r_i`` and ``c_i`` are
the shares of the reference and current rows in bin ``i``:

- **numeric** values: bin edges are the reference quantiles at ``1/bins, 2/bins, ...`` (duplicates
  dropped, so a count feature that is 0 for 60 % of the reference gets a "0" bin and fewer bins above);
  bins are right-closed, ``(-inf, e_1], (e_1, e_2], ..., (e_k, inf)``, so current values outside the
  reference range fall in the outer bins;
- **categorical** values (object, string, category or bool dtype): one bin per category among the
  ``max_categories`` most frequent of the reference, one "other" bin for every other value (including
  categories never seen in the reference);
- **missing** values (NaN / NA) are their own bin in both cases, so a feature that starts missing more
  often moves the PSI;
- **small-count smoothing**: every bin's count gets ``SMOOTHING`` (0.5) added before the shares are taken
  (``share = (count + 0.5) / (n + 0.5 * n_bins)``), so an empty bin gives a finite PSI and a bin holding a
  handful of rows cannot dominate. Under no drift the expected PSI is about ``(n_bins - 1) * (1/n_ref +
  1/n_cur)``: 0.004 for ten bins and 5,000 rows a side, far below the 0.1 / 0.2 / 0.25 rules of thumb.

Rules of thumb: PSI < 0.1 no meaningful change, 0.1-0.25 moderate, > 0.25 large.

The reference
-------------
The current population is "every lead open at the batch's as-of time". The reference must be the same kind
of population from the champion's training data, or an undrifted population alarms: open leads accumulate
(a lead that never converts or gets disqualified stays open for years), so the open population two years
into the data is older, with longer histories, than one six months in. :func:`reference_population` takes
the champion's training snapshots (open leads at the training as-of dates), keeps the last
``last_snapshots`` as-of dates, the newest the champion was trained on; :func:`comparable_ages` then keeps,
on both sides, only leads no older than the oldest lead the reference can hold (and at most
``max_age_days``). The result compares like with like: open leads of the same ages, recent training dates.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.judge.reference import reference_population

__all__ = [
    "DriftReport",
    "bin_counts",
    "comparable_ages",
    "drift_report",
    "numeric_bin_edges",
    "psi",
    "psi_from_counts",
    "reference_population",
]

SMOOTHING = 0.5
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 20
AGE_COLUMN = "lead_age_days"
_OTHER = "__other__"


# -- PSI -------------------------------------------------------------------------------------------


def _is_categorical(values: pd.Series) -> bool:
    dtype = values.dtype
    return bool(
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_bool_dtype(dtype)
    )


def _as_series(values: Any) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))


def numeric_bin_edges(reference: Any, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Inner bin edges: the distinct reference quantiles at ``1/bins .. (bins-1)/bins`` (NaN ignored)."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    ref = pd.to_numeric(_as_series(reference), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    ref = ref[np.isfinite(ref)]
    if len(ref) == 0:
        return np.empty(0)
    # "lower": edges are observed values, so a heavy mass at one value (0 counts) gets a bin of its own.
    return np.unique(np.quantile(ref, np.arange(1, bins) / bins, method="lower"))


def bin_counts(
    reference: Any,
    current: Any,
    bins: int = DEFAULT_BINS,
    *,
    categorical: bool | None = None,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
) -> pd.DataFrame:
    """Rows of the reference and of the current population per PSI bin (see the module docstring).

    Returns one row per bin: ``bin`` (a label), ``reference`` and ``current`` (counts). Bins empty on both
    sides are left out.
    """
    ref, cur = _as_series(reference), _as_series(current)
    if categorical is None:
        categorical = _is_categorical(ref) or _is_categorical(cur)
    if categorical:
        ref_na, cur_na = ref.isna().to_numpy(), cur.isna().to_numpy()
        ref_s = ref[~ref_na].astype(str)
        cur_s = cur[~cur_na].astype(str)
        kept = list(ref_s.value_counts(sort=True).index[:max_categories])
        kept_set = set(kept)
        ref_l = ref_s.where(ref_s.isin(kept_set), _OTHER)
        cur_l = cur_s.where(cur_s.isin(kept_set), _OTHER)
        labels = [*kept, _OTHER]
        rc = ref_l.value_counts().reindex(labels, fill_value=0).to_numpy()
        cc = cur_l.value_counts().reindex(labels, fill_value=0).to_numpy()
        names = [*kept, "other"]
    else:
        r = pd.to_numeric(ref, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        c = pd.to_numeric(cur, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        edges = numeric_bin_edges(r, bins)
        ref_na, cur_na = np.isnan(r), np.isnan(c)
        k = len(edges) + 1
        rc = np.bincount(np.searchsorted(edges, r[~ref_na], side="left"), minlength=k)
        cc = np.bincount(np.searchsorted(edges, c[~cur_na], side="left"), minlength=k)
        bounds = [-np.inf, *edges.tolist(), np.inf]
        names = [f"({lo:g}, {hi:g}]" if np.isfinite(hi) else f"({lo:g}, inf)" for lo, hi in itertools.pairwise(bounds)]
    out = pd.DataFrame(
        {
            "bin": [*names, "missing"],
            "reference": np.append(rc, ref_na.sum()).astype(np.int64),
            "current": np.append(cc, cur_na.sum()).astype(np.int64),
        }
    )
    return out[(out["reference"] > 0) | (out["current"] > 0)].reset_index(drop=True)


def psi_from_counts(reference_counts: Any, current_counts: Any, smoothing: float = SMOOTHING) -> float:
    """PSI of two count vectors over the same bins, with additive smoothing (see the module docstring)."""
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"count vectors must be 1-D of equal length, got {r.shape} and {c.shape}")
    if r.sum() == 0 or c.sum() == 0:
        return float("nan")
    k = len(r)
    rs = (r + smoothing) / (r.sum() + smoothing * k)
    cs = (c + smoothing) / (c.sum() + smoothing * k)
    return float(np.sum((cs - rs) * np.log(cs / rs)))


def psi(
    reference: Any,
    current: Any,
    bins: int = DEFAULT_BINS,
    *,
    categorical: bool | None = None,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    smoothing: float = SMOOTHING,
) -> float:
    """Population stability index of ``current`` against ``reference`` (see the module docstring).

    Args:
        reference: the reference values (array-like or Series); its quantiles set the bins.
        current: the current values.
        bins: number of quantile bins for numeric values (fewer when the reference has ties).
        categorical: force categorical / numeric binning (default: from the dtype).
        max_categories: categories of the reference kept as their own bin; the rest share "other".
        smoothing: added to every bin count before shares are taken.

    Returns:
        The PSI (>= 0), or NaN when either side has no rows.
    """
    counts = bin_counts(reference, current, bins, categorical=categorical, max_categories=max_categories)
    return psi_from_counts(counts["reference"], counts["current"], smoothing)


# -- the reference population ----------------------------------------------------------------------


def comparable_ages(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    max_age_days: float | None = None,
    age_column: str = AGE_COLUMN,
) -> tuple[pd.Series, pd.Series, float | None]:
    """Masks keeping, on both sides, leads no older than the reference's oldest lead (and ``max_age_days``).

    Returns ``(reference_mask, current_mask, age_limit)``; without an age column nothing is dropped
    (``age_limit`` None). A current lead older than anything in the reference cannot be compared with the
    training data: it is left out of the drift figures (and counted, see :class:`DriftReport`).
    """
    if age_column not in reference.columns or age_column not in current.columns:
        return (
            pd.Series(True, index=reference.index),
            pd.Series(True, index=current.index),
            None,
        )
    ref_age = pd.to_numeric(reference[age_column], errors="coerce")
    limit = float(ref_age.max()) if ref_age.notna().any() else None
    if max_age_days is not None:
        limit = float(max_age_days) if limit is None else min(limit, float(max_age_days))
    if limit is None:
        return pd.Series(True, index=reference.index), pd.Series(True, index=current.index), None
    cur_age = pd.to_numeric(current[age_column], errors="coerce")
    return ref_age <= limit, cur_age <= limit, limit


# -- the report -----------------------------------------------------------------------------------


@dataclass
class DriftReport:
    """Score PSI and per-feature PSI of a current population against a reference.

    Attributes:
        score_psi: PSI of the readiness (the probability behind the 0-100 score; the score is a monotone
            function of it, so quantile bins give the same PSI up to ties).
        features: one row per feature, sorted by PSI (largest first): ``feature``, ``psi``,
            ``n_reference``, ``n_current``, ``importance`` (model gain share, NaN when not given), ``rank``
            (1 = most important), ``top`` (among the ``top_k`` most important), ``flagged``
            (PSI > ``feature_threshold``).
        n_reference, n_current: rows compared on each side.
        score_threshold, feature_threshold, top_k: the alert rules this report was judged with.
        details: free-form context (age limit, rows left out, reference dates ...).
    """

    score_psi: float
    features: pd.DataFrame
    n_reference: int
    n_current: int
    score_threshold: float
    feature_threshold: float
    top_k: int
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def score_drifted(self) -> bool:
        return bool(np.isfinite(self.score_psi) and self.score_psi > self.score_threshold)

    @property
    def flagged_features(self) -> list[str]:
        """Features above the feature threshold, largest PSI first."""
        return self.features.loc[self.features["flagged"], "feature"].tolist()

    @property
    def alerting_features(self) -> list[str]:
        """Flagged features among the ``top_k`` most important: these raise the drift alert."""
        f = self.features
        return f.loc[f["flagged"] & f["top"], "feature"].tolist()

    def moved_most(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` features whose PSI is largest."""
        return self.features.head(n).reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        rows = [
            {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rec.items()}
            for rec in self.features.to_dict(orient="records")
        ]
        return {
            "score_psi": None if not np.isfinite(self.score_psi) else float(self.score_psi),
            "score_threshold": self.score_threshold,
            "score_drifted": self.score_drifted,
            "feature_threshold": self.feature_threshold,
            "top_k": self.top_k,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "flagged_features": self.flagged_features,
            "alerting_features": self.alerting_features,
            "features": rows,
            "details": self.details,
        }


def drift_report(
    reference_frame: pd.DataFrame,
    current_frame: pd.DataFrame,
    features: Sequence[str],
    score_ref: Any,
    score_cur: Any,
    *,
    importance: Mapping[str, float] | None = None,
    categorical: Sequence[str] | None = None,
    bins: int = DEFAULT_BINS,
    score_threshold: float = 0.2,
    feature_threshold: float = 0.25,
    top_k: int = 10,
    details: Mapping[str, Any] | None = None,
) -> DriftReport:
    """Score PSI and one PSI per feature, current vs reference (rows of each frame align with its scores).

    Args:
        reference_frame: the reference rows (e.g. :func:`reference_population`, masked by
            :func:`comparable_ages`) with the feature columns.
        current_frame: the current scored population with the same columns.
        features: the feature columns to compare (all must be in both frames).
        score_ref: readiness of the reference rows (same order as ``reference_frame``).
        score_cur: readiness of the current rows.
        importance: feature -> importance (e.g. LightGBM gain); the ``top_k`` largest are the features
            whose drift raises the alert. Without it every feature counts as "top".
        categorical: features to bin as categories (default: from the dtype).
        bins, score_threshold, feature_threshold, top_k: see :func:`psi` and :class:`DriftReport`.
    """
    missing = sorted({f for f in features if f not in reference_frame.columns or f not in current_frame.columns})
    if missing:
        raise ValueError(f"features {missing} are missing from the reference or the current frame")
    score_ref = np.asarray(score_ref, dtype=np.float64)
    score_cur = np.asarray(score_cur, dtype=np.float64)
    if len(score_ref) != len(reference_frame) or len(score_cur) != len(current_frame):
        raise ValueError(
            f"scores and frames differ in length: reference {len(score_ref)} vs {len(reference_frame)} rows, "
            f"current {len(score_cur)} vs {len(current_frame)} rows"
        )
    cat = set(categorical or [])
    rows = []
    for name in features:
        force = True if name in cat else None
        rows.append(
            {
                "feature": name,
                "psi": psi(reference_frame[name], current_frame[name], bins, categorical=force),
                "n_reference": int(reference_frame[name].notna().sum()),
                "n_current": int(current_frame[name].notna().sum()),
            }
        )
    table = pd.DataFrame(rows, columns=["feature", "psi", "n_reference", "n_current"])
    if importance:
        imp = pd.Series({f: float(importance.get(f, 0.0)) for f in features}, dtype=np.float64)
        total = float(imp.sum())
        shares = imp / total if total > 0 else imp
        table["importance"] = table["feature"].map(shares).astype(np.float64)
        ranks = shares.rank(ascending=False, method="first").astype(np.int64)
        table["rank"] = table["feature"].map(ranks).astype(np.int64)
        table["top"] = table["rank"] <= top_k
    else:
        table["importance"] = np.nan
        table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
        table["top"] = True
    table["flagged"] = table["psi"].fillna(0.0) > feature_threshold
    table = table.sort_values(["psi", "feature"], ascending=[False, True], na_position="last").reset_index(drop=True)
    return DriftReport(
        score_psi=psi(score_ref, score_cur, bins, categorical=False),
        features=table,
        n_reference=len(reference_frame),
        n_current=len(current_frame),
        score_threshold=score_threshold,
        feature_threshold=feature_threshold,
        top_k=top_k,
        details=dict(details or {}),
    )
