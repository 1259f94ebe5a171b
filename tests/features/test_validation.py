"""Tests for features.validation: loading a data directory against its contract, with quarantine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from features.contract import AttributeSpec, Contract, ContractError
from features.validation import (
    STR_DTYPE,
    TIMESTAMP_DTYPE,
    TableReport,
    ValidationResult,
    _may_repeat,
    load_history,
    write_quarantine,
)

NOW = pd.Timestamp("2025-01-01T00:00Z")
FORMATS = ("csv", "parquet")
TIME_COLUMNS = {"created_at", "occurred_at", "entered_at"}
NUMERIC_COLUMNS = {"employees", "value"}


def make_contract(**overrides: Any) -> Contract:
    fields: dict[str, Any] = {
        "activity_types": ["email_open", "web_visit", "form_submit"],
        "topics": ["pricing", "product"],
        "attributes": [
            AttributeSpec(name="industry", kind="categorical"),
            AttributeSpec(name="employees", kind="numeric"),
        ],
    }
    fields.update(overrides)
    return Contract(**fields)


def leads_frame(*rows: tuple) -> pd.DataFrame:
    rows = rows or (
        ("L1", "2024-01-01T10:00:00Z", "software", "10"),
        ("L2", "2024-01-02T10:00:00Z", "retail", "250"),
        ("L3", "2024-01-03T10:00:00Z", None, None),
    )
    return pd.DataFrame(rows, columns=["lead_id", "created_at", "industry", "employees"], dtype=object)


def activities_frame(*rows: tuple) -> pd.DataFrame:
    rows = rows or (
        ("L1", "2024-01-05T10:00:00Z", "email_open", "email", "C1", "pricing", None),
        ("L1", "2024-01-06T10:00:00Z", "web_visit", "web", None, "product", "2.5"),
        ("L2", "2024-01-07T10:00:00Z", "form_submit", None, "C2", None, "0"),
        ("L3", "2024-01-08T10:00:00Z", "web_visit", "web", None, None, None),
    )
    columns = ["lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value"]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def stages_frame(*rows: tuple) -> pd.DataFrame:
    rows = rows or (
        ("L1", "new", "2024-01-01T10:00:00Z"),
        ("L1", "mql", "2024-01-06T12:00:00Z"),
        ("L2", "new", "2024-01-02T10:00:00Z"),
    )
    return pd.DataFrame(rows, columns=["lead_id", "stage", "entered_at"], dtype=object)


def _typed_for_parquet(df: pd.DataFrame) -> pd.DataFrame:
    """Give Parquet files real types where every value allows it (as an exporter would)."""
    out = df.copy()
    for column in out.columns:
        values = out[column]
        if column in TIME_COLUMNS:
            try:  # naive strings give naive datetimes, as a typed export would hold them
                parsed = pd.to_datetime(values, format="ISO8601", errors="coerce")
            except ValueError:  # several offsets
                parsed = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
            if parsed.notna().sum() == values.notna().sum():
                out[column] = parsed
                continue
        if column in NUMERIC_COLUMNS:
            parsed = pd.to_numeric(values, errors="coerce")
            if parsed.notna().sum() == values.notna().sum():
                out[column] = parsed.astype("float64")
                continue
        out[column] = values.astype(STR_DTYPE)
    return out


def write_dir(
    path: Path,
    fmt: str = "csv",
    *,
    leads: pd.DataFrame | None = None,
    activities: pd.DataFrame | None = None,
    stages: pd.DataFrame | None = None,
    contract: Contract | None = None,
    typed: bool = True,
) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    tables = {
        "leads": leads_frame() if leads is None else leads,
        "activities": activities_frame() if activities is None else activities,
        "stage_history": stages_frame() if stages is None else stages,
    }
    for name, df in tables.items():
        if fmt == "csv":
            df.to_csv(path / f"{name}.csv", index=False)
        else:
            (_typed_for_parquet(df) if typed else df).to_parquet(path / f"{name}.parquet", index=False)
    (contract or make_contract()).dump(path)
    return path


def load(path: Path, **kwargs) -> ValidationResult:
    return load_history(path, now=kwargs.pop("now", NOW), **kwargs)


def quarantined(result: ValidationResult, table: str) -> list[tuple[int, str]]:
    q = result.quarantine[table]
    return list(zip(q["source_row"].tolist(), q["reason"].tolist(), strict=True))


def assert_balanced(result: ValidationResult) -> None:
    history = {
        "leads": result.history.leads,
        "activities": result.history.activities,
        "stage_history": result.history.stage_history,
    }
    for name, report in result.report.tables.items():
        assert report.rows_read == report.rows_accepted + report.rows_quarantined
        assert report.rows_accepted == len(history[name])
        rows = result.quarantine[name]["source_row"]
        assert report.rows_quarantined == len(rows) == rows.nunique()
        assert rows.between(1, report.rows_read).all()


# --------------------------------------------------------------------------------------------
# Clean data and canonical dtypes
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_clean_data_is_accepted_with_canonical_dtypes(tmp_path, fmt):
    result = load(write_dir(tmp_path, fmt))

    assert result.report.clean
    assert all(len(q) == 0 for q in result.quarantine.values())
    assert [t.rows_read for t in result.report.tables.values()] == [3, 4, 3]
    h = result.history
    assert h.contract == make_contract()
    assert h.leads.dtypes.to_dict() == {
        "lead_id": STR_DTYPE,
        "created_at": TIMESTAMP_DTYPE,
        "industry": STR_DTYPE,
        "employees": np.dtype("float64"),
    }
    assert h.activities.dtypes.to_dict() == {
        "lead_id": STR_DTYPE,
        "occurred_at": TIMESTAMP_DTYPE,
        "activity_type": STR_DTYPE,
        "channel": STR_DTYPE,
        "campaign_id": STR_DTYPE,
        "topic": STR_DTYPE,
        "value": np.dtype("float64"),
    }
    assert h.stage_history.dtypes.to_dict() == {"lead_id": STR_DTYPE, "stage": STR_DTYPE, "entered_at": TIMESTAMP_DTYPE}
    assert h.leads["lead_id"].tolist() == ["L1", "L2", "L3"]
    assert h.leads["created_at"].iloc[1] == pd.Timestamp("2024-01-02T10:00Z")
    assert h.leads["industry"].isna().tolist() == [False, False, True]
    assert h.leads["employees"].iloc[:2].tolist() == [10.0, 250.0]
    assert np.isnan(h.leads["employees"].iloc[2])
    assert h.activities["value"].iloc[1:3].tolist() == [2.5, 0.0]
    assert h.activities["topic"].isna().tolist() == [False, False, True, True]
    assert isinstance(h.leads.index, pd.RangeIndex)
    assert h.span == (pd.Timestamp("2024-01-01T10:00Z"), pd.Timestamp("2024-01-08T10:00Z"))


def test_optional_activity_columns_may_be_absent(tmp_path):
    activities = activities_frame()[["lead_id", "occurred_at", "activity_type"]]
    result = load(write_dir(tmp_path, activities=activities))

    acts = result.history.activities
    assert list(acts.columns) == ["lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value"]
    assert acts[["channel", "campaign_id", "topic", "value"]].isna().all().all()
    assert acts["channel"].dtype == STR_DTYPE and acts["value"].dtype == np.float64


def test_contract_is_read_from_the_data_directory_by_default(tmp_path):
    contract = make_contract(name="acme-crm")
    result = load(write_dir(tmp_path, contract=contract))
    assert result.history.contract.name == "acme-crm"
    assert result.report.contract_name == "acme-crm"


def test_missing_contract_is_an_error(tmp_path):
    write_dir(tmp_path)
    (tmp_path / "contract.yaml").unlink()
    with pytest.raises(ContractError, match="no data contract found"):
        load(tmp_path)


def test_integer_ids_from_parquet_become_strings(tmp_path):
    leads = pd.DataFrame(
        {
            "lead_id": np.array([101, 102], dtype=np.int64),
            "created_at": pd.to_datetime(["2024-01-01T10:00Z", "2024-01-02T10:00Z"]),
            "industry": ["a", "b"],
            "employees": [1.0, 2.0],
        }
    )
    # A null makes the integer ids float in pandas; they must still read as "101", not "101.0".
    activities = pd.DataFrame(
        {
            "lead_id": [101.0, 102.0, np.nan],
            "occurred_at": pd.to_datetime(["2024-01-05T10:00Z", "2024-01-06T10:00Z", "2024-01-07T10:00Z"]),
            "activity_type": ["email_open"] * 3,
            "campaign_id": pd.array([7, None, 9], dtype="Int64"),
        }
    )
    stages = pd.DataFrame({"lead_id": [102], "stage": ["new"], "entered_at": pd.to_datetime(["2024-01-02T10:00Z"])})
    path = write_dir(tmp_path, "parquet", leads=leads, activities=activities, stages=stages, typed=False)
    result = load(path)

    assert result.history.leads["lead_id"].tolist() == ["101", "102"]
    assert result.history.leads["lead_id"].dtype == STR_DTYPE
    assert result.history.activities["lead_id"].tolist() == ["101", "102"]
    assert result.history.activities["campaign_id"].tolist()[:1] == ["7"]
    assert result.history.stage_history["lead_id"].tolist() == ["102"]
    assert quarantined(result, "activities") == [(3, "lead_id is missing")]


def test_categorical_parquet_columns_are_normalised(tmp_path):
    leads = _typed_for_parquet(leads_frame())
    leads["lead_id"] = pd.Categorical(leads["lead_id"])
    leads["industry"] = pd.Categorical(leads["industry"])
    activities = _typed_for_parquet(activities_frame())
    activities["activity_type"] = pd.Categorical(activities["activity_type"])
    activities["lead_id"] = pd.Categorical(activities["lead_id"])
    activities["topic"] = pd.Categorical(activities["topic"], categories=["pricing", "product", "unused"])
    path = write_dir(tmp_path, "parquet", leads=leads, activities=activities, typed=False)
    assert isinstance(pd.read_parquet(path / "activities.parquet")["activity_type"].dtype, pd.CategoricalDtype)

    result = load(path)

    assert result.report.clean
    assert result.history.leads["industry"].dtype == STR_DTYPE
    assert result.history.leads["industry"].tolist()[:2] == ["software", "retail"]
    assert result.history.activities["activity_type"].dtype == STR_DTYPE
    assert result.history.activities["topic"].isna().tolist() == [False, False, True, True]


def test_parquet_index_holding_lead_id_is_restored_as_a_column(tmp_path):
    path = write_dir(tmp_path, "parquet")
    leads = pd.read_parquet(path / "leads.parquet").set_index("lead_id")
    leads.to_parquet(path / "leads.parquet")
    result = load(path)
    assert result.report.clean
    assert result.history.leads["lead_id"].tolist() == ["L1", "L2", "L3"]


# --------------------------------------------------------------------------------------------
# Whole-file problems
# --------------------------------------------------------------------------------------------
def test_missing_data_directory_is_an_error(tmp_path):
    with pytest.raises(ContractError, match="nowhere: data directory does not exist"):
        load(tmp_path / "nowhere")


def test_missing_table_is_an_error(tmp_path):
    write_dir(tmp_path)
    (tmp_path / "stage_history.csv").unlink()
    with pytest.raises(ContractError, match=r"missing table 'stage_history' \(expected stage_history.parquet"):
        load(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_columns_are_named(tmp_path, fmt):
    activities = activities_frame().drop(columns=["occurred_at", "activity_type"])
    write_dir(tmp_path, fmt, activities=activities)
    with pytest.raises(ContractError) as err:
        load(tmp_path)
    message = str(err.value)
    assert f"activities.{fmt}" in message
    assert "missing required column(s) 'occurred_at', 'activity_type'" in message


def test_missing_declared_attribute_column_is_named(tmp_path):
    write_dir(tmp_path, leads=leads_frame().drop(columns=["employees"]))
    with pytest.raises(ContractError, match=r"leads\.csv: table 'leads': missing required column\(s\) 'employees'"):
        load(tmp_path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_undeclared_columns_are_named_with_the_fix(tmp_path, fmt):
    leads = leads_frame().assign(owner_email="x@example.com", score="5")
    write_dir(tmp_path, fmt, leads=leads)
    with pytest.raises(ContractError) as err:
        load(tmp_path)
    message = str(err.value)
    assert f"leads.{fmt}" in message
    assert "'owner_email', 'score' are not declared in the data contract" in message
    assert "attributes" in message and "ignore_columns" in message


def test_undeclared_event_column_mentions_ignore_columns(tmp_path):
    write_dir(tmp_path, stages=stages_frame().assign(owner="bob"))
    with pytest.raises(ContractError, match=r"stage_history\.csv.*'owner'.*ignore_columns: \{stage_history"):
        load(tmp_path)


def test_duplicate_csv_header_is_an_error(tmp_path):
    write_dir(tmp_path)
    (tmp_path / "stage_history.csv").write_text("lead_id,stage,entered_at,stage\nL1,new,2024-01-01T10:00Z,new\n")
    with pytest.raises(ContractError, match=r"stage_history\.csv: duplicate column name\(s\) in the header: 'stage'"):
        load(tmp_path)


def test_ignored_columns_are_dropped_but_kept_in_quarantine(tmp_path):
    contract = make_contract(ignore_columns={"activities": ["crm_note"]})
    activities = activities_frame().assign(crm_note=["a", "b", "c", "d"])
    activities.loc[2, "activity_type"] = "fax"
    result = load(write_dir(tmp_path, activities=activities, contract=contract))

    assert "crm_note" not in result.history.activities.columns
    q = result.quarantine["activities"]
    assert q["crm_note"].tolist() == ["c"]
    assert q["source_row"].tolist() == [3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_leads_table_is_an_error(tmp_path, fmt):
    write_dir(tmp_path, fmt, leads=leads_frame().iloc[:0], activities=activities_frame().iloc[:0])
    with pytest.raises(ContractError, match=rf"leads\.{fmt}: the leads table has no rows"):
        load(tmp_path)


def test_empty_event_tables_are_fine(tmp_path):
    result = load(write_dir(tmp_path, activities=activities_frame().iloc[:0], stages=stages_frame().iloc[:0]))
    assert result.report.clean
    assert len(result.history.activities) == 0 and len(result.history.stage_history) == 0
    assert result.history.activities["occurred_at"].dtype == TIMESTAMP_DTYPE


@pytest.mark.parametrize("fmt", FORMATS)
def test_timestamp_column_mixing_offsets_and_none_is_an_error(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[2, "occurred_at"] = "2024-01-07 10:00:00"  # row 3: no offset
    write_dir(tmp_path, fmt, activities=activities, typed=False)  # Parquet: a string column
    with pytest.raises(ContractError) as err:
        load(tmp_path)
    message = str(err.value)
    assert f"activities.{fmt}: column 'occurred_at' mixes timestamps with a time-zone offset" in message
    assert "(first at row 1: '2024-01-05T10:00:00Z')" in message
    assert "(first at row 3: '2024-01-07 10:00:00')" in message


def test_unparseable_values_do_not_count_as_naive_when_mixing_is_checked(tmp_path):
    activities = activities_frame()
    activities.loc[1, "occurred_at"] = "soon"
    result = load(write_dir(tmp_path, activities=activities))
    assert quarantined(result, "activities") == [(2, "occurred_at 'soon' is not a valid timestamp")]


# --------------------------------------------------------------------------------------------
# Row problems, one kind per test
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_unparseable_timestamp_is_quarantined(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[1, "occurred_at"] = "2024-13-01"
    stages = stages_frame()
    stages.loc[2, "entered_at"] = "yesterday"
    result = load(write_dir(tmp_path, fmt, activities=activities, stages=stages))

    assert quarantined(result, "activities") == [(2, "occurred_at '2024-13-01' is not a valid timestamp")]
    assert quarantined(result, "stage_history") == [(3, "entered_at 'yesterday' is not a valid timestamp")]
    assert result.report.tables["activities"].reasons == {"invalid_timestamp": 1}
    # The quarantine keeps the value as read.
    assert result.quarantine["activities"]["occurred_at"].tolist() == ["2024-13-01"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_lead_is_quarantined(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[3, "lead_id"] = "L9"
    stages = stages_frame()
    stages.loc[0, "lead_id"] = "L42"
    result = load(write_dir(tmp_path, fmt, activities=activities, stages=stages))

    assert quarantined(result, "activities") == [(4, "lead_id 'L9' is not in leads")]
    assert quarantined(result, "stage_history") == [(1, "lead_id 'L42' is not in leads")]
    assert result.report.tables["activities"].reasons == {"unknown_lead": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_events_of_a_quarantined_lead_cascade_with_an_explicit_reason(tmp_path, fmt):
    leads = leads_frame()
    leads.loc[1, "employees"] = "many"  # L2 is quarantined
    result = load(write_dir(tmp_path, fmt, leads=leads))

    assert quarantined(result, "leads") == [(2, "employees 'many' is not a number")]
    cascade = "lead_id 'L2' was quarantined in leads (see leads quarantine)"
    assert quarantined(result, "activities") == [(3, cascade)]
    assert quarantined(result, "stage_history") == [(3, cascade)]
    assert result.report.tables["activities"].reasons == {"quarantined_lead": 1}
    assert "L2" not in result.history.leads["lead_id"].tolist()


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_events_keep_the_first(tmp_path, fmt):
    activities = activities_frame()
    activities = pd.concat([activities, activities.iloc[[1, 1, 3]]], ignore_index=True)
    result = load(write_dir(tmp_path, fmt, activities=activities))

    assert quarantined(result, "activities") == [
        (5, "duplicate of row 2"),
        (6, "duplicate of row 2"),
        (7, "duplicate of row 4"),
    ]
    assert len(result.history.activities) == 4


def test_events_equal_after_parsing_are_duplicates(tmp_path):
    activities = activities_frame(
        ("L1", "2024-01-05T10:00:00Z", "email_open", "email", "C1", "pricing", "1"),
        ("L1", "2024-01-05T11:00:00+01:00", "email_open", "email", "C1", "pricing", "1.0"),
        # differs in one column only: not a duplicate
        ("L1", "2024-01-05T10:00:00Z", "email_open", "web", "C1", "pricing", "1"),
    )
    result = load(write_dir(tmp_path, activities=activities))
    assert quarantined(result, "activities") == [(2, "duplicate of row 1")]


def test_duplicate_stage_entries_are_quarantined(tmp_path):
    stages = stages_frame()
    stages = pd.concat([stages, stages.iloc[[1]]], ignore_index=True)
    stages.loc[4] = ["L1", "sql", "2024-01-06T12:00:00Z"]  # same lead and time, other stage: fine
    result = load(write_dir(tmp_path, stages=stages))
    assert quarantined(result, "stage_history") == [(4, "duplicate of row 2")]
    assert result.history.stage_history["stage"].tolist() == ["new", "mql", "new", "sql"]


def test_a_duplicate_never_points_at_a_quarantined_row(tmp_path):
    activities = activities_frame()
    bad = activities.iloc[[0]].assign(topic="gossip")
    activities = pd.concat([bad, activities.iloc[1:], bad], ignore_index=True)
    result = load(write_dir(tmp_path, activities=activities))
    reason = "topic 'gossip' is not declared in the contract (topics: [pricing, product])"
    assert quarantined(result, "activities") == [(1, reason), (5, reason)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_events_before_lead_creation_are_quarantined(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[2, "occurred_at"] = "2024-01-01T00:00:00Z"  # L2 created 2024-01-02T10:00Z
    stages = stages_frame()
    stages.loc[0, "entered_at"] = "2024-01-01T09:59:59Z"  # L1 created 2024-01-01T10:00Z
    result = load(write_dir(tmp_path, fmt, activities=activities, stages=stages))

    assert quarantined(result, "activities") == [
        (3, "occurred_at 2024-01-01T00:00Z is before the lead's created_at 2024-01-02T10:00Z")
    ]
    assert quarantined(result, "stage_history") == [
        (1, "entered_at 2024-01-01T09:59:59Z is before the lead's created_at 2024-01-01T10:00Z")
    ]


def test_event_at_creation_time_is_accepted(tmp_path):
    # stages_frame() has L1 'new' at exactly its created_at.
    result = load(write_dir(tmp_path))
    assert result.history.stage_history["entered_at"].iloc[0] == result.history.leads["created_at"].iloc[0]
    assert result.report.clean


@pytest.mark.parametrize("fmt", FORMATS)
def test_timestamps_in_the_future_are_quarantined(tmp_path, fmt):
    leads = leads_frame()
    leads.loc[2, "created_at"] = "2025-03-01T00:00:00Z"
    activities = activities_frame()
    activities.loc[0, "occurred_at"] = "2025-01-01T00:00:01Z"
    activities.loc[1, "occurred_at"] = "2025-01-01T00:00:00Z"  # exactly now: fine
    result = load(write_dir(tmp_path, fmt, leads=leads, activities=activities))

    assert quarantined(result, "leads") == [
        (3, "created_at 2025-03-01T00:00Z is in the future (now is 2025-01-01T00:00Z)")
    ]
    assert quarantined(result, "activities") == [
        (1, "occurred_at 2025-01-01T00:00:01Z is in the future (now is 2025-01-01T00:00Z)"),
        (4, "lead_id 'L3' was quarantined in leads (see leads quarantine)"),
    ]


def test_now_defaults_to_the_current_time(tmp_path):
    activities = activities_frame()
    activities.loc[0, "occurred_at"] = "2999-01-01T00:00:00Z"
    result = load_history(write_dir(tmp_path, activities=activities))
    assert [row for row, _ in quarantined(result, "activities")] == [1]
    assert result.report.now.tz is not None


def test_now_must_be_time_zone_aware(tmp_path):
    with pytest.raises(ValueError, match="now must be time-zone aware"):
        load_history(write_dir(tmp_path), now=pd.Timestamp("2025-01-01"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_activity_value_is_quarantined(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[1, "value"] = "-3"
    result = load(write_dir(tmp_path, fmt, activities=activities))
    assert quarantined(result, "activities") == [(2, "value -3.0 is negative")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unparseable_activity_value_is_quarantined(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[1, "value"] = "2,5"
    activities.loc[2, "value"] = "inf"
    result = load(write_dir(tmp_path, fmt, activities=activities))
    assert quarantined(result, "activities") == [
        (2, "value '2,5' is not a number"),
        (3, "value 'inf' is not a finite number"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_stage_is_quarantined(tmp_path, fmt):
    stages = stages_frame()
    stages.loc[1, "stage"] = "negotiation"
    result = load(write_dir(tmp_path, fmt, stages=stages))
    assert quarantined(result, "stage_history") == [
        (2, "stage 'negotiation' is not one of [new, mql, sql, opportunity, won, lost, disqualified]")
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_activity_type_and_topic_are_quarantined(tmp_path, fmt):
    activities = activities_frame()
    activities.loc[0, "activity_type"] = "fax"
    activities.loc[2, "topic"] = "gossip"
    result = load(write_dir(tmp_path, fmt, activities=activities))
    assert quarantined(result, "activities") == [
        (1, "activity_type 'fax' is not one of [email_open, web_visit, form_submit]"),
        (3, "topic 'gossip' is not declared in the contract (topics: [pricing, product])"),
    ]


def test_topics_need_declaring_even_when_the_contract_has_none(tmp_path):
    result = load(write_dir(tmp_path, contract=make_contract(topics=[])))
    reasons = [reason for _, reason in quarantined(result, "activities")]
    assert reasons == [
        "topic 'pricing' is not declared in the contract (topics: [])",
        "topic 'product' is not declared in the contract (topics: [])",
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_lead_ids_keep_the_first(tmp_path, fmt):
    leads = leads_frame(
        ("L1", "2024-01-01T10:00:00Z", "software", "10"),
        ("L2", "2024-01-02T10:00:00Z", "retail", "250"),
        ("L1", "2024-01-01T11:00:00Z", "retail", "11"),
        ("L3", "2024-01-03T10:00:00Z", None, None),
        ("L1", "2024-01-01T12:00:00Z", "retail", "12"),
    )
    result = load(write_dir(tmp_path, fmt, leads=leads))
    assert quarantined(result, "leads") == [
        (3, "lead_id 'L1' is a duplicate of row 1"),
        (5, "lead_id 'L1' is a duplicate of row 1"),
    ]
    kept = result.history.leads.set_index("lead_id")
    assert kept.loc["L1", "industry"] == "software"
    # L1 still has an accepted row, so its events are kept.
    assert result.report.tables["activities"].rows_quarantined == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_required_values_are_quarantined(tmp_path, fmt):
    leads = leads_frame()
    leads.loc[2, "created_at"] = None
    activities = activities_frame()
    activities.loc[0, "lead_id"] = None
    activities.loc[1, "activity_type"] = None
    stages = stages_frame()
    stages.loc[2, "stage"] = None
    result = load(write_dir(tmp_path, fmt, leads=leads, activities=activities, stages=stages))

    assert quarantined(result, "leads") == [(3, "created_at is missing")]
    assert quarantined(result, "activities") == [
        (1, "lead_id is missing"),
        (2, "activity_type is missing"),
        (4, "lead_id 'L3' was quarantined in leads (see leads quarantine)"),
    ]
    assert quarantined(result, "stage_history") == [(3, "stage is missing")]
    assert result.report.tables["activities"].reasons == {
        "missing_value:activity_type": 1,
        "missing_value:lead_id": 1,
        "quarantined_lead": 1,
    }


def test_blank_strings_count_as_missing(tmp_path):
    leads = leads_frame()
    leads.loc[0, "lead_id"] = "   "
    leads.loc[1, "industry"] = " "
    result = load(write_dir(tmp_path, "parquet", leads=leads))
    assert quarantined(result, "leads") == [(1, "lead_id is missing")]
    assert result.history.leads["industry"].isna().tolist() == [True, True]


@pytest.mark.parametrize("fmt", FORMATS)
def test_numeric_attributes(tmp_path, fmt):
    leads = leads_frame(
        ("L1", "2024-01-01T10:00:00Z", "software", "-4"),  # negative: allowed for attributes
        ("L2", "2024-01-02T10:00:00Z", "retail", "twelve"),
        ("L3", "2024-01-03T10:00:00Z", None, None),  # missing: allowed (NaN)
        ("L4", "2024-01-03T10:00:00Z", None, "NaN"),  # spelled-out missing value
        ("L5", "2024-01-03T10:00:00Z", None, " 7 "),
    )
    result = load(write_dir(tmp_path, fmt, leads=leads, activities=activities_frame().iloc[:2]))

    assert quarantined(result, "leads") == [(2, "employees 'twelve' is not a number")]
    employees = result.history.leads.set_index("lead_id")["employees"]
    assert employees["L1"] == -4.0 and employees["L5"] == 7.0
    assert np.isnan(employees["L3"]) and np.isnan(employees["L4"])
    assert result.report.tables["leads"].reasons == {"invalid_number:employees": 1}


def test_several_problems_in_one_row_are_joined(tmp_path):
    activities = activities_frame()
    activities.loc[3] = ["L9", "2024-13-01", "fax", None, None, "gossip", "-1"]
    result = load(write_dir(tmp_path, activities=activities))
    assert quarantined(result, "activities") == [
        (
            4,
            "lead_id 'L9' is not in leads; occurred_at '2024-13-01' is not a valid timestamp; "
            "activity_type 'fax' is not one of [email_open, web_visit, form_submit]; "
            "topic 'gossip' is not declared in the contract (topics: [pricing, product]); value -1.0 is negative",
        )
    ]
    reasons = result.report.tables["activities"].reasons
    assert reasons == {
        "invalid_timestamp": 1,
        "negative_value": 1,
        "unknown_activity_type": 1,
        "unknown_lead": 1,
        "unknown_topic": 1,
    }


@pytest.mark.parametrize("fmt", FORMATS)
def test_accounting_invariant_on_a_mixed_dirty_data_set(tmp_path, fmt):
    rng = np.random.default_rng(7)
    n_leads, n_acts = 40, 400
    created = pd.Timestamp("2024-01-01T00:00Z") + pd.to_timedelta(rng.integers(0, 100, n_leads), unit="D")
    leads = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(n_leads)],
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "industry": rng.choice(["a", "b"], n_leads),
            "employees": rng.integers(1, 500, n_leads).astype(str),
        }
    ).astype(object)
    leads.loc[[3, 17], "employees"] = "n/a?"
    leads.loc[25, "lead_id"] = "L4"
    owner = rng.integers(0, n_leads, n_acts)
    occurred = created[owner] + pd.to_timedelta(rng.integers(-5, 200, n_acts), unit="D")
    activities = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in owner],
            "occurred_at": occurred.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "activity_type": rng.choice(["email_open", "web_visit", "fax"], n_acts, p=[0.5, 0.45, 0.05]),
            "topic": rng.choice(np.array(["pricing", "product", "gossip", None], dtype=object), n_acts),
            "value": rng.choice(np.array(["1", "-2", "x", None], dtype=object), n_acts, p=[0.4, 0.05, 0.05, 0.5]),
        }
    ).astype(object)
    activities.loc[[10, 20], "lead_id"] = "nobody"
    activities.loc[30, "occurred_at"] = "not a time"
    activities = pd.concat([activities, activities.iloc[[50, 60]]], ignore_index=True)
    stages = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(n_leads)] * 2,
            "stage": ["new"] * n_leads + list(rng.choice(["mql", "haggling"], n_leads)),
            "entered_at": list(leads["created_at"]) * 2,
        }
    )
    result = load(write_dir(tmp_path, fmt, leads=leads, activities=activities, stages=stages))

    assert_balanced(result)
    reports = result.report.tables
    assert reports["leads"].rows_read == n_leads
    assert reports["activities"].rows_read == n_acts + 2
    assert reports["stage_history"].rows_read == 2 * n_leads
    assert quarantined(result, "leads") == [
        (4, "employees 'n/a?' is not a number"),
        (18, "employees 'n/a?' is not a number"),
        (26, "lead_id 'L4' is a duplicate of row 5"),
    ]
    # Every kind of injected problem shows up, and no accepted row breaks the contract.
    kinds = set(reports["activities"].reasons)
    assert {"unknown_lead", "quarantined_lead", "invalid_timestamp", "unknown_activity_type"} <= kinds
    assert {"unknown_topic", "negative_value", "invalid_number:value", "before_lead_created"} <= kinds
    acts = result.history.activities
    assert acts["activity_type"].isin(["email_open", "web_visit"]).all()
    assert acts["topic"].dropna().isin(["pricing", "product"]).all()
    assert (acts["value"].dropna() >= 0).all()
    created_of = result.history.leads.set_index("lead_id")["created_at"]
    assert (acts["occurred_at"].to_numpy() >= created_of[acts["lead_id"]].to_numpy()).all()
    assert not acts.duplicated().any()
    assert result.history.stage_history["stage"].isin(["new", "mql"]).all()
    # Row totals match the report, and the per-kind counts never exceed the quarantined rows.
    assert result.report.rows_read == sum(len(df) for df in (leads, activities, stages))
    for report in reports.values():
        assert all(0 < count <= report.rows_quarantined for count in report.reasons.values())


def test_many_rejected_rows_keep_order_and_accounting(tmp_path):
    # More rejects than the slice-based assembly handles: the take path must give the same result.
    n = 1500
    activities = pd.DataFrame(
        {
            "lead_id": ["L1"] * n,
            "occurred_at": [f"2024-02-01T00:{i // 60:02d}:{i % 60:02d}Z" for i in range(n)],
            "activity_type": ["fax" if i % 5 else "web_visit" for i in range(n)],
        }
    )
    result = load(write_dir(tmp_path, activities=activities))
    assert_balanced(result)
    accepted = result.history.activities
    assert len(accepted) == n // 5
    assert accepted["occurred_at"].is_monotonic_increasing
    assert result.quarantine["activities"]["source_row"].tolist() == [i + 1 for i in range(n) if i % 5]
    assert set(result.quarantine["activities"]["reason"]) == {
        "activity_type 'fax' is not one of [email_open, web_visit, form_submit]"
    }


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-(2**62), 2**62) | st.integers(0, 3)), max_size=40))
def test_duplicate_prefilter_keeps_every_repeat(pairs):
    first = np.array([p[0] for p in pairs], dtype=np.int64)
    second = np.array([p[1] for p in pairs], dtype=np.int64)
    mask = _may_repeat(first, second)
    truly = pd.DataFrame({"a": first, "b": second}).duplicated(keep=False).to_numpy()
    assert mask.shape == truly.shape
    assert not (truly & ~mask).any()


# --------------------------------------------------------------------------------------------
# Time zones and timestamp forms
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_naive_timestamps_are_read_in_the_contract_time_zone(tmp_path, fmt):
    leads = leads_frame(
        ("L1", "2024-01-15 10:00:00", "a", "1"),  # CET, UTC+1
        ("L2", "2024-07-15 10:00", "a", "1"),  # CEST, UTC+2
        ("L3", "2024-03-01", "a", "1"),  # midnight local
    )
    activities = activities_frame(("L1", "2024-01-16T08:30:00", "email_open", None, None, None, None))
    stages = stages_frame(("L2", "new", "2024-07-15 10:00:00"))
    path = write_dir(
        tmp_path,
        fmt,
        leads=leads,
        activities=activities,
        stages=stages,
        contract=make_contract(timezone="Europe/Berlin"),
    )
    result = load(path)

    assert result.report.clean
    assert result.history.leads["created_at"].tolist() == [
        pd.Timestamp("2024-01-15T09:00Z"),
        pd.Timestamp("2024-07-15T08:00Z"),
        pd.Timestamp("2024-02-29T23:00Z"),
    ]
    assert result.history.activities["occurred_at"].iloc[0] == pd.Timestamp("2024-01-16T07:30Z")
    assert result.history.stage_history["entered_at"].iloc[0] == pd.Timestamp("2024-07-15T08:00Z")


@pytest.mark.parametrize("fmt", FORMATS)
def test_timestamps_with_different_offsets_are_converted_to_utc(tmp_path, fmt):
    activities = activities_frame(
        ("L1", "2024-01-05T10:00:00+01:00", "email_open", None, None, None, None),
        ("L1", "2024-01-05T10:00:00-05:00", "email_open", None, None, None, None),
        ("L1", "2024-01-05 10:00:00.250Z", "email_open", None, None, None, None),
        ("L1", "2024-01-05T10:00+0530", "email_open", None, None, None, None),
    )
    # The contract time zone does not matter for values with an offset.
    result = load(write_dir(tmp_path, fmt, activities=activities, contract=make_contract(timezone="Asia/Tokyo")))

    assert result.history.activities["occurred_at"].tolist() == [
        pd.Timestamp("2024-01-05T09:00Z"),
        pd.Timestamp("2024-01-05T15:00Z"),
        pd.Timestamp("2024-01-05T10:00:00.250Z"),
        pd.Timestamp("2024-01-05T04:30Z"),
    ]


def test_parquet_naive_datetimes_are_read_in_the_contract_time_zone(tmp_path):
    leads = _typed_for_parquet(leads_frame())
    leads["created_at"] = pd.to_datetime(["2024-01-01 10:00", "2024-07-02 10:00", "2024-01-03 10:00"]).as_unit("ns")
    activities = _typed_for_parquet(activities_frame())
    activities["occurred_at"] = pd.to_datetime(activities["occurred_at"]).dt.tz_convert("America/New_York")
    path = write_dir(
        tmp_path,
        "parquet",
        leads=leads,
        activities=activities,
        contract=make_contract(timezone="Europe/Berlin"),
        typed=False,
    )
    result = load(path)

    assert result.history.leads["created_at"].tolist()[:2] == [
        pd.Timestamp("2024-01-01T09:00Z"),
        pd.Timestamp("2024-07-02T08:00Z"),
    ]
    assert result.history.leads["created_at"].dtype == TIMESTAMP_DTYPE
    # tz-aware Parquet values keep their instant whatever their zone.
    assert result.history.activities["occurred_at"].iloc[0] == pd.Timestamp("2024-01-05T10:00Z")
    assert result.history.activities["occurred_at"].dtype == TIMESTAMP_DTYPE


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_times_made_ambiguous_or_impossible_by_dst_are_quarantined(tmp_path, fmt):
    leads = leads_frame(
        ("L1", "2024-03-31 02:30:00", "a", "1"),  # skipped: clocks jump 02:00 -> 03:00
        ("L2", "2024-10-27 02:30:00", "a", "1"),  # repeated: 02:00-03:00 happens twice
        ("L3", "2024-10-27 03:30:00", "a", "1"),  # fine
    )
    if fmt == "parquet":
        leads["created_at"] = pd.to_datetime(leads["created_at"])
    path = write_dir(
        tmp_path,
        fmt,
        leads=leads,
        activities=activities_frame().iloc[:0],
        stages=stages_frame().iloc[:0],
        contract=make_contract(timezone="Europe/Berlin"),
        typed=False,
    )
    result = load(path)

    reasons = dict(quarantined(result, "leads"))
    assert sorted(reasons) == [1, 2]
    assert reasons[1].startswith("created_at '2024-03-31 02:30:00' does not exist in time zone Europe/Berlin")
    assert reasons[2].startswith("created_at '2024-10-27 02:30:00' is ambiguous in time zone Europe/Berlin")
    assert result.history.leads["created_at"].tolist() == [pd.Timestamp("2024-10-27T02:30Z")]
    assert result.report.tables["leads"].reasons == {"ambiguous_local_time": 1, "nonexistent_local_time": 1}


def test_common_non_iso_forms_are_accepted(tmp_path):
    activities = activities_frame(
        ("L1", "2024-01-31 09:30:00 UTC", "email_open", None, None, None, None),
        ("L1", " 2024-01-31T09:31:00Z ", "email_open", None, None, None, None),
        ("L1", "Wed, 31 Jan 2024 10:32:00 +0100", "email_open", None, None, None, None),
        ("L1", "2024/01/31 09:33:00Z", "email_open", None, None, None, None),
    )
    result = load(write_dir(tmp_path, activities=activities))
    assert result.report.clean
    assert result.history.activities["occurred_at"].dt.strftime("%H:%M").tolist() == [
        "09:30",
        "09:31",
        "09:32",
        "09:33",
    ]


def test_day_first_dotted_dates_and_ambiguous_slash_dates(tmp_path):
    leads = leads_frame(
        ("L1", "31.01.2024 09:30", "a", "1"),
        ("L2", "01.02.2024", "a", "1"),
        ("L3", "01/02/2024", "a", "1"),  # day/month order unknown: rejected, not guessed
    )
    path = write_dir(tmp_path, leads=leads, activities=activities_frame().iloc[:0], stages=stages_frame().iloc[:0])
    result = load(path)
    assert result.history.leads["created_at"].tolist() == [
        pd.Timestamp("2024-01-31T09:30Z"),
        pd.Timestamp("2024-02-01T00:00Z"),
    ]
    assert quarantined(result, "leads") == [(3, "created_at '01/02/2024' is not a valid timestamp")]


# --------------------------------------------------------------------------------------------
# Quarantine files and the report
# --------------------------------------------------------------------------------------------
def test_write_quarantine_writes_rejects_and_report_then_clears_stale_files(tmp_path):
    activities = activities_frame()
    activities.loc[1, "occurred_at"] = "2024-13-01"
    data = write_dir(tmp_path / "data", activities=activities)
    out = tmp_path / "quarantine"
    written = write_quarantine(load(data), out)

    assert set(written) == {"activities", "report"}
    q = pd.read_csv(written["activities"], dtype=str, keep_default_na=False)
    assert q.columns.tolist() == [
        "source_row",
        "lead_id",
        "occurred_at",
        "activity_type",
        "channel",
        "campaign_id",
        "topic",
        "value",
        "reason",
    ]
    assert q.iloc[0].to_dict() == {
        "source_row": "2",
        "lead_id": "L1",
        "occurred_at": "2024-13-01",
        "activity_type": "web_visit",
        "channel": "web",
        "campaign_id": "",
        "topic": "product",
        "value": "2.5",
        "reason": "occurred_at '2024-13-01' is not a valid timestamp",
    }
    report = json.loads(written["report"].read_text())
    assert report["tables"]["activities"]["rows_quarantined"] == 1
    assert report["tables"]["activities"]["reasons"] == {"invalid_timestamp": 1}
    assert report["quarantine_files"] == {"activities": str(out / "activities.csv")}
    assert report["rows_read"] == report["rows_accepted"] + report["rows_quarantined"] == 10

    # The data are fixed: the next run must not leave the old rejects behind.
    clean = write_dir(tmp_path / "data")
    written = write_quarantine(load(clean), out)
    assert set(written) == {"report"}
    assert not (out / "activities.csv").exists()
    assert json.loads((out / "report.json").read_text())["rows_quarantined"] == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]


def test_quarantine_keeps_parquet_values_as_read(tmp_path):
    activities = _typed_for_parquet(activities_frame())
    activities.loc[2, "value"] = -3.0
    result = load(write_dir(tmp_path, "parquet", activities=activities, typed=False))
    q = result.quarantine["activities"]
    assert q["occurred_at"].iloc[0] == pd.Timestamp("2024-01-07T10:00Z")
    assert q["value"].tolist() == [-3.0]
    assert q["source_row"].dtype == np.int64


def test_quarantine_column_name_clash_keeps_both(tmp_path):
    contract = make_contract(ignore_columns={"stage_history": ["reason"]})
    stages = stages_frame().assign(reason=["x", "y", "z"])
    stages.loc[0, "stage"] = "limbo"
    result = load(write_dir(tmp_path, stages=stages, contract=contract))
    q = result.quarantine["stage_history"]
    assert q["original_reason"].tolist() == ["x"]
    assert q["reason"].str.startswith("stage 'limbo'").all()


def test_report_to_dict_and_render(tmp_path):
    stages = stages_frame()
    stages.loc[1, "stage"] = "limbo"
    result = load(write_dir(tmp_path, stages=stages))
    data = json.loads(json.dumps(result.report.to_dict()))
    assert data["now"] == "2025-01-01T00:00Z"
    assert data["tables"]["stage_history"] | {"seconds": 0} == {
        "table": "stage_history",
        "path": str(tmp_path / "stage_history.csv"),
        "rows_read": 3,
        "rows_accepted": 2,
        "rows_quarantined": 1,
        "reasons": {"unknown_stage": 1},
        "seconds": 0,
    }
    console = Console(record=True, width=200)
    console.print(result.report.render())
    text = console.export_text()
    assert "stage_history" in text and "unknown_stage: 1" in text and "total" in text
    assert "stage_history: read 3, accepted 2, quarantined 1" in result.report.summary()


def test_unbalanced_table_report_cannot_be_built():
    with pytest.raises(RuntimeError, match="does not balance"):
        TableReport(table="leads", path=Path("leads.csv"), rows_read=5, rows_accepted=3, rows_quarantined=1)
