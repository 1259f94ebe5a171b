"""Counts with 95 % intervals: what every number in the report is shown with.

- Proportions (conversion and acceptance rates): the Wilson score interval (``scipy.stats.binomtest``),
  which stays inside [0, 1] and behaves for small counts and rates near 0, unlike the normal
  approximation.
- ROC AUC: the Hanley & McNeil (1982) standard error from the AUC and the positive / negative counts
  (the test-set predictions are not kept, so no bootstrap is possible).
- Medians of durations: a distribution-free interval from binomial order statistics.

All intervals assume independent observations; a lead scored in several batches contributes several
(correlated) scores, so intervals over served scores are somewhat too narrow (docs/report.md says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom, binomtest, norm

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with the share and its 95 % Wilson interval (all ``None`` when ``n == 0``)."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    @property
    def empty(self) -> bool:
        return self.n == 0


def proportion(k: int, n: int) -> Rate:
    """``k`` successes out of ``n`` with the 95 % Wilson score interval."""
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"a proportion needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return Rate(0, 0, None, None, None)
    ci = binomtest(k, n).proportion_ci(CONFIDENCE, method="wilson")
    return Rate(k, n, k / n, float(ci.low), float(ci.high))


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95 % interval and the count it rests on."""

    value: float
    low: float | None
    high: float | None
    n: int


def auc_interval(auc: float, n_positive: int, n_negative: int) -> Estimate:
    """ROC AUC with the Hanley-McNeil 95 % interval (clipped to [0, 1])."""
    n = n_positive + n_negative
    if not math.isfinite(auc) or n_positive < 1 or n_negative < 1:
        return Estimate(auc, None, None, n)
    q1 = auc / (2 - auc)
    q2 = 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_positive - 1) * (q1 - auc * auc) + (n_negative - 1) * (q2 - auc * auc)) / (
        n_positive * n_negative
    )
    half = float(norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(max(var, 0.0))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half), n)


def median_interval(values: np.ndarray) -> Estimate | None:
    """The median with a distribution-free 95 % interval (order statistics); ``None`` for no values."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return None
    median = float(np.median(x))
    alpha = 1 - CONFIDENCE
    lo_rank = int(binom.ppf(alpha / 2, n, 0.5))  # ranks are 1-based order statistics
    hi_rank = n - lo_rank + 1
    if lo_rank < 1 or hi_rank > n:
        return Estimate(median, None, None, n)  # too few values for a 95 % interval
    return Estimate(median, float(x[lo_rank - 1]), float(x[hi_rank - 1]), n)
