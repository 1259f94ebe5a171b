from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from models.config import GradesConfig
from models.judge.evaluation import (
    READINESS_METRIC_KEYS,
    calibration_bins,
    expected_calibration_error,
    grade_cutoffs_from_config,
    grade_table,
    readiness_metrics,
    stage_metrics,
)


def _sample(n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.6, 4.0, size=n)
    y = (rng.random(n) < p).astype(int)
    return y, p


def test_metric_keys_and_values_match_sklearn() -> None:
    y, p = _sample()
    m = readiness_metrics(y, p)
    assert tuple(m) == READINESS_METRIC_KEYS
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["base_rate"] == pytest.approx(y.mean())


def test_lift_and_recall_by_hand() -> None:
    # 10 rows, 3 positives; the top 10% (1 row) is positive, the top 20% (2 rows) holds 1 positive.
    p = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    y = np.array([1, 0, 1, 0, 0, 0, 1, 0, 0, 0])
    m = readiness_metrics(y, p)
    assert m["lift_at_10"] == pytest.approx(1.0 / 0.3)
    assert m["recall_at_10"] == pytest.approx(1 / 3)
    assert m["lift_at_20"] == pytest.approx(0.5 / 0.3)
    assert m["recall_at_20"] == pytest.approx(1 / 3)


def test_top_fraction_rounds_up() -> None:
    # 15 rows: the top 10% is ceil(1.5) = 2 rows.
    p = np.linspace(1, 0.01, 15)
    y = np.zeros(15, dtype=int)
    y[1] = 1
    assert readiness_metrics(y, p)["recall_at_10"] == 1.0


def test_ece_small_for_calibrated_large_for_distorted() -> None:
    y, p = _sample(n=50000, seed=1)
    assert expected_calibration_error(y, p) < 0.01
    distorted = np.sqrt(p)  # systematically over-confident in the positive class
    assert expected_calibration_error(y, distorted) > 0.1


def test_ece_by_hand_with_equal_mass_bins() -> None:
    p = np.array([0.1, 0.1, 0.3, 0.3])
    y = np.array([0, 0, 1, 1])
    # Two bins of two rows: |0 - 0.1| and |1 - 0.3|, each weighted 1/2.
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.7)
    bins = calibration_bins(y, p, n_bins=2)
    assert bins["rows"].tolist() == [2, 2]


def test_single_class_gives_nan_auc_not_an_error() -> None:
    m = readiness_metrics(np.zeros(5, dtype=int), np.full(5, 0.1))
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert m["brier"] == pytest.approx(0.01)


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        readiness_metrics([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        readiness_metrics([0, 1], [0.1, 1.2])
    with pytest.raises(ValueError, match="equal length"):
        readiness_metrics([0, 1], [0.1])


def test_grade_table_counts_and_rates() -> None:
    p = np.array([0.9, 0.6, 0.55, 0.3, 0.2, 0.05, 0.01])
    y = np.array([1, 1, 0, 1, 0, 0, 0])
    table = grade_table(y, p, {"A": 0.6, "B": 0.3, "C": 0.1})
    assert table["grade"].tolist() == ["A", "B", "C", "D"]
    assert table["rows"].tolist() == [2, 2, 1, 2]  # 0.6 is A (>=), 0.3 is B (>=)
    assert table["conversion_rate"].tolist()[:3] == [1.0, 0.5, 0.0]
    assert table["share"].sum() == pytest.approx(1.0)


def test_top_fraction_cutoffs() -> None:
    p = np.linspace(0, 1, 1001)
    cut = grade_cutoffs_from_config(GradesConfig(), p)
    assert cut["A"] == pytest.approx(0.9)
    assert cut["B"] == pytest.approx(0.7)
    assert cut["C"] == pytest.approx(0.4)
    fixed = GradesConfig(mode="probability", cutoffs={"A": 0.5, "B": 0.2, "C": 0.1})
    assert grade_cutoffs_from_config(fixed, p) == {"A": 0.5, "B": 0.2, "C": 0.1}


def test_stage_metrics_by_hand() -> None:
    labels = ["early", "late", "never"]
    truth = ["early", "late", "never", "never"]
    proba = np.array(
        [
            [0.7, 0.2, 0.1],  # early -> early
            [0.6, 0.3, 0.1],  # late -> early (wrong)
            [0.1, 0.1, 0.8],  # never -> never
            [0.2, 0.5, 0.3],  # never -> late (wrong)
        ]
    )
    m = stage_metrics(truth, proba, labels)
    assert m["accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert m["labels"] == labels
    # F1: early 2/3, late 0, never 2/3.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 2 / 3) / 3)
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.8, 0.3])))
    assert m["support"] == {"early": 1, "late": 1, "never": 2}
    with pytest.raises(ValueError, match="not among"):
        stage_metrics(["soon"], proba[:1], labels)
