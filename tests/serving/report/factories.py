"""Small seeded report inputs built by hand (no store, no model): for section and rendering tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from serving.monitoring.drift import DriftReport, drift_report
from serving.monitoring.performance import Maturity
from serving.policy import load_policy
from serving.report.inputs import ModelFacts, ReportInputs
from serving.stores import BatchInfo

NOW = datetime(2026, 6, 1, tzinfo=UTC)
HORIZON = 90


def model_facts(test_grades: bool = True) -> ModelFacts:
    table = pd.DataFrame(
        {
            "grade": ["A", "B", "C", "D"],
            "rows": [100, 200, 300, 400],
            "conversions": [20, 16, 9, 4],
            "mean_probability": [0.18, 0.07, 0.03, 0.01],
        }
    )
    levels = np.linspace(0, 1, 101)
    return ModelFacts(
        name="leadscore",
        version="3",
        run_id="abc123",
        trained_at="2026-05-01T10:00:00+00:00",
        horizon_days=HORIZON,
        score_method="percentile",
        score_values=tuple(float(v) for v in levels**3 * 0.4),
        score_levels=tuple(float(v) for v in levels),
        grade_cutoffs={"A": 0.12, "B": 0.05, "C": 0.02},
        calibration="sigmoid",
        n_features=4,
        feature_names=("f1", "f2", "f3", "f4"),
        split={
            "train_rows": 5000,
            "train_leads": 1200,
            "train_as_of_range": ["2024-01-07T00:00:00", "2025-01-01T00:00:00"],
            "valid_rows": 1000,
            "valid_leads": 600,
            "valid_as_of_range": ["2025-02-01T00:00:00", "2025-04-01T00:00:00"],
            "test_rows": 1000,
            "test_leads": 700,
            "test_as_of_range": ["2025-05-01T00:00:00", "2025-08-01T00:00:00"],
        },
        metrics={
            "leadscore": {"roc_auc": 0.8, "pr_auc": 0.3, "lift_at_10": 3.1, "ece": 0.01, "base_rate": 0.049},
            "logistic_regression": {"roc_auc": 0.74, "pr_auc": 0.2, "lift_at_10": 2.5, "ece": 0.02},
            "prior": {"roc_auc": 0.5},
        },
        test_grades=table if test_grades else None,
    )


def batches(n: int, leads: int = 100) -> list[BatchInfo]:
    return [
        BatchInfo(
            batch_id=i + 1,
            scored_at=NOW - timedelta(days=7 * (n - 1 - i)),
            as_of=NOW - timedelta(days=7 * (n - 1 - i)),
            model_name="leadscore",
            model_version="3",
            policy_version="default-2",
            n_scores=leads,
            n_handoffs=10,
        )
        for i in range(n)
    ]


def outcomes(n: int, seed: int = 0) -> pd.DataFrame:
    """Matured served scores whose conversion follows readiness (grades from fixed cut-offs), as
    :func:`serving.monitoring.performance.matured_outcomes` returns them."""
    rng = np.random.default_rng(seed)
    readiness = rng.beta(1, 15, n)
    grade = np.select([readiness >= 0.12, readiness >= 0.05, readiness >= 0.02], ["A", "B", "C"], "D")
    as_of = pd.to_datetime([NOW - timedelta(days=int(d)) for d in rng.integers(HORIZON, 300, n)], utc=True)
    return pd.DataFrame(
        {
            "batch_id": rng.integers(1, 5, n),
            "lead_id": [f"L{i % (n // 2 + 1):05d}" for i in range(n)],
            "as_of": as_of,
            "scored_at": as_of,
            "model_version": "3",
            "readiness": readiness,
            "score": np.clip((readiness * 250).astype(int), 0, 100),
            "grade": grade,
            "handed_off": np.isin(grade, ["A", "B"]),
            "converted": (rng.random(n) < readiness).astype(np.int8),
        }
    )


def maturity(n_scores: int, n_matured: int) -> Maturity:
    return Maturity(
        n_batches=4,
        n_matured_batches=2 if n_matured else 0,
        n_scores=n_scores,
        n_matured_scores=n_matured,
        observed_until=pd.Timestamp(NOW),
        next_maturity=pd.Timestamp(NOW) + pd.Timedelta(days=30) if n_scores > n_matured else None,
    )


def handoffs(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "handoff_id": [f"h{i:04d}" for i in range(n)],
            "lead_id": [f"L{i:05d}" for i in range(n)],
            "batch_id": rng.integers(1, 5, n),
            "handed_off_at": pd.to_datetime([NOW - timedelta(days=int(d)) for d in rng.integers(0, 60, n)], utc=True),
            "grade": rng.choice(["A", "B"], n),
            "score": rng.integers(80, 100, n),
            "readiness": rng.uniform(0.05, 0.3, n),
        }
    )


def feedback(handed: pd.DataFrame, accepted_share: float = 0.5, seed: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(handed)
    accepted = np.arange(n) < round(accepted_share * n)
    reasons = rng.choice(["not_ready", "bad_fit", "duplicate", "no_budget"], n, p=[0.4, 0.3, 0.2, 0.1])
    return pd.DataFrame(
        {
            "handoff_id": handed["handoff_id"].to_numpy(),
            "lead_id": handed["lead_id"].to_numpy(),
            "outcome": np.where(accepted, "accepted", "rejected"),
            "reason_code": np.where(accepted, None, reasons),
            "recorded_at": handed["handed_off_at"] + pd.to_timedelta(rng.exponential(3, n), unit="D"),
            "handed_off_at": handed["handed_off_at"].to_numpy(),
        }
    )


def drift(shifted: tuple[str, ...] = ("f2",), n: int = 3000, seed: int = 4) -> DriftReport:
    """A real :func:`serving.monitoring.drift.drift_report` of two populations; ``shifted`` features move."""
    rng = np.random.default_rng(seed)
    names = ("f1", "f2", "f3", "f4")
    reference = pd.DataFrame({f: rng.normal(0, 1, n) for f in names})
    current = pd.DataFrame({f: rng.normal(1.0 if f in shifted else 0.0, 1, n) for f in names})
    return drift_report(
        reference,
        current,
        list(names),
        rng.beta(1, 15, n),
        rng.beta(1, 15, n),
        score_threshold=0.2,
        feature_threshold=0.2,
    )


def touches(seed: int = 3, leads: int = 400) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(NOW) - pd.Timedelta(days=400)
    rows = []
    for i in range(leads):
        for _ in range(rng.integers(1, 4)):
            rows.append(
                {
                    "lead_id": f"L{i:05d}",
                    "occurred_at": start + pd.Timedelta(days=float(rng.uniform(0, 380))),
                    "campaign_id": rng.choice(["C1", "C2", "C3", None]),
                    "channel": rng.choice(["email", "webinar", "event"]),
                    "activity_type": rng.choice(["email_click", "webinar", "event_attendance"]),
                }
            )
    frame = pd.DataFrame(rows)
    won = [f"L{i:05d}" for i in range(leads) if rng.random() < 0.2]
    conversions = pd.Series(
        [start + pd.Timedelta(days=float(rng.uniform(100, 400))) for _ in won], index=pd.Index(won, name="lead_id")
    )
    return frame, conversions


def inputs(
    *,
    n_batches: int = 4,
    with_outcomes: bool = True,
    n_outcomes: int = 2000,
    n_handoffs: int = 200,
    with_feedback: bool = True,
    with_drift: bool = True,
    with_touches: bool = True,
    effects: pd.DataFrame | None = None,
) -> ReportInputs:
    handed = handoffs(n_handoffs) if n_batches else handoffs(0)
    touch, conv = touches()
    leads = pd.DataFrame({"lead_id": [f"L{i:05d}" for i in range(400)], "source": ["web", "event"] * 200})
    return ReportInputs(
        generated_at=NOW,
        since=None,
        policy=load_policy(None),
        model=model_facts(),
        batches=batches(n_batches),
        current=pd.DataFrame({"lead_id": ["L1"], "readiness": [0.1], "score": [50], "grade": ["B"], "handoff": [True]}),
        handoffs=handed,
        feedback=feedback(handed) if with_feedback else feedback(handed.head(0)),
        outcomes=outcomes(n_outcomes) if with_outcomes else None,
        maturity=maturity(n_outcomes + 600, n_outcomes) if with_outcomes else None,
        drift=drift() if with_drift else None,
        leads=leads,
        source_column="source",
        conversions=conv if with_touches else None,
        touches=touch if with_touches else None,
        data_end=pd.Timestamp(NOW),
        effects=effects,
    )
