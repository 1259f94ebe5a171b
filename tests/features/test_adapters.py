"""The shipped mappings on samples of the four public data sets (``LEADSCORE_SHARED_DATA``).

Each test imports a small sample (the first rows of the lead file, through ``sample_rows``, or a head and
tail copied into ``tmp_path``) and checks the result against the export read independently with pandas.
The data is never copied into the repository. Without the data the tests are skipped, except in CI
(``CI=true``), where missing data is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.contract import Contract
from features.mapping import import_export
from features.single_snapshot import build_single_snapshot_features
from features.validation import load_history

pytestmark = pytest.mark.realdata

NOW = pd.Timestamp("2025-01-01T00:00:00Z")
REPO = Path(__file__).resolve().parents[2]


def shared_data_dir(name: str) -> Path:
    """A public data set's directory; skips the test without it (fails it in CI)."""
    root = Path(os.environ.get("LEADSCORE_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = root / name
    if not path.is_dir():
        message = f"public data set {name} not found at {path} (set LEADSCORE_SHARED_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def _read(path: Path, **kwargs: object) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)  # type: ignore[arg-type]


def _balanced(summary) -> None:
    for report in summary.sources.values():
        assert report.rows_read == report.rows_used + report.rows_skipped + report.rows_rejected


# -- olist ----------------------------------------------------------------------------------------


def test_olist_sample(tmp_path: Path) -> None:
    src = shared_data_dir("olist_marketing_funnel")
    n = 1500
    summary = import_export("olist_marketing_funnel", src, tmp_path / "olist", now=NOW, sample_rows=n)
    _balanced(summary)

    mql = _read(src / "olist_marketing_qualified_leads_dataset.csv").head(n)
    deals = _read(src / "olist_closed_deals_dataset.csv")
    joined = mql.merge(deals[["mql_id", "won_date"]], on="mql_id", how="inner")
    early = pd.to_datetime(joined["won_date"]) < pd.to_datetime(joined["first_contact_date"])
    assert summary.sources["mql"].rows_read == n
    assert summary.sources["mql"].rows_rejected == int(early.sum())  # won before first contact
    assert summary.sources["deals"].rows_read == len(deals)
    assert summary.sources["deals"].rows_used == len(joined) - int(early.sum())
    assert summary.tables_written["stage_history"] == len(joined) - int(early.sum())

    contract = Contract.load(tmp_path / "olist")
    assert contract.mode == "history"
    assert [a.name for a in contract.attributes] == ["origin", "landing_page_id"]
    post_outcome = {e.column for e in contract.excluded_columns if e.reason == "post_outcome"}
    assert post_outcome == set(deals.columns) - {"mql_id"}

    result = load_history(tmp_path / "olist", now=NOW)
    assert result.report.clean
    leads = result.history.leads
    assert list(leads.columns) == ["lead_id", "created_at", "origin", "landing_page_id"]
    kept = mql[~mql["mql_id"].isin(joined.loc[early, "mql_id"])]
    assert leads["lead_id"].tolist() == kept["mql_id"].tolist()
    assert (leads["origin"].isna().to_numpy() == (kept["origin"] == "").to_numpy()).all()


# -- Maven ----------------------------------------------------------------------------------------


def test_maven_sample(tmp_path: Path) -> None:
    src = shared_data_dir("maven_crm_sales_opportunities")
    pipeline = _read(src / "sales_pipeline.csv")
    sample = pd.concat([pipeline.head(400), pipeline.tail(100)])  # the tail holds Prospecting deals
    copy = tmp_path / "export"
    copy.mkdir()
    sample.to_csv(copy / "sales_pipeline.csv", index=False)
    for name in ("products.csv", "sales_teams.csv"):
        shutil.copy(src / name, copy / name)

    summary = import_export("maven_crm_sales_opportunities", copy, tmp_path / "maven", now=NOW)
    _balanced(summary)
    assert summary.sources["pipeline"].rows_rejected == 0
    engaged = sample["engage_date"] != ""
    closed = sample["deal_stage"].isin(["Won", "Lost"])
    assert summary.tables_written["stage_history"] == int(engaged.sum() + closed.sum())

    result = load_history(tmp_path / "maven", now=NOW)
    assert result.report.tables["leads"].reasons == {"missing_value:created_at": int((~engaged).sum())}
    assert int((~engaged).sum()) == int((sample["deal_stage"] == "Prospecting").sum()) > 0
    leads = result.history.leads.set_index("lead_id")
    assert "account" not in leads.columns and "close_value" not in leads.columns
    assert leads["series"].notna().all()  # "GTXPro" was mapped to "GTX Pro" before the join
    gtx_pro = sample.loc[(sample["product"] == "GTXPro") & engaged, "opportunity_id"]
    assert len(gtx_pro) > 0
    assert (leads.loc[gtx_pro, "product"] == "GTX Pro").all()
    assert (leads.loc[gtx_pro, "sales_price"] == 4821.0).all()
    won = result.history.stage_history.query("stage == 'won'")["lead_id"]
    assert set(won) == set(sample.loc[sample["deal_stage"] == "Won", "opportunity_id"])


# -- X Education ----------------------------------------------------------------------------------


def test_x_education_sample(tmp_path: Path) -> None:
    src = shared_data_dir("x_education_leads")
    n = 500
    summary = import_export("x_education_leads", src, tmp_path / "x", now=NOW, sample_rows=n)
    _balanced(summary)
    assert summary.sources["leads"].rows_used == n
    raw = _read(src / "Leads.csv").head(n)

    contract = Contract.load(tmp_path / "x")
    assert contract.mode == "single_snapshot"
    leaky = {e.column for e in contract.excluded_columns if e.reason == "leaky"}
    assert leaky == {
        "Tags",
        "Lead Quality",
        "Last Activity",
        "Last Notable Activity",
        "Asymmetrique Activity Index",
        "Asymmetrique Profile Index",
        "Asymmetrique Activity Score",
        "Asymmetrique Profile Score",
    }
    history = load_history(tmp_path / "x", now=NOW).history
    leads = history.leads.set_index("lead_id").loc[raw["Prospect ID"]]
    assert not {"tags", "lead_quality", "last_activity", "last_notable_activity"} & set(leads.columns)
    unanswered = raw["Specialization"].isin(["", "Select"]).to_numpy()
    assert (leads["specialization"].isna().to_numpy() == unanswered).all()
    visits = pd.to_numeric(raw["TotalVisits"]).to_numpy()
    assert np.array_equal(leads["total_visits"].to_numpy(), visits, equal_nan=True)

    frame, spec = build_single_snapshot_features(history)
    assert len(frame) == n
    assert frame["converted"].sum() == (raw["Converted"] == "1").sum()
    assert np.isinf(frame["observed_days"]).all()
    assert "time_on_website" in spec.numeric and "lead_origin" in spec.categorical


# -- UCI bank marketing ---------------------------------------------------------------------------


def test_uci_bank_sample(tmp_path: Path) -> None:
    src = shared_data_dir("uci_bank_marketing")
    n = 500
    summary = import_export("uci_bank_marketing", src, tmp_path / "bank", now=NOW, sample_rows=n)
    _balanced(summary)
    raw = _read(src / "bank-additional-full.csv", sep=";").head(n)

    history = load_history(tmp_path / "bank", now=NOW).history
    leads = history.leads
    assert leads["lead_id"].tolist() == [f"contact-{i}" for i in range(1, n + 1)]
    assert "duration" not in leads.columns
    assert {e.name: e.reason for e in Contract.load(tmp_path / "bank").excluded_columns} == {
        "duration": "leaky",
        "y": "outcome",
    }
    never = (raw["pdays"] == "999").to_numpy()
    assert (leads["days_since_previous_campaign"].isna().to_numpy() == never).all()
    assert leads["emp_var_rate"].tolist() == pd.to_numeric(raw["emp.var.rate"]).tolist()

    frame, _ = build_single_snapshot_features(history)
    by_id = frame.set_index("lead_id").loc[leads["lead_id"]]
    assert (by_id["converted"].to_numpy() == (raw["y"] == "yes").to_numpy()).all()
