from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.fit.split import InsufficientDataError, temporal_split
from models.fit.stage import STAGE_TARGET
from tests.models.conftest import fast_config, make_feature_frame


def _days(delta: pd.Timedelta) -> float:
    return delta / pd.Timedelta(days=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("every_days", [7, 10, 14])
def test_no_label_window_overlaps_between_parts(seed: int, every_days: int) -> None:
    df, spec = make_feature_frame(n_leads=30, n_dates=70, every_days=every_days, tail_days=40, seed=seed)
    split = temporal_split(df, fast_config(), horizon_days=spec.horizon_days)
    r = split.readiness
    h = spec.horizon_days
    assert len(r.train) and len(r.valid) and len(r.test)
    # Every train label is settled before the first valid snapshot, every valid label before the first test one.
    assert _days(r.valid["as_of"].min() - r.train["as_of"].max()) > h
    assert _days(r.test["as_of"].min() - r.valid["as_of"].max()) > h
    assert _days(r.test["as_of"].min() - r.train["as_of"].max()) > h
    # Test is the newest usable period: nothing usable is newer.
    usable = df[df["observed_days"] >= h]
    assert r.test["as_of"].max() == usable["as_of"].max()
    b = split.boundaries
    assert b["train_end"] < b["valid_start"] <= b["valid_end"] < b["test_start"]


def test_censored_rows_are_excluded_and_counted() -> None:
    df, spec = make_feature_frame(n_leads=30, n_dates=50, tail_days=30, seed=3)
    split = temporal_split(df, fast_config(), horizon_days=spec.horizon_days)
    r = split.readiness
    censored = df["observed_days"] < spec.horizon_days
    assert censored.sum() > 0
    for part in (r.train, r.valid, r.test):
        assert (part["observed_days"] >= spec.horizon_days).all()
    assert r.n_censored == int(censored.sum())
    used = len(r.train) + len(r.valid) + len(r.test)
    assert used + r.n_in_gaps + r.n_censored == len(df)


def test_gap_can_be_widened_but_not_narrowed() -> None:
    df, spec = make_feature_frame(n_leads=20, n_dates=70, seed=4)
    wide = temporal_split(df, fast_config(split={"gap_days": 120}), horizon_days=spec.horizon_days)
    assert _days(wide.test["as_of"].min() - wide.valid["as_of"].max()) > 120
    with pytest.raises(ValueError, match="shorter than the label horizon"):
        temporal_split(df, fast_config(split={"gap_days": 30}), horizon_days=spec.horizon_days)


def test_test_weeks_selects_newest_weeks() -> None:
    df, spec = make_feature_frame(n_leads=20, n_dates=70, every_days=7, seed=5)
    split = temporal_split(df, fast_config(split={"test_weeks": 4, "valid_weeks": 3}), horizon_days=spec.horizon_days)
    assert split.readiness.test_dates.size == 4
    assert split.readiness.valid_dates.size == 3


def test_too_few_dates_is_a_clear_error() -> None:
    df, spec = make_feature_frame(n_leads=20, n_dates=12, every_days=14, seed=6)
    with pytest.raises(InsufficientDataError) as err:
        temporal_split(df, fast_config(), horizon_days=spec.horizon_days)
    message = str(err.value)
    assert "too few snapshot dates" in message
    assert "12 (" in message  # the usable date count
    assert "longer history" in message


def test_bad_label_columns_are_reported() -> None:
    df, spec = make_feature_frame(n_leads=5, n_dates=20, seed=7)
    broken = df.copy()
    broken.loc[3, "converted"] = 2
    with pytest.raises(ValueError, match=r"'converted' must be 0 or 1 \(row 3"):
        temporal_split(broken, fast_config(), horizon_days=spec.horizon_days)
    with pytest.raises(ValueError, match="lacks columns"):
        temporal_split(df.drop(columns=["observed_days"]), fast_config(), horizon_days=spec.horizon_days)
    duplicated = pd.concat([df, df.iloc[[0]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate"):
        temporal_split(duplicated, fast_config(), horizon_days=spec.horizon_days)


def test_stage_split_uses_only_fully_observed_snapshots(long_feature_frame) -> None:
    df, spec = long_feature_frame
    config = fast_config()
    split = temporal_split(df, config, horizon_days=spec.horizon_days)
    s = split.stage
    assert s is not None and s.has_test and s.test_strategy == "temporal"
    window = config.stage.label_window_days
    for part in (s.train, s.valid, s.test):
        assert (part["observed_days"] >= window).all()
        assert part[STAGE_TARGET].notna().all()
    # A stage label window of 365 days separates stage train from stage test.
    assert _days(s.test["as_of"].min() - s.train["as_of"].max()) > window
    # Valid holds out whole leads of the training period.
    assert not set(s.valid["lead_id"]) & set(s.train["lead_id"])
    # Every class occurs, including the open-ended one (no "converted rows only" bias).
    assert set(s.train[STAGE_TARGET].astype(str)) == set(split.stage_labels)


def test_stage_without_room_for_a_later_test_period_holds_out_leads(feature_frame) -> None:
    df, spec = feature_frame  # 40 dates: < 365 days of fully observed stage snapshots
    config = fast_config()
    split = temporal_split(df, config, horizon_days=spec.horizon_days)
    s = split.stage
    assert s is not None and s.has_test
    assert s.test_strategy == "lead_holdout"
    assert "held-out leads" in s.note
    test_leads = set(s.test["lead_id"])
    assert not test_leads & set(s.train["lead_id"]) and not test_leads & set(s.valid["lead_id"])
    assert len(test_leads) == round(config.split.test_fraction * df["lead_id"].nunique())
    assert len(s.train) + len(s.valid) + len(s.test) == int((df["observed_days"] >= 365).sum())


def test_stage_disabled_gives_no_stage_split(feature_frame) -> None:
    df, spec = feature_frame
    split = temporal_split(df, fast_config(stage={"enabled": False}), horizon_days=spec.horizon_days)
    assert split.stage is None
    assert split.summary()["stage"] is None


def test_stage_with_too_short_history_is_a_clear_error() -> None:
    df, spec = make_feature_frame(n_leads=20, n_dates=30, seed=8)
    df = df.assign(observed_days=np.minimum(df["observed_days"], 300.0))
    with pytest.raises(InsufficientDataError, match=r"stage\.enabled: false"):
        temporal_split(df, fast_config(), horizon_days=spec.horizon_days)
