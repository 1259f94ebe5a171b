"""PSI and the drift report, checked against an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from serving.monitoring.drift import (
    bin_counts,
    comparable_ages,
    drift_report,
    numeric_bin_edges,
    psi,
    reference_population,
)


def independent_psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10, alpha: float = 0.5) -> float:
    """PSI written out from the definition: decile edges (observed values), right-closed, NaN bin, +0.5."""
    finite = np.sort(ref[~np.isnan(ref)])
    edges = []
    for i in range(1, bins):
        # 'lower' quantile: the order statistic at floor(q * (n - 1))
        value = finite[math.floor(i / bins * (len(finite) - 1))]
        if value not in edges:
            edges.append(value)
    bounds = [-np.inf, *edges, np.inf]

    def counts(x: np.ndarray) -> list[int]:
        out = [int(((x > lo) & (x <= hi)).sum()) for lo, hi in itertools.pairwise(bounds)]
        return [*out, int(np.isnan(x).sum())]

    r, c = counts(ref), counts(cur)
    keep = [i for i in range(len(r)) if r[i] or c[i]]
    r, c = [r[i] for i in keep], [c[i] for i in keep]
    k = len(r)
    total = 0.0
    for ri, ci in zip(r, c, strict=True):
        rs = (ri + alpha) / (sum(r) + alpha * k)
        cs = (ci + alpha) / (sum(c) + alpha * k)
        total += (cs - rs) * math.log(cs / rs)
    return total


def test_psi_equals_an_independent_computation() -> None:
    rng = np.random.default_rng(3)
    ref = rng.gamma(2.0, 3.0, 4000)
    cur = rng.gamma(2.6, 3.0, 3000)
    ref[rng.random(4000) < 0.05] = np.nan
    cur[rng.random(3000) < 0.15] = np.nan
    assert psi(ref, cur) == pytest.approx(independent_psi(ref, cur), rel=1e-12)
    # a count feature with a heavy mass at zero: fewer, distinct bins
    ref_c = rng.poisson(0.4, 5000).astype(float)
    cur_c = rng.poisson(1.5, 5000).astype(float)
    assert psi(ref_c, cur_c) == pytest.approx(independent_psi(ref_c, cur_c), rel=1e-12)
    assert len(numeric_bin_edges(ref_c)) < 9


def test_psi_is_small_on_the_same_distribution_and_large_on_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref, same, shifted = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000), rng.normal(0.8, 1, 5000)
    assert psi(ref, same) < 0.02
    assert psi(ref, shifted) > 0.25
    assert psi(ref, ref) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(psi(ref, np.array([])))


def test_categorical_psi_counts_unseen_categories_and_missing_values() -> None:
    ref = pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20, dtype=object)
    cur = pd.Series(["a"] * 20 + ["b"] * 30 + ["z"] * 30 + [None] * 20, dtype=object)
    counts = bin_counts(ref, cur).set_index("bin")
    assert counts.loc["other", "current"] == 30 and counts.loc["missing", "current"] == 20
    assert counts.loc["c", "current"] == 0
    r = np.array([50, 30, 20, 0, 0]) + 0.5
    c = np.array([20, 30, 0, 30, 20]) + 0.5
    r, c = r / r.sum(), c / c.sum()
    assert psi(ref, cur) == pytest.approx(float(np.sum((c - r) * np.log(c / r))), rel=1e-12)


def test_reference_population_keeps_the_newest_training_dates_and_a_seeded_sample() -> None:
    dates = pd.date_range("2024-01-07", periods=10, freq="7D", tz="UTC")
    rows = pd.DataFrame(
        {"lead_id": [f"L{i}" for i in range(100)] * 10, "as_of": np.repeat(dates, 100), "x": np.arange(1000.0)}
    )
    ref = reference_population(rows, last_snapshots=3, max_rows=None)
    assert set(ref["as_of"]) == set(dates[-3:]) and len(ref) == 300
    a = reference_population(rows, last_snapshots=3, max_rows=50, seed=1)
    b = reference_population(rows, last_snapshots=3, max_rows=50, seed=1)
    assert len(a) == 50 and a.equals(b)


def test_comparable_ages_drops_current_leads_older_than_the_reference() -> None:
    ref = pd.DataFrame({"lead_age_days": [1.0, 50.0, 200.0]})
    cur = pd.DataFrame({"lead_age_days": [3.0, 199.0, 201.0, 700.0]})
    ref_mask, cur_mask, limit = comparable_ages(ref, cur)
    assert limit == 200.0 and ref_mask.all() and cur_mask.tolist() == [True, True, False, False]
    _, cur_mask, limit = comparable_ages(ref, cur, max_age_days=100)
    assert limit == 100 and cur_mask.tolist() == [True, False, False, False]


def test_drift_report_flags_the_shifted_feature_only() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    ref = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": rng.choice(["x", "y"], n).astype(object)}
    )
    cur = pd.DataFrame(
        {"a": rng.normal(size=n), "b": rng.normal(1.0, 1, size=n), "c": rng.choice(["x", "y"], n).astype(object)}
    )
    s_ref, s_cur = rng.beta(2, 20, n), rng.beta(2, 20, n)
    report = drift_report(ref, cur, ["a", "b", "c"], s_ref, s_cur, importance={"a": 5.0, "b": 1.0, "c": 0.5}, top_k=2)
    assert report.features["feature"].iloc[0] == "b"
    assert report.flagged_features == ["b"] and report.alerting_features == ["b"]
    assert report.score_psi < 0.05 and not report.score_drifted
    assert report.features.set_index("feature").loc["b", "psi"] == pytest.approx(psi(ref["b"], cur["b"]))
    ranks = report.features.set_index("feature")["rank"]
    assert ranks.to_dict() == {"a": 1, "b": 2, "c": 3}
    # b is not among the top-1 features: flagged, but no alert
    quiet = drift_report(ref, cur, ["a", "b", "c"], s_ref, s_cur, importance={"a": 5.0, "b": 1.0, "c": 0.5}, top_k=1)
    assert quiet.flagged_features == ["b"] and quiet.alerting_features == []
    assert quiet.to_dict()["features"][0]["feature"] == "b"


def test_drift_report_errors_name_the_problem() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match=r"\['zz'\]"):
        drift_report(frame, frame, ["zz"], [0.1, 0.2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        drift_report(frame, frame, ["a"], [0.1], [0.1, 0.2])
