"""Tests for features.single_snapshot: one row per lead, labelled by its final outcome."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.config import FeatureConfig
from features.contract import AttributeSpec, Contract, StageSpec
from features.history import ProspectHistory
from features.single_snapshot import (
    build_single_snapshot_features,
    is_single_snapshot,
    single_snapshot_spec,
)
from features.spec import FeatureSpec, read_feature_table, write_feature_table
from features.validation import STR_DTYPE, TIMESTAMP_DTYPE

STAGES = StageSpec(order=["open", "won", "lost"], converted="won", closed_negative=["lost"])


def contract(**overrides: object) -> Contract:
    fields: dict[str, object] = {
        "name": "snapshot-test",
        "mode": "single_snapshot",
        "activity_types": [],
        "attributes": [
            AttributeSpec(name="job", kind="categorical"),
            AttributeSpec(name="total_visits", kind="numeric"),
        ],
        "stages": STAGES,
    }
    fields.update(overrides)
    return Contract(**fields)  # type: ignore[arg-type]


def times(*values: str) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True, format="ISO8601"), dtype=TIMESTAMP_DTYPE)


def history(stage_rows: list[tuple[str, str, str]] | None = None, c: Contract | None = None) -> ProspectHistory:
    leads = pd.DataFrame(
        {
            "lead_id": pd.Series(["L3", "L1", "L2", "L4"], dtype=STR_DTYPE),
            "created_at": times(
                "2020-01-01T00:00:00.250Z", "2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z", "2020-01-03T00:00:00Z"
            ),
            "job": pd.Series(["admin", None, "student", "retired"], dtype=STR_DTYPE),
            "total_visits": [3.0, np.nan, 0.0, 7.5],
        }
    )
    rows = (
        stage_rows
        if stage_rows is not None
        else [
            ("L1", "won", "2020-01-01T00:00:00Z"),
            ("L2", "lost", "2020-01-02T00:00:00Z"),
            ("L3", "won", "2020-01-01T00:00:01Z"),
        ]
    )
    stage_history = pd.DataFrame(
        {
            "lead_id": pd.Series([r[0] for r in rows], dtype=STR_DTYPE),
            "stage": pd.Series([r[1] for r in rows], dtype=STR_DTYPE),
            "entered_at": times(*[r[2] for r in rows]),
        }
    )
    activities = pd.DataFrame(
        {
            "lead_id": pd.Series([], dtype=STR_DTYPE),
            "occurred_at": times(),
            "activity_type": pd.Series([], dtype=STR_DTYPE),
        }
    )
    return ProspectHistory(c or contract(), leads, activities, stage_history)


def test_one_row_per_lead_with_attributes_and_outcome() -> None:
    frame, spec = build_single_snapshot_features(history(), FeatureConfig(horizon_days=30))
    assert list(frame.columns) == [
        "lead_id",
        "as_of",
        "job",
        "total_visits",
        "converted",
        "days_to_conversion",
        "observed_days",
    ]
    assert frame["lead_id"].tolist() == ["L1", "L2", "L3", "L4"]  # sorted by lead id
    assert frame["converted"].tolist() == [1, 0, 1, 0]
    assert frame["converted"].dtype == np.int8
    # Leads with an outcome are never censored; L4 has none: censored for every horizon.
    assert frame["observed_days"].tolist() == [np.inf, np.inf, np.inf, 0.0]
    assert frame["days_to_conversion"].isna().all()
    # as_of is the creation time rounded up to a whole second.
    assert frame["as_of"].tolist() == [
        pd.Timestamp("2020-01-01T00:00:00Z"),
        pd.Timestamp("2020-01-02T00:00:00Z"),
        pd.Timestamp("2020-01-01T00:00:01Z"),
        pd.Timestamp("2020-01-03T00:00:00Z"),
    ]
    assert frame["total_visits"].dtype == np.float32
    assert frame["job"].isna().tolist() == [True, False, False, False]
    assert spec.categorical == ["job"]
    assert spec.numeric == ["total_visits"]
    assert spec.mode == "single_snapshot"
    assert spec.horizon_days == 30
    assert spec.contract_name == "snapshot-test"


def test_the_latest_entry_decides_the_outcome() -> None:
    rows = [
        ("L1", "lost", "2020-01-05T00:00:00Z"),
        ("L1", "won", "2020-01-06T00:00:00Z"),  # later: won
        ("L2", "won", "2020-01-05T00:00:00Z"),
        ("L2", "open", "2020-01-07T00:00:00Z"),  # re-opened: no outcome
        ("L3", "won", "2020-01-05T00:00:00Z"),
        ("L3", "lost", "2020-01-05T00:00:00Z"),  # same instant: the later stage in the contract order (lost)
    ]
    frame, _ = build_single_snapshot_features(history(rows))
    by_lead = frame.set_index("lead_id")
    assert by_lead["converted"].to_dict() == {"L1": 1, "L2": 0, "L3": 0, "L4": 0}
    assert by_lead["observed_days"].to_dict() == {"L1": np.inf, "L2": 0.0, "L3": np.inf, "L4": 0.0}


def test_round_trips_through_a_feature_table_file(tmp_path) -> None:
    frame, spec = build_single_snapshot_features(history())
    path = write_feature_table(frame, spec, tmp_path / "features.parquet")
    loaded, loaded_spec = read_feature_table(path)
    assert loaded_spec == spec
    assert loaded["observed_days"].tolist() == frame["observed_days"].tolist()


def test_old_feature_specs_default_to_history_mode() -> None:
    legacy = '{"categorical": [], "numeric": ["a"], "horizon_days": 90}'
    assert FeatureSpec.from_json(legacy).mode == "history"


def test_history_mode_contracts_are_refused() -> None:
    c = contract(mode="history", activity_types=["web_visit"])
    assert not is_single_snapshot(c)
    with pytest.raises(ValueError, match=r"history mode; build its features with features\.build\.build_features"):
        build_single_snapshot_features(history(c=c))


def test_attributes_may_not_shadow_label_columns() -> None:
    c = contract(attributes=[AttributeSpec(name="converted", kind="numeric")])
    with pytest.raises(ValueError, match=r"attribute\(s\) \['converted'\] clash with the id/label columns"):
        single_snapshot_spec(c, FeatureConfig())


def test_a_contract_without_attributes_has_no_features() -> None:
    with pytest.raises(ValueError, match="needs at least one attribute"):
        single_snapshot_spec(contract(attributes=[]), FeatureConfig())


def test_build_features_on_single_snapshot_data_returns_the_leads_still_without_outcome() -> None:
    """What scoring needs: leads created by as_of whose outcome is unknown, with their static features."""
    from features.build import build_features

    h = history()
    config = FeatureConfig(horizon_days=30)
    frame, spec = build_features(
        h, [pd.Timestamp("2020-01-02T12:00:00Z"), pd.Timestamp("2020-02-01T00:00:00Z")], config
    )
    # L4 (no outcome) exists only from 2020-01-03: absent at the first date, present at the second
    assert frame["lead_id"].tolist() == ["L4"]
    assert frame["as_of"].tolist() == [pd.Timestamp("2020-02-01T00:00:00Z")]
    assert frame["total_visits"].tolist() == [7.5]
    assert spec.mode == "single_snapshot"
    empty, _ = build_features(h, [pd.Timestamp("2020-01-02T12:00:00Z")], config)
    assert len(empty) == 0 and list(empty.columns) == list(frame.columns)
