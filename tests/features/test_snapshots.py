"""Snapshot dates, explicit as-of parsing and durations."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd
import pytest
from pydantic import ValidationError

from features.config import FeatureConfig
from features.contract import Contract
from features.history import ProspectHistory
from features.snapshots import configured_snapshot_dates, parse_as_of, parse_duration, snapshot_dates


def _utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _history(
    created: list[str], activity_times: Sequence[str] = (), stage_times: Sequence[str] = ()
) -> ProspectHistory:
    leads = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(len(created))],
            "created_at": pd.to_datetime(created, utc=True, format="ISO8601"),
        }
    )
    activities = pd.DataFrame(
        {
            "lead_id": ["L0"] * len(activity_times),
            "occurred_at": pd.to_datetime(list(activity_times), utc=True, format="ISO8601"),
            "activity_type": ["email_open"] * len(activity_times),
        }
    )
    stages = pd.DataFrame(
        {
            "lead_id": ["L0"] * len(stage_times),
            "stage": ["mql"] * len(stage_times),
            "entered_at": pd.to_datetime(list(stage_times), utc=True, format="ISO8601"),
        }
    )
    return ProspectHistory(Contract(activity_types=["email_open"]), leads, activities, stages)


# -- parse_duration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "days"),
    [("90", 90), ("90d", 90), ("7D", 7), ("12w", 84), ("1 week", 7), ("3 days", 3), (" 2W ", 14), (5, 5)],
)
def test_parse_duration_accepts_days_and_weeks(text, days):
    assert parse_duration(text) == days


@pytest.mark.parametrize("text", ["", "d", "7h", "1.5d", "-3d", "seven", "7 d d", True])
def test_parse_duration_rejects_other_forms(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["0", "0d", 0, -2])
def test_parse_duration_rejects_non_positive(text):
    with pytest.raises(ValueError, match="at least one day"):
        parse_duration(text)


# -- parse_as_of ---------------------------------------------------------------------------------


def test_parse_as_of_dates_offsets_and_lists_sorted_utc():
    got = parse_as_of(["2024-03-01", "2024-01-15T12:00:00+02:00, 2024-02-01T00:00:00Z"])
    expected = pd.DatetimeIndex([_utc("2024-01-15T10:00:00"), _utc("2024-02-01"), _utc("2024-03-01")]).as_unit("us")
    pd.testing.assert_index_equal(got, expected)
    assert str(got.dtype) == "datetime64[us, UTC]"


def test_parse_as_of_reads_naive_values_in_the_given_zone():
    got = parse_as_of(["2024-07-01T09:00:00"], tz="Europe/Berlin")
    assert got[0] == _utc("2024-07-01T07:00:00")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["2024-13-45"], "'2024-13-45' is not a date"),
        (["soon"], "'soon' is not a date"),
        (["2024-01-01T00:00:00.250"], "fraction of a second"),
        (["2024-01-01", "2024-01-01T01:00:00+01:00"], "given twice"),
        ([], "no as-of date"),
        ([" , "], "no as-of date"),
    ],
)
def test_parse_as_of_errors_name_the_value(values, message):
    with pytest.raises(ValueError, match=message):
        parse_as_of(values)


# -- snapshot_dates ------------------------------------------------------------------------------


def test_snapshot_grid_starts_one_full_interval_after_first_creation_and_includes_data_end():
    history = _history(["2024-01-03T15:30:00", "2024-01-20"], activity_times=["2024-02-08T00:00:00"])
    got = snapshot_dates(history, 7)
    # First midnight at/after creation is Jan 4; plus 7 days is Jan 11; data ends exactly on Feb 8 (on the grid).
    expected = pd.date_range(_utc("2024-01-11"), _utc("2024-02-08"), freq="7D").as_unit("us")
    assert got.equals(expected)
    assert got.dtype == expected.dtype
    assert got[-1] == _utc("2024-02-08")


def test_snapshot_grid_when_first_creation_is_exactly_midnight():
    history = _history(["2024-01-01"], stage_times=["2024-01-30T08:00:00"])
    got = snapshot_dates(history, 14)
    assert list(got) == [_utc("2024-01-15"), _utc("2024-01-29")]


def test_snapshot_end_is_the_latest_event_of_any_table():
    history = _history(["2024-01-01"], activity_times=["2024-01-10"], stage_times=["2024-02-01"])
    assert snapshot_dates(history, 7)[-1] == _utc("2024-01-29")


def test_snapshot_start_and_end_restrict_without_moving_the_grid():
    history = _history(["2024-01-01"], activity_times=["2024-03-31"])
    full = snapshot_dates(history, 7)
    part = snapshot_dates(history, 7, start="2024-01-20", end=_utc("2024-02-20"))
    assert set(part) <= set(full)
    assert part[0] == _utc("2024-01-22")  # grid: Jan 8, 15, 22, ...
    assert part[-1] == _utc("2024-02-19")
    assert list(part) == [d for d in full if _utc("2024-01-20") <= d <= _utc("2024-02-20")]


def test_snapshot_dates_stay_put_when_newer_data_arrives():
    short = snapshot_dates(_history(["2024-01-01"], activity_times=["2024-02-10"]), 7)
    longer = snapshot_dates(_history(["2024-01-01"], activity_times=["2024-06-10"]), 7)
    assert list(longer[: len(short)]) == list(short)
    assert len(longer) > len(short)


def test_snapshot_dates_error_when_data_is_shorter_than_an_interval():
    history = _history(["2024-01-01"], activity_times=["2024-01-05"])
    with pytest.raises(ValueError, match="no 7-day snapshot fits"):
        snapshot_dates(history, 7)


@pytest.mark.parametrize("every", [0, -7, 1.5, True])
def test_snapshot_dates_rejects_bad_interval(every):
    with pytest.raises(ValueError, match="every_days"):
        snapshot_dates(_history(["2024-01-01"], activity_times=["2024-03-01"]), every)


# -- configured_snapshot_dates -------------------------------------------------------------------------


def test_configured_snapshot_dates_follow_spacing_start_and_inclusive_end():
    history = _history(["2024-01-01"], activity_times=["2024-03-31"])
    cfg = FeatureConfig(snapshot_every_days=7, snapshot_start=dt.date(2024, 1, 20), snapshot_end=dt.date(2024, 2, 19))
    got = configured_snapshot_dates(history, cfg)
    # Grid Jan 8, 15, 22, ...: starts at the first grid date on/after the start; Feb 19 is on the grid and kept.
    assert list(got) == list(pd.date_range(_utc("2024-01-22"), _utc("2024-02-19"), freq="7D"))
    assert got.dtype == "datetime64[us, UTC]"


def test_configured_snapshot_dates_default_to_the_whole_grid():
    history = _history(["2024-01-01"], activity_times=["2024-03-31"])
    assert configured_snapshot_dates(history, FeatureConfig(snapshot_every_days=14)).equals(snapshot_dates(history, 14))


def test_configured_snapshot_range_outside_the_data_is_a_clear_error():
    history = _history(["2024-01-01"], activity_times=["2024-03-31"])
    with pytest.raises(ValueError, match="no 7-day snapshot fits between"):
        configured_snapshot_dates(history, FeatureConfig(snapshot_start=dt.date(2024, 6, 1)))


def test_feature_config_reads_snapshot_dates_and_refuses_an_end_before_the_start():
    cfg = FeatureConfig.model_validate({"snapshot_start": "2018-01-01", "snapshot_end": "2018-05-31"})
    assert (cfg.snapshot_start, cfg.snapshot_end) == (dt.date(2018, 1, 1), dt.date(2018, 5, 31))
    with pytest.raises(ValidationError, match=r"snapshot_end \(2018-01-01\) is before snapshot_start"):
        FeatureConfig.model_validate({"snapshot_start": "2018-05-31", "snapshot_end": "2018-01-01"})
