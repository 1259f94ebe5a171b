"""``leadscore import`` on a sample of a public data set, then ``leadscore features`` on the result.

The real-data test reads ``x_education_leads`` from ``LEADSCORE_SHARED_DATA`` (default ``<repo>/../shared/data``):
skipped without it, a failure in CI (``CI=true``). The data is never copied into the repository.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import Contract
from features.spec import read_feature_table
from pipelines.cli import app
from tests.features.test_adapters import shared_data_dir

runner = CliRunner()
SAMPLE = 400


def _text(result) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.mark.realdata
def test_import_a_sample_then_build_one_row_per_lead(prefect_harness: None, tmp_path: Path) -> None:
    src = shared_data_dir("x_education_leads")
    data = tmp_path / "x_education"
    result = runner.invoke(
        app,
        ["import", "--mapping", "x_education_leads", "--source", str(src), "--out", str(data), "--sample", str(SAMPLE)],
    )
    assert result.exit_code == 0, result.output
    assert "Import: x_education_leads.yaml" in result.output  # the per-source accounting table
    assert "accepted" in result.output  # validation's report
    assert Contract.load(data).mode == "single_snapshot"
    assert len(pd.read_parquet(data / "leads.parquet")) == SAMPLE
    assert (data / "quarantine" / "report.json").exists()

    out = tmp_path / "features.parquet"
    result = runner.invoke(app, ["features", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame, spec = read_feature_table(out)
    raw = pd.read_csv(src / "Leads.csv", dtype=str, keep_default_na=False).head(SAMPLE)
    assert spec.mode == "single_snapshot"
    assert len(frame) == SAMPLE and frame["lead_id"].is_unique  # one row per lead
    assert set(frame["lead_id"]) == set(raw["Prospect ID"])
    by_id = frame.set_index("lead_id").loc[raw["Prospect ID"]]
    assert (by_id["converted"].to_numpy() == (raw["Converted"] == "1").to_numpy()).all()
    assert not {"tags", "lead_quality", "last_activity", "last_notable_activity"} & set(spec.features)

    # Snapshot dates do not apply to a single-snapshot data set: a clear error, not silently ignored.
    result = runner.invoke(
        app, ["features", "--data", str(data), "--out", str(tmp_path / "f2.parquet"), "--as-of", "2024-01-01"]
    )
    assert result.exit_code == 2
    assert "single-snapshot data set" in _text(result) and "--as-of" in _text(result)


def test_unknown_mapping_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "--mapping", "no_such_crm", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no_such_crm: no such mapping file, and not a shipped mapping" in _text(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_shipped_mapping_without_source_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "--mapping", "x_education_leads", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "is a shipped mapping: give the directory holding its export files (--source)" in _text(result)
    assert not (tmp_path / "out").exists()


def test_invalid_mapping_file_names_the_file(tmp_path: Path) -> None:
    mapping = tmp_path / "crm.yaml"
    mapping.write_text("version: 1\nname: crm\nsources: {}\nnot_a_field: 3\n", encoding="utf-8")
    result = runner.invoke(app, ["import", "--mapping", str(mapping), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert str(mapping) in result.output.replace("\n", "")
    assert "invalid mapping" in _text(result) and "not_a_field" in _text(result)
    assert "Traceback" not in result.output


def test_sample_must_be_positive(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["import", "--mapping", "x_education_leads", "--out", str(tmp_path / "o"), "--sample", "0"]
    )
    assert result.exit_code == 2
    assert "--sample" in result.output


@pytest.mark.realdata
@pytest.mark.slow
def test_import_train_and_score_leads_without_outcome(
    prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export whose newest leads have no outcome yet: train on the others, then score those."""
    src = shared_data_dir("x_education_leads")
    raw = pd.read_csv(src / "Leads.csv", dtype=str, keep_default_na=False).head(1500)
    pending = raw["Prospect ID"].head(100).tolist()
    raw.loc[raw.index[:100], "Converted"] = ""  # outcome not known yet
    export = tmp_path / "export"
    export.mkdir()
    raw.to_csv(export / "Leads.csv", index=False)

    home = tmp_path / "home"
    monkeypatch.setenv("LEADSCORE_HOME", str(home))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("LEADSCORE_STORE_URL", raising=False)
    data = tmp_path / "data"
    result = runner.invoke(
        app, ["import", "--mapping", "x_education_leads", "--source", str(export), "--out", str(data)]
    )
    assert result.exit_code == 0, result.output
    from features.mapping import recommended_config

    result = runner.invoke(
        app, ["train", "--data", str(data), "--config", str(recommended_config("x_education_leads"))]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(out)
    assert sorted(scores["lead_id"]) == sorted(pending)  # exactly the leads without an outcome
    assert scores["stage"].isna().all()  # no conversion times: no buying-stage model
    assert scores["readiness"].between(0, 1).all()
