"""Tests for features.mapping: a YAML mapping turns a CRM export into a validated data directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from features.build import build_features
from features.config import FeatureConfig
from features.contract import Contract, ContractError
from features.mapping import (
    IMPORT_REPORT_FILE,
    MappingError,
    builtin_mappings,
    import_export,
    load_mapping,
    resolve_mapping,
    snake_name,
)
from features.validation import load_history

NOW = pd.Timestamp("2025-01-01T00:00:00Z")


# -- helpers --------------------------------------------------------------------------------------


def write_csv(path: Path, header: list[str], rows: list[list[Any]], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


CONTACTS_HEADER = ["Contact ID", "Created", "Industry", "Employees", "Lead Score (sales)", "Owner Email"]
CONTACTS = [
    ["C1", "15/01/2024 09:30", "Software", "120", "95", "a@example.com"],
    ["C2", "16/01/2024 10:00", "Select", "", "10", "b@example.com"],
    ["C3", "15/07/2024 09:30", "Retail", "8", "40", "c@example.com"],
]
EVENTS_HEADER = ["Contact", "Timestamp", "Event", "Source", "Campaign", "Topic", "Pages"]
EVENTS = [
    ["C1", "2024-01-20T10:00:00Z", "Page View", "web", "", "Pricing", "3"],
    ["C1", "2024-01-21T10:00:00Z", "Email Open", "email", "SPRING", "", ""],
    ["C2", "2024-01-22T10:00:00Z", "Page View", "web", "", "Security", "1"],
]
STATUS_HEADER = ["Contact", "Status", "Changed"]
STATUS = [
    ["C1", "MQL", "2024-01-25 12:00"],
    ["C1", "Closed Won", "2024-03-01 12:00"],
    ["C2", "Closed Lost", "2024-02-10 12:00"],
]


def export(
    tmp_path: Path,
    contacts: list[list[Any]] | None = None,
    events: list[list[Any]] | None = None,
    status: list[list[Any]] | None = None,
) -> Path:
    src = tmp_path / "export"
    src.mkdir(exist_ok=True)
    write_csv(src / "contacts.csv", CONTACTS_HEADER, CONTACTS if contacts is None else contacts)
    write_csv(src / "events.csv", EVENTS_HEADER, EVENTS if events is None else events)
    write_csv(src / "status.csv", STATUS_HEADER, STATUS if status is None else status)
    return src


def base_mapping() -> dict[str, Any]:
    return {
        "version": 1,
        "name": "acme-crm",
        "timezone": "Europe/Brussels",
        "missing_values": ["Select"],
        "sources": {
            "contacts": {"path": "contacts.csv"},
            "events": {"path": "events.csv"},
            "status": {"path": "status.csv"},
        },
        "leads": {
            "source": "contacts",
            "id": "Contact ID",
            "created_at": {"column": "Created", "format": "%d/%m/%Y %H:%M"},
        },
        "attributes": [
            {"column": "Industry", "kind": "categorical"},
            {"column": "Employees", "kind": "numeric"},
        ],
        "excluded": [
            {"column": "Lead Score (sales)", "reason": "leaky", "note": "set by sales after qualification"},
            {"column": "Owner Email", "reason": "identifier"},
        ],
        "activities": [
            {
                "source": "events",
                "lead_id": "Contact",
                "time": "Timestamp",
                "type": {
                    "column": "Event",
                    "values": {"Page View": "web_visit", "Email Open": "email_open", "Unsubscribe": None},
                },
                "channel": "Source",
                "campaign": "Campaign",
                "topic": {"column": "Topic", "values": {"Pricing": "pricing", "Security": "security"}},
                "value": "Pages",
            }
        ],
        "stages": {
            "order": ["new", "mql", "won", "lost"],
            "converted": "won",
            "closed_negative": ["lost"],
            "events": [
                {
                    "source": "status",
                    "lead_id": "Contact",
                    "stage": {
                        "column": "Status",
                        "values": {"MQL": "mql", "Closed Won": "won", "Closed Lost": "lost"},
                    },
                    "time": "Changed",
                }
            ],
        },
    }


def write_mapping(tmp_path: Path, mapping: dict[str, Any], name: str = "mapping.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(mapping, sort_keys=False), encoding="utf-8")
    return path


def run(tmp_path: Path, mapping: dict[str, Any], **kwargs: Any):
    src = kwargs.pop("src", None) or export(tmp_path)
    return import_export(write_mapping(tmp_path, mapping), src, tmp_path / "data", now=NOW, **kwargs)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


# -- the happy path -------------------------------------------------------------------------------


def test_history_import_writes_a_valid_data_directory(tmp_path: Path) -> None:
    summary = run(tmp_path, base_mapping())
    out = tmp_path / "data"
    assert sorted(p.name for p in out.iterdir()) == [
        "activities.parquet",
        "contract.yaml",
        IMPORT_REPORT_FILE,
        "leads.parquet",
        "quarantine",
        "stage_history.parquet",
    ]
    contract = Contract.load(out)
    assert contract.mode == "history"
    assert contract.timezone == "Europe/Brussels"
    assert [(a.name, a.kind) for a in contract.attributes] == [("industry", "categorical"), ("employees", "numeric")]
    assert contract.activity_types == ["web_visit", "email_open"]
    assert contract.topics == ["pricing", "security"]
    assert contract.stages.order == ["new", "mql", "won", "lost"]
    excluded = {e.column: (e.name, e.reason, e.source) for e in contract.excluded_columns}
    assert excluded == {
        "Lead Score (sales)": ("lead_score_sales", "leaky", "contacts.csv"),
        "Owner Email": ("owner_email", "identifier", "contacts.csv"),
    }
    assert contract.post_outcome_columns == ["lead_score_sales"]

    result = load_history(out, now=NOW)
    assert result.report.clean
    leads = result.history.leads
    assert list(leads.columns) == ["lead_id", "created_at", "industry", "employees"]
    assert "lead_score_sales" not in leads.columns  # excluded columns are not written at all
    # 09:30 in Brussels is 08:30 UTC in winter and 07:30 UTC in summer.
    assert leads["created_at"].tolist() == [
        utc("2024-01-15T08:30Z"),
        utc("2024-01-16T09:00Z"),
        utc("2024-07-15T07:30Z"),
    ]
    assert leads["industry"].isna().tolist() == [False, True, False]  # "Select" is missing
    assert leads["employees"].tolist()[0] == 120.0
    assert np.isnan(leads["employees"].tolist()[1])

    acts = result.history.activities
    assert acts["activity_type"].tolist() == ["web_visit", "email_open", "web_visit"]
    assert acts["topic"].tolist()[0] == "pricing"
    assert pd.isna(acts["topic"].tolist()[1])
    assert acts["campaign_id"].tolist()[1] == "SPRING"
    assert acts["value"].tolist()[0] == 3.0
    stages = result.history.stage_history
    assert stages["stage"].tolist() == ["mql", "won", "lost"]
    assert stages["entered_at"].tolist()[1] == utc("2024-03-01T11:00Z")  # no offset: read in Brussels

    for report in summary.sources.values():
        assert report.rows_read == report.rows_used + report.rows_skipped + report.rows_rejected
        assert report.rows_rejected == 0
    assert summary.tables_written == {"leads": 3, "activities": 3, "stage_history": 3}
    written = json.loads((out / IMPORT_REPORT_FILE).read_text())
    assert written["sources"]["events"]["rows_used"] == 3
    assert json.loads((out / "quarantine" / "report.json").read_text())["data_dir"] == str(out)

    # The data directory is ordinary input for the point-in-time features.
    frame, spec = build_features(result.history, pd.DatetimeIndex(["2024-02-01T00:00Z"]), FeatureConfig())
    assert set(frame["lead_id"]) == {"C1", "C2"}  # C3 is created later
    row = frame.set_index("lead_id").loc["C1"]
    assert row["n_web_visit_30d"] == 1 and row["stage"] == "mql"
    assert "lead_score_sales" not in spec.features


def test_rejections_are_kept_with_reasons_and_every_row_is_accounted_for(tmp_path: Path) -> None:
    contacts = [*CONTACTS, ["C4", "2024-13-45 10:00", "Retail", "5", "1", "d@example.com"]]
    events = [
        *EVENTS,
        ["C2", "2024-01-23T10:00:00Z", "Webinar", "web", "", "", ""],  # unmapped type: rejected
        ["C2", "2024-01-24T10:00:00Z", "Unsubscribe", "email", "", "", ""],  # mapped to null: skipped
        ["C1", "yesterday", "Page View", "web", "", "", ""],  # bad time: rejected
        ["C4", "2024-01-24T10:00:00Z", "Page View", "web", "", "", ""],  # its lead is rejected
        ["C1", "2024-01-26T10:00:00Z", "Page View", "web", "", "Cloud", ""],  # unmapped topic: rejected
    ]
    status = [*STATUS, ["C3", "Nurture", "2024-08-01 10:00"], ["C4", "MQL", "2024-02-01 10:00"]]
    src = export(tmp_path, contacts, events, status)
    summary = run(tmp_path, base_mapping(), src=src)

    contacts_report = summary.sources["contacts"]
    assert (contacts_report.rows_read, contacts_report.rows_used, contacts_report.rows_rejected) == (4, 3, 1)
    events_report = summary.sources["events"]
    assert (events_report.rows_read, events_report.rows_used) == (8, 3)
    assert (events_report.rows_skipped, events_report.rows_rejected) == (1, 4)
    assert events_report.skipped == {"activities.0: activity type mapped to null": 1}
    status_report = summary.sources["status"]
    assert (status_report.rows_read, status_report.rows_used, status_report.rows_rejected) == (5, 3, 2)
    for report in summary.sources.values():
        assert report.rows_read == report.rows_used + report.rows_skipped + report.rows_rejected

    quarantine = tmp_path / "data" / "quarantine"
    rejected_contacts = pd.read_csv(quarantine / "source_contacts.csv", dtype=str)
    assert rejected_contacts["source_row"].tolist() == ["4"]
    assert rejected_contacts["Contact ID"].tolist() == ["C4"]  # original values are kept
    assert "contacts.Created '2024-13-45 10:00' is not a valid timestamp" in rejected_contacts["reason"][0]
    assert "%d/%m/%Y %H:%M" in rejected_contacts["reason"][0]

    rejected_events = pd.read_csv(quarantine / "source_events.csv", dtype=str).set_index("source_row")
    assert set(rejected_events.index) == {"4", "6", "7", "8"}
    assert "events.Event 'Webinar' is not in the activity type value map" in rejected_events.loc["4", "reason"]
    assert "events.Timestamp 'yesterday' is not a valid timestamp" in rejected_events.loc["6", "reason"]
    assert "lead 'C4' was rejected by the mapping" in rejected_events.loc["7", "reason"]
    assert "events.Topic 'Cloud'" in rejected_events.loc["8", "reason"]
    rejected_status = pd.read_csv(quarantine / "source_status.csv", dtype=str)
    assert rejected_status["Status"].tolist() == ["Nurture", "MQL"]

    result = load_history(tmp_path / "data", now=NOW)
    assert result.report.clean
    assert sorted(result.history.leads["lead_id"]) == ["C1", "C2", "C3"]
    assert len(result.history.activities) == 3
    assert summary.rows_rejected == 7


def test_validation_quarantine_is_reported_next_to_the_mapping_rejects(tmp_path: Path) -> None:
    # A missing created time and an activity in the future are contract problems, found by validation.
    contacts = [*CONTACTS, ["C5", "", "Retail", "5", "1", "e@example.com"]]
    events = [*EVENTS, ["C1", "2031-01-01T00:00:00Z", "Page View", "web", "", "", ""]]
    summary = run(tmp_path, base_mapping(), src=export(tmp_path, contacts, events))
    assert summary.sources["contacts"].rows_rejected == 0
    assert summary.validation.tables["leads"].rows_quarantined == 1
    assert summary.validation.tables["activities"].rows_quarantined == 1
    quarantine = tmp_path / "data" / "quarantine"
    assert "created_at is missing" in pd.read_csv(quarantine / "leads.csv")["reason"][0]
    assert "in the future" in pd.read_csv(quarantine / "activities.csv")["reason"][0]
    assert summary.quarantine_files["leads"] == tmp_path / "data" / "quarantine" / "leads.csv"


def test_duplicate_lead_ids_are_rejected_with_their_events(tmp_path: Path) -> None:
    contacts = [*CONTACTS, ["C1", "20/01/2024 09:30", "Retail", "5", "1", "dup@example.com"]]
    summary = run(tmp_path, base_mapping(), src=export(tmp_path, contacts))
    assert summary.sources["contacts"].rejected == {"duplicate_lead_id": 1}
    rejected = pd.read_csv(tmp_path / "data" / "quarantine" / "source_contacts.csv")
    assert rejected["reason"][0] == "lead id 'C1' is a duplicate of row 1"
    # The first C1 is kept: its events still belong to it.
    assert load_history(tmp_path / "data", now=NOW).report.clean


def test_stage_entry_before_the_leads_own_created_time_rejects_the_lead(tmp_path: Path) -> None:
    src = tmp_path / "export"
    src.mkdir()
    write_csv(
        src / "deals.csv",
        ["id", "first_contact", "origin", "won_at"],
        [["D1", "2024-03-08", "web", "2024-03-06 19:38:55"], ["D2", "2024-03-01", "web", "2024-03-05 10:00:00"]],
    )
    mapping = {
        "name": "deals",
        "sources": {"deals": {"path": "deals.csv"}},
        "leads": {"source": "deals", "id": "id", "created_at": "first_contact"},
        "attributes": [{"column": "origin", "kind": "categorical"}],
        "activity_types": ["visit"],
        "stages": {
            "order": ["open", "won"],
            "converted": "won",
            "events": [{"source": "deals", "stage": {"value": "won"}, "time": "won_at", "skip_if_time_missing": True}],
        },
    }
    summary = run(tmp_path, mapping, src=src)
    assert summary.sources["deals"].rejected == {"stage_before_created": 1}
    reason = pd.read_csv(tmp_path / "data" / "quarantine" / "source_deals.csv")["reason"][0]
    assert reason == (
        "stages.events.0: stage 'won' at deals.won_at 2024-03-06T19:38:55Z is before the lead's created time "
        "2024-03-08T00:00:00Z"
    )
    history = load_history(tmp_path / "data", now=NOW).history
    assert history.leads["lead_id"].tolist() == ["D2"]
    assert history.stage_history["lead_id"].tolist() == ["D2"]


def test_times_that_do_not_exist_locally_are_rejected(tmp_path: Path) -> None:
    # 31 March 2024, 02:30 does not exist in Brussels (clocks jump from 02:00 to 03:00).
    contacts = [*CONTACTS, ["C6", "31/03/2024 02:30", "Retail", "5", "1", "f@example.com"]]
    summary = run(tmp_path, base_mapping(), src=export(tmp_path, contacts))
    assert summary.sources["contacts"].rejected == {"nonexistent_local_time:contacts.Created": 1}


def test_a_time_column_mixing_offsets_and_local_times_is_refused(tmp_path: Path) -> None:
    events = [*EVENTS, ["C1", "2024-01-23 10:00", "Page View", "web", "", "", ""]]
    with pytest.raises(MappingError, match=r"events.csv: column events.Timestamp mixes times with a time-zone offset"):
        run(tmp_path, base_mapping(), src=export(tmp_path, events=events))


# -- joins ----------------------------------------------------------------------------------------


def _join_export(tmp_path: Path) -> Path:
    src = tmp_path / "export"
    src.mkdir()
    write_csv(
        src / "mql.csv",
        ["mql_id", "first_contact_date", "origin"],
        [["M1", "2024-01-01", "social"], ["M2", "2024-01-02", "email"], ["M3", "2024-01-03", ""]],
    )
    write_csv(
        src / "won.csv",
        ["mql_id", "won_date", "segment"],
        [
            ["M1", "2024-02-01 10:00:00", "pet"],
            ["M1", "2024-02-02 10:00:00", "toys"],  # duplicate key
            ["M9", "2024-02-03 10:00:00", "car"],  # no such MQL
            ["", "2024-02-04 10:00:00", "car"],  # missing key
            ["M3", "2024-02-05 10:00:00", "home"],
        ],
    )
    return src


def _join_mapping(**join: Any) -> dict[str, Any]:
    return {
        "name": "funnel",
        "sources": {"mql": {"path": "mql.csv"}, "won": {"path": "won.csv"}},
        "leads": {"source": "mql", "id": "mql_id", "created_at": "first_contact_date"},
        "joins": [{"source": "won", "key": "mql_id", **join}],
        "attributes": [{"column": "origin", "kind": "categorical"}],
        "excluded": [{"column": "segment", "reason": "post_outcome", "note": "filled in on won deals"}],
        "activities": [
            {"source": "mql", "time": "first_contact_date", "type": {"value": "form_submit"}, "channel": "origin"}
        ],
        "stages": {
            "order": ["mql", "won"],
            "converted": "won",
            "events": [{"source": "won", "stage": {"value": "won"}, "time": "won_date", "skip_if_time_missing": True}],
        },
    }


def test_a_one_to_one_join_rejects_duplicate_missing_and_unmatched_keys(tmp_path: Path) -> None:
    summary = run(tmp_path, _join_mapping(), src=_join_export(tmp_path))
    won = summary.sources["won"]
    assert (won.rows_read, won.rows_used, won.rows_skipped, won.rows_rejected) == (5, 2, 0, 3)
    assert won.rejected == {"duplicate_key:mql_id": 1, "missing_key:mql_id": 1, "unmatched_key:mql_id": 1}
    reasons = pd.read_csv(tmp_path / "data" / "quarantine" / "source_won.csv")["reason"].tolist()
    assert reasons == [
        "mql_id 'M1' is a duplicate of row 1 (a joined source needs one row per key)",
        "mql_id 'M9' matches no mql_id of source 'mql'",
        "mql_id is missing",
    ]
    history = load_history(tmp_path / "data", now=NOW).history
    # M1 keeps the first deal (2024-02-01); M2 has none; M3 its own.
    assert history.stage_history["lead_id"].tolist() == ["M1", "M3"]
    assert history.stage_history["entered_at"].tolist() == [utc("2024-02-01T10:00Z"), utc("2024-02-05T10:00Z")]
    assert history.activities["channel"].tolist()[:2] == ["social", "email"]
    rule = next(r for r in summary.rules if r.rule == "stages.events.0")
    assert rule.rows_written == 2
    assert rule.not_applicable == {"won.won_date missing (skip_if_time_missing)": 1}


def test_a_lookup_join_skips_unused_rows(tmp_path: Path) -> None:
    summary = run(tmp_path, _join_mapping(unmatched="skip"), src=_join_export(tmp_path))
    won = summary.sources["won"]
    assert won.rejected == {"duplicate_key:mql_id": 1, "missing_key:mql_id": 1}
    assert won.skipped == {"no lead has this mql_id (unmatched: skip)": 1}


def test_joined_columns_follow_their_lead_and_values_are_replaced_before_joining(tmp_path: Path) -> None:
    src = tmp_path / "export"
    src.mkdir()
    write_csv(
        src / "pipeline.csv",
        ["opportunity_id", "product", "engage_date", "deal_stage", "close_date"],
        [
            ["O1", "GTXPro", "2017-01-01", "Won", "2017-02-01"],
            ["O2", "MG Special", "2017-01-02", "Lost", "2017-02-02"],
            ["O3", "GTX Basic", "2017-01-03", "Engaging", ""],
        ],
    )
    write_csv(
        src / "products.csv",
        ["product", "series", "sales_price"],
        [["GTX Basic", "GTX", "550"], ["GTX Pro", "GTX", "4821"], ["MG Special", "MG", "55"], ["Unsold", "X", "1"]],
    )
    mapping = {
        "name": "pipeline",
        "sources": {
            "pipeline": {"path": "pipeline.csv", "replace": {"product": {"GTXPro": "GTX Pro"}}},
            "products": {"path": "products.csv"},
        },
        "leads": {"source": "pipeline", "id": "opportunity_id", "created_at": "engage_date"},
        "joins": [{"source": "products", "key": "product", "unmatched": "skip"}],
        "attributes": [
            {"column": "product", "kind": "categorical"},
            {"column": "series", "kind": "categorical"},
            {"column": "sales_price", "kind": "numeric"},
        ],
        "activity_types": ["sales_activity"],
        "stages": {
            "order": ["engaging", "won", "lost"],
            "converted": "won",
            "closed_negative": ["lost"],
            "events": [
                {
                    "source": "pipeline",
                    "stage": {"column": "deal_stage", "values": {"Won": "won", "Lost": "lost", "Engaging": None}},
                    "time": "close_date",
                }
            ],
        },
        "excluded": [{"column": "close_date", "reason": "post_outcome"}],
    }
    summary = run(tmp_path, mapping, src=src)
    leads = load_history(tmp_path / "data", now=NOW).history.leads.set_index("lead_id")
    assert leads["product"].to_dict() == {"O1": "GTX Pro", "O2": "MG Special", "O3": "GTX Basic"}
    assert leads["series"].to_dict() == {"O1": "GTX", "O2": "MG", "O3": "GTX"}
    assert leads["sales_price"].to_dict() == {"O1": 4821.0, "O2": 55.0, "O3": 550.0}
    assert summary.sources["products"].skipped == {"no lead has this product (unmatched: skip)": 1}
    rule = summary.rules[0]
    assert rule.not_applicable == {"pipeline.deal_stage 'Engaging' maps to no stage": 1}


# -- single-snapshot mode -------------------------------------------------------------------------


def _snapshot_export(tmp_path: Path) -> Path:
    src = tmp_path / "export"
    src.mkdir()
    write_csv(
        src / "bank.csv",
        ["age", "job", "pdays", "campaign", "duration", "y"],
        [
            ["56", "housemaid", "999", "1", "261", "no"],
            ["41", "admin.", "6", "2", "1500", "yes"],
            ["", "unknown", "999", "1", "100", ""],  # no outcome: an open lead
            ["33", "services", "3", "4", "90", "maybe"],  # unmapped outcome
            ["72", "retired", "abc", "1", "90", "no"],  # not a number
        ],
        delimiter=";",
    )
    return src


def _snapshot_mapping() -> dict[str, Any]:
    return {
        "name": "bank",
        "mode": "single_snapshot",
        "sources": {"bank": {"path": "bank.csv", "delimiter": ";"}},
        "leads": {
            "source": "bank",
            "id": {"row_number": True, "prefix": "contact-"},
            "created_at": {"fixed": "2010-11-30T00:00:00Z"},
        },
        "label": {"column": "y", "positive": ["yes"], "negative": ["no"]},
        "attributes": [
            {"column": "age", "kind": "categorical", "bins": {"edges": [30, 60]}},
            {"column": "job", "kind": "categorical"},
        ],
        "aggregate_activities": [
            {"column": "campaign", "name": "contacts_this_campaign"},
            {"column": "pdays", "name": "days_since_previous", "values": {"999": None}},
        ],
        "excluded": [{"column": "duration", "reason": "leaky", "note": "known after the call"}],
    }


def test_single_snapshot_import(tmp_path: Path) -> None:
    summary = run(tmp_path, _snapshot_mapping(), src=_snapshot_export(tmp_path))
    bank = summary.sources["bank"]
    assert (bank.rows_read, bank.rows_used, bank.rows_rejected) == (5, 3, 2)
    reasons = pd.read_csv(tmp_path / "data" / "quarantine" / "source_bank.csv")["reason"].tolist()
    assert reasons == [
        "bank.y 'maybe' is neither a positive ['yes'] nor a negative ['no'] outcome value",
        "bank.pdays 'abc' is not a number",
    ]
    contract = Contract.load(tmp_path / "data")
    assert contract.mode == "single_snapshot"
    assert contract.activity_types == []
    assert contract.stages.order == ["open", "won", "lost"]
    assert [(a.name, a.kind) for a in contract.attributes] == [
        ("age", "categorical"),
        ("job", "categorical"),
        ("contacts_this_campaign", "numeric"),
        ("days_since_previous", "numeric"),
    ]
    reasons_by_name = {e.name: e.reason for e in contract.excluded_columns}
    assert reasons_by_name == {"duration": "leaky", "y": "outcome"}

    history = load_history(tmp_path / "data", now=NOW).history
    leads = history.leads.set_index("lead_id")
    assert list(leads.index) == ["contact-1", "contact-2", "contact-3"]
    assert leads["age"].tolist()[:2] == ["30-60", "30-60"]
    assert pd.isna(leads.loc["contact-3", "age"])
    assert leads["days_since_previous"].isna().tolist() == [True, False, True]  # 999 = never contacted
    assert (leads["created_at"] == utc("2010-11-30T00:00Z")).all()
    stages = history.stage_history.set_index("lead_id")["stage"].to_dict()
    assert stages == {"contact-1": "lost", "contact-2": "won"}  # contact-3 has no outcome: left open
    label_rule = next(r for r in summary.rules if r.rule == "label")
    assert label_rule.not_applicable == {"y missing: lead left open (unlabelled)": 1}


def test_bins_default_labels_and_edges() -> None:
    from features.mapping.schema import BinsConfig

    assert BinsConfig(edges=[25, 35.5]).bin_labels() == ["<25", "25-35.5", ">=35.5"]
    with pytest.raises(ValueError, match="increase strictly"):
        BinsConfig(edges=[3, 3])
    with pytest.raises(ValueError, match="3 bins; got 2 labels"):
        BinsConfig(edges=[1, 2], labels=["a", "b"])


def test_sample_rows_reads_the_first_leads_and_skips_rows_of_the_others(tmp_path: Path) -> None:
    summary = run(tmp_path, base_mapping(), sample_rows=1)
    assert summary.sources["contacts"].rows_read == 1
    events = summary.sources["events"]
    assert (events.rows_used, events.rows_skipped, events.rows_rejected) == (2, 1, 0)
    assert events.skipped == {"outside the sample": 1}
    assert summary.sample_rows == 1
    assert load_history(tmp_path / "data", now=NOW).report.clean


def test_parquet_sources_are_read_as_text(tmp_path: Path) -> None:
    src = tmp_path / "export"
    src.mkdir()
    pd.DataFrame(
        {
            "id": [101, 102],
            "created": pd.to_datetime(["2024-01-01T10:00Z", "2024-01-02T10:00Z"]),
            "score": [1.5, np.nan],
            "converted": [1, 0],
        }
    ).to_parquet(src / "leads.parquet")
    mapping = {
        "name": "pq",
        "mode": "single_snapshot",
        "sources": {"leads": {"path": "leads.parquet"}},
        "leads": {"source": "leads", "id": "id", "created_at": "created"},
        "label": {"column": "converted", "positive": [1]},
        "aggregate_activities": [{"column": "score"}],
    }
    run(tmp_path, mapping, src=src)
    history = load_history(tmp_path / "data", now=NOW).history
    assert history.leads["lead_id"].tolist() == ["101", "102"]
    assert history.leads["created_at"].tolist() == [utc("2024-01-01T10:00Z"), utc("2024-01-02T10:00Z")]
    assert history.stage_history["stage"].tolist() == ["won", "lost"]


# -- mapping errors -------------------------------------------------------------------------------


def _with(changes: dict[str, Any]) -> dict[str, Any]:
    mapping = base_mapping()
    for dotted, value in changes.items():
        node: Any = mapping
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list) and int(last) == len(node):
            node.append(value)
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mapping


_DELETE = object()


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"colour": "blue"}, ["colour", "Extra inputs are not permitted"]),
        ({"version": 2}, ["version", "not supported"]),
        ({"attributes.0.kind": "text"}, ["attributes.0.kind"]),
        ({"timezone": "Mars/Olympus"}, ["timezone", "Mars/Olympus"]),
        ({"leads.source": "crm"}, ["leads.source: source 'crm' is not declared"]),
        ({"label": {"column": "x", "positive": ["1"]}}, ["label: only single_snapshot mode has a label"]),
        ({"aggregate_activities": [{"column": "Employees"}]}, ["aggregate_activities: activity totals"]),
        ({"mode": "single_snapshot"}, ["single_snapshot mode needs a label", "activities: single_snapshot"]),
        ({"stages": _DELETE}, ["history mode needs stages"]),
        ({"stages.events.0.stage.values.MQL": "sql"}, ["stages.events.0.stage: ['sql'] are not in stages.order"]),
        ({"activities.0.type": {"column": "Event"}}, ["needs activity_types declared"]),
        ({"activity_types": ["web_visit"]}, ["activities.0.type: ['email_open'] are not in activity_types"]),
        ({"attributes.1.name": "industry"}, ["duplicate feature names ['industry']"]),
        ({"attributes.1.name": "created_at"}, ["'created_at' is a required leads column"]),
        ({"stages.events.0.stage.values": {"MQL": True}}, ["boolean", "quote it"]),
        ({"leads.created_at": {"column": "Created", "fixed": "2020-01-01"}}, ["exactly one of column"]),
        ({"leads.created_at": {"fixed": "someday"}}, ["not an ISO 8601 time"]),
    ],
)
def test_invalid_mapping_names_the_file_and_field(
    tmp_path: Path, changes: dict[str, Any], fragments: list[str]
) -> None:
    path = write_mapping(tmp_path, _with(changes))
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_unquoted_yaml_booleans_as_keys_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(base_mapping()).replace("Closed Won: won", "on: won"))
    with pytest.raises(MappingError, match=r"stages.events.0.stage.values.True \(was it 'on'"):
        load_mapping(path)


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (
            {"attributes.0.column": "Sector"},
            ["attributes.0.column: column 'Sector' is not in 'contacts' (contacts.csv)"],
        ),
        ({"activities.0.lead_id": "Contact Id"}, ["activities.0.lead_id: column 'Contact Id' is not in 'events'"]),
        ({"excluded": []}, ["column 'Lead Score (sales)' of source 'contacts' (contacts.csv) is neither mapped nor"]),
        (
            {"attributes.2": {"column": "Lead Score (sales)", "kind": "numeric"}},
            ["excluded.0: column 'Lead Score (sales)' of 'contacts' is excluded (leaky) but used as a feature"],
        ),
        ({"sources.extra": {"path": "events.csv"}}, ["sources.extra: declared but not used"]),
        ({"sources.events.path": "missing.csv"}, ["sources.events.path: file", "missing.csv does not exist"]),
        ({"activities.0.lead_id": _DELETE}, ["activities.0.lead_id: source 'events' needs the column"]),
    ],
)
def test_a_mapping_that_does_not_fit_the_export_is_explained(
    tmp_path: Path, changes: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(MappingError) as info:
        run(tmp_path, _with(changes))
    message = str(info.value)
    assert "mapping.yaml" in message
    for fragment in fragments:
        assert fragment in message
    assert not (tmp_path / "data").exists()


def test_other_columns_excludes_the_unmentioned_columns_explicitly(tmp_path: Path) -> None:
    mapping = _with({"excluded": [], "other_columns": {"reason": "unused", "note": "not reviewed yet"}})
    run(tmp_path, mapping)
    excluded = {e.column: (e.reason, e.note) for e in Contract.load(tmp_path / "data").excluded_columns}
    assert excluded == {
        "Lead Score (sales)": ("unused", "not reviewed yet"),
        "Owner Email": ("unused", "not reviewed yet"),
    }


def test_a_wrong_delimiter_is_reported(tmp_path: Path) -> None:
    mapping = _snapshot_mapping()
    mapping["sources"]["bank"]["delimiter"] = ","
    with pytest.raises(
        MappingError, match=r"bank.csv: read a single column .* looks delimited by ';': set sources.bank"
    ):
        run(tmp_path, mapping, src=_snapshot_export(tmp_path))


def test_ambiguous_columns_need_a_source(tmp_path: Path) -> None:
    mapping = _join_mapping()
    mapping["attributes"].append({"column": "won_date", "kind": "categorical"})
    src = _join_export(tmp_path)
    write_csv(
        src / "mql.csv",
        ["mql_id", "first_contact_date", "origin", "won_date"],
        [["M1", "2024-01-01", "social", "x"], ["M2", "2024-01-02", "email", "y"], ["M3", "2024-01-03", "", "z"]],
    )
    with pytest.raises(MappingError, match=r"column 'won_date' is in several lead sources \['mql', 'won'\]"):
        run(tmp_path, mapping, src=src)


# -- the output directory -------------------------------------------------------------------------


def test_reimport_replaces_the_directory_and_removes_stale_quarantine(tmp_path: Path) -> None:
    contacts = [*CONTACTS, ["C4", "2024-13-45 10:00", "Retail", "5", "1", "d@example.com"]]
    run(tmp_path, base_mapping(), src=export(tmp_path, contacts))
    assert (tmp_path / "data" / "quarantine" / "source_contacts.csv").exists()
    run(tmp_path, base_mapping(), src=export(tmp_path))
    assert not (tmp_path / "data" / "quarantine" / "source_contacts.csv").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary directories left


def test_a_failed_import_leaves_the_previous_directory_untouched(tmp_path: Path) -> None:
    run(tmp_path, base_mapping())
    before = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file()}
    with pytest.raises(MappingError):
        run(tmp_path, _with({"attributes.0.column": "Sector"}))
    after = {p.name: p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_to_replace_a_directory_that_is_not_a_data_directory(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "thesis.tex").write_text("precious")
    with pytest.raises(MappingError, match="is not a leadscore data directory"):
        run(tmp_path, base_mapping())
    assert (tmp_path / "data" / "thesis.tex").read_text() == "precious"


def test_refuses_to_write_over_the_export(tmp_path: Path) -> None:
    src = export(tmp_path)
    with pytest.raises(MappingError, match="holds the export file"):
        import_export(write_mapping(tmp_path, base_mapping()), src, src.parent, now=NOW)


# -- the contract guard, shipped mappings, names ---------------------------------------------------


def test_contract_refuses_an_excluded_column_as_attribute(tmp_path: Path) -> None:
    raw = {
        "activity_types": ["web_visit"],
        "attributes": [{"name": "tags", "kind": "categorical"}],
        "excluded_columns": [{"name": "tags", "reason": "leaky", "column": "Tags", "note": "set by sales"}],
    }
    (tmp_path / "contract.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ContractError, match=r"'tags' \(excluded as leaky: set by sales\) are declared in excluded"):
        Contract.load(tmp_path)


def test_contract_needs_activity_types_only_in_history_mode() -> None:
    with pytest.raises(ValueError, match="activity_types must name at least one"):
        Contract(activity_types=[])
    assert Contract(activity_types=[], mode="single_snapshot").activity_types == []


@pytest.mark.parametrize("name", sorted(builtin_mappings()))
def test_shipped_mappings_are_valid(name: str) -> None:
    mapping = load_mapping(name)
    assert resolve_mapping(name) == builtin_mappings()[name]
    assert all(e.note or e.reason == "identifier" for e in mapping.excluded)  # every exclusion says why


def test_shipped_mappings_cover_the_four_data_sets() -> None:
    assert set(builtin_mappings()) == {
        "olist_marketing_funnel",
        "x_education_leads",
        "uci_bank_marketing",
        "maven_crm_sales_opportunities",
    }


def test_a_shipped_mapping_needs_the_source_directory(tmp_path: Path) -> None:
    with pytest.raises(MappingError, match=r"uci_bank_marketing.yaml is a shipped mapping: give the directory"):
        import_export("uci_bank_marketing", None, tmp_path / "data")


def test_unknown_mapping_name_lists_the_shipped_ones() -> None:
    with pytest.raises(MappingError, match="olist_marketing_funnel"):
        resolve_mapping("hubspot")


@pytest.mark.parametrize(
    ("column", "name"),
    [
        ("Total Time Spent on Website", "total_time_spent_on_website"),
        ("emp.var.rate", "emp_var_rate"),
        ("Lead Score (sales)", "lead_score_sales"),
        ("3rd party", "c_3rd_party"),
    ],
)
def test_snake_name(column: str, name: str) -> None:
    assert snake_name(column) == name
