"""Promotion guardrails: bootstrap ROC AUC interval, no-signal check, champion / baseline / feature-set checks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from models.judge.guardrails import (
    SignalCheck,
    bootstrap_roc_auc,
    check_signal,
    compare_with_baselines,
    compare_with_champion,
    feature_set_change,
)


def _data(n: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(-2.5 + signal * x)))
    proba = np.round(1 / (1 + np.exp(-x)), 2)  # rounded: many ties
    return y, proba


def test_point_estimate_equals_sklearn_with_ties() -> None:
    y, p = _data(3000, 1.0, 1)
    point, low, high = bootstrap_roc_auc(y, p, n_bootstrap=200)
    assert point == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert low < point < high


def test_interval_includes_half_without_signal_and_not_with_it() -> None:
    y, p = _data(3000, 0.0, 2)
    _, low, high = bootstrap_roc_auc(y, p, n_bootstrap=300)
    assert low < 0.5 < high
    y, p = _data(3000, 1.0, 3)
    _, low, _ = bootstrap_roc_auc(y, p, n_bootstrap=300)
    assert low > 0.5


def test_check_signal_needs_both_auc_interval_and_pr_auc_over_base_rate() -> None:
    y, p = _data(3000, 1.0, 4)
    good = check_signal(y, p, average_precision_score(y, p), n_bootstrap=200)
    assert good.passed and good.failures == []
    weak_pr = check_signal(y, p, y.mean() * 1.05, n_bootstrap=200, min_pr_auc_lift=0.1)
    assert not weak_pr.passed
    assert "does not beat the base rate" in weak_pr.message()
    y, p = _data(3000, 0.0, 5)
    none = check_signal(y, p, average_precision_score(y, p), n_bootstrap=200)
    assert not none.passed
    message = none.message()
    assert "includes 0.5" in message and "horizon" in message and "labels" in message
    assert SignalCheck.from_metrics(none.to_metrics()) == none
    assert SignalCheck.from_metrics({"guardrail.roc_auc": 0.5}) is None


def test_one_class_is_an_error() -> None:
    with pytest.raises(ValueError, match="converted and non-converted"):
        bootstrap_roc_auc(np.zeros(10), np.linspace(0, 1, 10))


def test_champion_comparison_is_relative_in_both_directions() -> None:
    kw = {"metric": "pr_auc", "higher_is_better": True, "min_relative": 0.95, "champion_version": 3}
    assert compare_with_champion(0.19, 0.20, **kw).passed  # 0.19 >= 0.95 x 0.20
    refused = compare_with_champion(0.18, 0.20, **kw)
    assert not refused.passed and "misses >= 0.95 x 0.2000 = 0.1900" in refused.text
    kw = {"metric": "log_loss", "higher_is_better": False, "min_relative": 0.95, "champion_version": 3}
    assert compare_with_champion(0.21, 0.20, **kw).passed  # 0.21 <= 0.20 / 0.95
    assert not compare_with_champion(0.22, 0.20, **kw).passed


def test_baseline_comparison_uses_the_best_baseline() -> None:
    base = {"logistic": {"pr_auc": 0.30}, "hist_gradient_boosting": {"pr_auc": 0.35}}
    result = compare_with_baselines(0.33, base, metric="pr_auc", higher_is_better=True)
    assert result is not None and not result.passed and "'hist_gradient_boosting'" in result.text
    result = compare_with_baselines(0.36, base, metric="pr_auc", higher_is_better=True)
    assert result is not None and result.passed
    assert compare_with_baselines(0.36, {}, metric="pr_auc", higher_is_better=True) is None


def test_feature_set_change_names_both_sides_and_the_fix() -> None:
    assert feature_set_change(["a", "b"], ["b", "a"]) is None
    change = feature_set_change(["a", "c"], ["a", "b"])
    assert change is not None and change.missing == ("b",) and change.added == ("c",)
    message = change.message("leadscore", 4, 2)
    assert "LEADSCORE_MODEL_NAME" in message and "models promote 4 --force" in message
