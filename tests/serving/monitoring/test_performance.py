"""Matured outcomes and served performance, checked against an independent pandas computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.metrics import average_precision_score, roc_auc_score

from features.history import ProspectHistory
from serving.batch import backfill, backfill_dates, score_batch
from serving.monitoring.performance import (
    matured_outcomes,
    maturity_summary,
    served_performance,
    wilson_interval,
)
from serving.policy import HandoffPolicy
from serving.stores import ScoreStore
from tests.models.sim_scoring import SimulatedScoring, simulated_scoring
from tests.serving.test_service import Info, model_mode_policy

HORIZON = 90


@pytest.fixture(scope="module")
def sim() -> SimulatedScoring:
    return simulated_scoring()


@pytest.fixture(scope="module")
def policy() -> HandoffPolicy:
    return model_mode_policy()


@pytest.fixture(scope="module")
def backfilled(sim: SimulatedScoring, policy: HandoffPolicy, tmp_path_factory: pytest.TempPathFactory) -> ScoreStore:
    """Eight weekly batches ending 60 days before the data end: the older half has matured labels."""
    path = tmp_path_factory.mktemp("perf") / "leadscore.db"
    store = ScoreStore(f"sqlite:///{path}")
    summary = backfill(sim.history, sim.model, Info(), policy, store, 8, anchor=sim.data_end - pd.Timedelta(days=60))
    assert summary.n_written == 8 and summary.skipped == []
    return store


def independent_outcomes(store: ScoreStore, history: ProspectHistory, until: pd.Timestamp) -> pd.DataFrame:
    with store.engine.connect() as conn:
        scores = pd.read_sql(sa.text("SELECT batch_id, lead_id, readiness, grade, handoff FROM scores"), conn)
        batches = pd.read_sql(sa.text("SELECT batch_id, as_of FROM score_batches"), conn)
    batches["as_of"] = pd.to_datetime(batches["as_of"], utc=True)
    served = scores.merge(batches, on="batch_id")
    served = served[served["as_of"] + pd.Timedelta(days=HORIZON) <= until]
    won = history.stage_history[history.stage_history["stage"] == "won"]
    won_by_lead = won.groupby("lead_id")["entered_at"].apply(list).to_dict()

    def converted(row: pd.Series) -> int:
        times = won_by_lead.get(row["lead_id"], [])
        return int(any(row["as_of"] < t <= row["as_of"] + pd.Timedelta(days=HORIZON) for t in times))

    served["converted"] = served.apply(converted, axis=1)
    return served


def test_conversion_per_grade_matches_an_independent_computation(sim: SimulatedScoring, backfilled: ScoreStore) -> None:
    outcomes = matured_outcomes(backfilled, sim.history, HORIZON)
    expected = independent_outcomes(backfilled, sim.history, sim.data_end)
    assert len(outcomes) == len(expected) > 0
    assert 0 < outcomes["batch_id"].nunique() < 8  # only the older batches have matured
    assert (outcomes["as_of"] + pd.Timedelta(days=HORIZON) <= sim.data_end).all()
    assert outcomes["converted"].sum() == expected["converted"].sum() > 0

    perf = served_performance(outcomes)
    by_grade = perf.by_grade.set_index("grade")
    independent = expected.groupby("grade")["converted"].agg(["size", "sum", "mean"])
    for grade, row in independent.iterrows():
        assert by_grade.loc[grade, "n"] == row["size"]
        assert by_grade.loc[grade, "converted"] == row["sum"]
        assert by_grade.loc[grade, "rate"] == pytest.approx(row["mean"])
        lo, hi = by_grade.loc[grade, "ci_low"], by_grade.loc[grade, "ci_high"]
        assert lo <= row["mean"] <= hi
    y, p = expected["converted"].to_numpy(), expected["readiness"].to_numpy()
    ordered = outcomes.merge(expected[["batch_id", "lead_id"]], on=["batch_id", "lead_id"])
    assert len(ordered) == len(expected)
    assert perf.roc_auc == pytest.approx(roc_auc_score(y, p))
    assert perf.pr_auc == pytest.approx(average_precision_score(y, p))
    assert perf.roc_auc_ci[0] <= perf.roc_auc <= perf.roc_auc_ci[1]
    assert perf.calibration["rows"].sum() == len(outcomes)
    # grade A converts more often than grade D on matured labels (the model has signal)
    assert by_grade.loc["A", "rate"] > by_grade.loc["D", "rate"]

    maturity = maturity_summary(backfilled, sim.history, HORIZON)
    assert maturity.n_batches == 8 and maturity.n_matured_batches == perf.n_batches
    assert maturity.n_matured_scores == perf.n and maturity.next_maturity is not None


def test_no_matured_batch_is_an_empty_result_not_an_error(sim: SimulatedScoring, backfilled: ScoreStore) -> None:
    outcomes = matured_outcomes(backfilled, sim.history, HORIZON, until=sim.data_end - pd.Timedelta(days=400))
    perf = served_performance(outcomes)
    assert perf.empty and np.isnan(perf.roc_auc) and perf.by_grade["n"].sum() == 0
    assert perf.to_dict()["roc_auc"] is None


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(10, 100)
    assert lo == pytest.approx(0.0552, abs=1e-4) and hi == pytest.approx(0.1744, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0
    assert all(np.isnan(wilson_interval(0, 0)))


def truncated(history: ProspectHistory, at: pd.Timestamp) -> ProspectHistory:
    """The history as it was recorded by ``at``: nothing created, done or entered after it."""
    leads = history.leads[history.leads["created_at"] < at]
    keep = set(leads["lead_id"])
    acts = history.activities[(history.activities["occurred_at"] < at) & history.activities["lead_id"].isin(keep)]
    stages = history.stage_history
    stages = stages[(stages["entered_at"] <= at) & stages["lead_id"].isin(keep)]
    return ProspectHistory(history.contract, leads.reset_index(drop=True), acts.reset_index(drop=True), stages)


def test_a_backfilled_batch_uses_only_data_before_its_date(
    sim: SimulatedScoring, policy: HandoffPolicy, tmp_path: Path
) -> None:
    anchor = sim.data_end - pd.Timedelta(days=200)
    (day,) = backfill_dates(anchor, 1)
    full = ScoreStore(f"sqlite:///{tmp_path / 'full.db'}")
    backfill(sim.history, sim.model, Info(), policy, full, 1, anchor=anchor)
    past = ScoreStore(f"sqlite:///{tmp_path / 'past.db'}")
    score_batch(truncated(sim.history, day), sim.model, Info(), policy, past, as_of=day, scored_at=day.to_pydatetime())
    a = full.current_frame().set_index("lead_id").sort_index()
    b = past.current_frame().set_index("lead_id").sort_index()
    assert a.index.equals(b.index) and len(a) > 0
    assert a["as_of"].iloc[0] == day and a["scored_at"].iloc[0] == day
    for column in ("readiness", "score", "grade", "stage", "handoff"):
        assert a[column].equals(b[column]), column


def test_backfill_is_oldest_first_and_skips_what_the_store_already_covers(
    sim: SimulatedScoring, policy: HandoffPolicy, tmp_path: Path
) -> None:
    store = ScoreStore(f"sqlite:///{tmp_path / 'b.db'}")
    anchor = sim.data_end - pd.Timedelta(days=30)
    first = backfill(sim.history, sim.model, Info(), policy, store, 2, anchor=anchor)
    assert [b.as_of for b in first.batches] == [d.to_pydatetime() for d in backfill_dates(anchor, 2)]
    assert [b.batch.batch_id for b in first.batches] == sorted(b.batch.batch_id for b in first.batches)
    again = backfill(sim.history, sim.model, Info(), policy, store, 3, anchor=anchor)
    assert again.n_written == 0 and len(again.skipped) == 3 and "already holds batches" in (again.skip_reason or "")
    with pytest.raises(ValueError, match=">= 0"):
        backfill_dates(anchor, -1)


def test_weighted_auc_with_unit_weights_is_scikit_learns() -> None:
    from serving.monitoring.performance import weighted_auc

    rng = np.random.default_rng(2)
    y = (rng.random(3000) < 0.1).astype(np.int64)
    p = np.round(np.clip(0.1 + 0.2 * y + rng.normal(0, 0.15, 3000), 0, 1), 2)  # rounded: many ties
    roc, pr = weighted_auc(y, p, np.ones(len(y)))
    assert roc == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert pr == pytest.approx(average_precision_score(y, p), abs=1e-12)
    w = rng.integers(0, 3, len(y)).astype(float)
    roc_w, pr_w = weighted_auc(y, p, w)
    assert roc_w == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)
    assert pr_w == pytest.approx(average_precision_score(y, p, sample_weight=w), abs=1e-12)
