"""LeadStates says a lead is not open exactly when the feature build leaves it out, and why."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.history import ProspectHistory
from features.simulator import generate
from features.validation import load_history
from serving.lead_states import LeadStates


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> ProspectHistory:
    out: Path = tmp_path_factory.mktemp("states") / "data"
    generate(600, 11, out)
    return load_history(out).history


def test_not_open_matches_the_feature_build_at_every_date(history: ProspectHistory) -> None:
    states = LeadStates(history)
    start, end = history.span
    ids = history.leads["lead_id"].astype(str).tolist()
    for as_of in pd.date_range(start, end, periods=6)[1:].floor("s"):
        frame, _ = build_features(history, [as_of], FeatureConfig())
        open_ids = set(frame["lead_id"].astype(str))
        explained = states.explain(ids, as_of)
        assert set(explained) == set(ids) - open_ids
        reasons = {s.reason for s in explained.values()}
        assert reasons <= {"not_created", "converted", "closed"}


def test_reason_stage_and_time_come_from_the_history(history: ProspectHistory) -> None:
    states = LeadStates(history)
    end = history.span[1]
    stages = history.stage_history.sort_values(["lead_id", "entered_at"]).groupby("lead_id").tail(1)
    contract = history.contract
    for row in stages.itertuples():
        state = states.not_open(str(row.lead_id), end)
        if row.stage == contract.stages.converted:
            assert state is not None and state.reason == "converted" and state.stage == row.stage
            assert state.at == row.entered_at.to_pydatetime().replace(microsecond=0)
        elif row.stage in contract.stages.closed_negative:
            assert state is not None and state.reason == "closed" and state.stage == row.stage
        else:
            assert state is None
    first = history.leads.sort_values("created_at").iloc[0]
    early = states.not_open(str(first["lead_id"]), first["created_at"])  # created at as_of: not yet open
    assert early is not None and early.reason == "not_created"


def test_times_outside_the_nanosecond_range_are_explained(history: ProspectHistory) -> None:
    """An inline lead may carry any timestamp the API accepts (years 1-9999): found by fuzzing POST /v2/score
    with ``created_at`` in 1677, which overflowed a nanosecond conversion (500)."""
    leads = history.leads.head(2).copy()
    leads["created_at"] = pd.to_datetime(["0001-01-01T00:00:00Z", "9000-06-01T12:00:00Z"]).as_unit("us")
    early = ProspectHistory(
        leads=leads,
        activities=history.activities.iloc[0:0],
        stage_history=history.stage_history.iloc[0:0],
        contract=history.contract,
    )
    states = LeadStates(early)
    old, future = (str(x) for x in leads["lead_id"])
    assert states.not_open(old, pd.Timestamp("1500-01-01", tz="UTC").as_unit("us")) is None
    late = states.not_open(future, pd.Timestamp("2025-01-01", tz="UTC"))
    assert late is not None and late.reason == "not_created"
    assert late.at.year == 9000
