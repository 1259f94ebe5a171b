"""The build-features flow and the CLI, end to end on a small simulated data set."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.spec import read_feature_table
from pipelines.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    result = runner.invoke(app, ["generate", "--leads", "400", "--seed", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_generate_writes_contract_tables_and_truth(sim_dir: Path) -> None:
    names = {p.name for p in sim_dir.iterdir()}
    assert {"contract.yaml", "leads.parquet", "activities.parquet", "stage_history.parquet", "ground_truth"} <= names
    assert len(pd.read_parquet(sim_dir / "leads.parquet")) == 400


def test_features_flow_point_in_time_table(prefect_harness: None, sim_dir: Path, tmp_path: Path) -> None:
    from features.validation import load_history
    from pipelines.flows import build_features_flow

    out = tmp_path / "features.parquet"
    summary = build_features_flow(sim_dir, out)
    frame, spec = read_feature_table(out)
    assert summary.rows == len(frame) > 0
    assert summary.snapshots == frame["as_of"].nunique()
    assert summary.n_features == len(spec.features)
    assert summary.validation is not None and summary.validation.rows_quarantined == 0
    # every row is an open lead created before its as_of
    history = load_history(sim_dir).history
    created = history.leads.set_index("lead_id")["created_at"]
    assert (frame["as_of"] > frame["lead_id"].map(created)).all()
    assert frame["converted"].isin([0, 1]).all()


def test_features_cli_with_dirty_data_quarantines_and_accounts(
    prefect_harness: None, sim_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "dirty"
    shutil.copytree(sim_dir, data, ignore=shutil.ignore_patterns("ground_truth"))
    acts = pd.read_parquet(data / "activities.parquet")
    bad = acts.head(3).copy()
    bad.loc[bad.index[0], "lead_id"] = "NOPE"
    bad.loc[bad.index[1], "value"] = -1.0
    bad.loc[bad.index[2], "activity_type"] = "telepathy"
    pd.concat([acts, bad], ignore_index=True).to_parquet(data / "activities.parquet")

    out = tmp_path / "f.parquet"
    result = runner.invoke(
        app, ["features", "--data", str(data), "--out", str(out), "--every", "2w", "--horizon", "60d"]
    )
    assert result.exit_code == 0, result.output
    quarantine = pd.read_csv(tmp_path / "f.quarantine" / "activities.csv")
    assert len(quarantine) == 3
    reasons = " | ".join(quarantine["reason"])
    assert "NOPE" in reasons and "negative" in reasons and "telepathy" in reasons
    frame, spec = read_feature_table(out)
    assert spec.horizon_days == 60
    steps = frame["as_of"].drop_duplicates().sort_values().diff().dropna().dt.days
    assert set(steps) == {14}
    assert "3" in result.output  # quarantined count is reported


def test_features_cli_explicit_as_of(prefect_harness: None, sim_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "asof.parquet"
    result = runner.invoke(
        app, ["features", "--data", str(sim_dir), "--out", str(out), "--as-of", "2024-06-03", "--as-of", "2024-09-02"]
    )
    assert result.exit_code == 0, result.output
    frame, _ = read_feature_table(out)
    assert sorted(frame["as_of"].dt.strftime("%Y-%m-%d").unique()) == ["2024-06-03", "2024-09-02"]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--every", "soon"], "--every"),
        (["--horizon", "-3d"], "--horizon"),
        (["--as-of", "not-a-date"], "not-a-date"),
        (["--as-of", "2024-06-03", "--every", "7d"], "not both"),
    ],
)
def test_features_cli_rejects_bad_options(sim_dir: Path, tmp_path: Path, args: list[str], fragment: str) -> None:
    result = runner.invoke(app, ["features", "--data", str(sim_dir), "--out", str(tmp_path / "x.parquet"), *args])
    assert result.exit_code != 0
    assert fragment in result.output
    assert "Traceback" not in result.output


def test_features_cli_missing_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["features", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_validate_cli_writes_report(sim_dir: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--data", str(sim_dir), "--quarantine", str(tmp_path / "q")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "q" / "report.json").exists()
    assert "accepted" in result.output


def test_every_command_has_help() -> None:
    for command in ("generate", "import", "validate", "features", "run"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "--" in result.output
