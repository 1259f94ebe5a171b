"""``leadscore train`` and ``leadscore models``: the train flow end to end on a small simulation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()

FAST_CONFIG = {
    "version": 1,
    "train": {
        "readiness": {"num_boost_round": 60, "early_stopping_rounds": 10},
        "stage": {"num_boost_round": 30, "early_stopping_rounds": 10},
        "evaluation": {"plots": True, "shap_sample_rows": 200},
    },
}


@pytest.fixture(scope="module")
def trained_home(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("train")
    data = base / "data"
    result = runner.invoke(app, ["generate", "--leads", "3000", "--seed", "5", "--out", str(data)])
    assert result.exit_code == 0, result.output
    config = base / "leadscore.yaml"
    config.write_text(yaml.safe_dump(FAST_CONFIG))
    return {"base": base, "data": data, "config": config, "home": base / "home"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, trained_home: dict[str, Path]) -> dict[str, Path]:
    home = trained_home["home"]
    monkeypatch.setenv("LEADSCORE_HOME", str(home))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return trained_home


def _train(env: dict[str, Path]) -> str:
    result = runner.invoke(
        app,
        ["train", "--data", str(env["data"]), "--config", str(env["config"]), "--work-dir", str(env["base"] / "w")],
    )
    assert result.exit_code == 0, result.output
    return _flat(result.output)


def _flat(text: str) -> str:
    """Rich wraps long lines to the terminal width: compare on whitespace-normalised text."""
    return " ".join(text.split())


def test_train_registers_champion_then_compares_challenger_on_same_rows(env: dict[str, Path]) -> None:
    from mlflow import MlflowClient

    from models.package.registry import ModelRegistry

    first = _train(env)
    assert "version 1" in first and "promoted to champion" in first
    for name in ("roc_auc", "pr_auc", "ece", "logistic", "gradient"):
        assert name in first

    second = _train(env)
    assert "version 2" in second

    # Identical data and seed: the challenger equals the champion on the same rows (>= 0.95 x champion)
    # and beats the baselines, so the fresher model is promoted; the printed reason says what was compared.
    assert "promoted to champion" in second
    assert "meets >= 0.95 x" in second and "beats the best baseline" in second and "signal: test ROC AUC" in second
    uri = f"sqlite:///{env['home'] / 'mlflow.db'}"
    registry = ModelRegistry(MlflowClient(uri, registry_uri=uri), "leadscore")  # not the process-wide registry
    versions = {v.version: v for v in registry.list_versions()}
    assert set(versions) == {1, 2}
    assert versions[2].is_champion
    # the decision was logged on the challenger's run, with the champion scored on the same rows
    run = registry.client.get_run(versions[2].run_id)
    assert run.data.tags.get("leadscore.promotion") == "promoted"
    # lineage: each version names the (local) Prefect flow run that trained it, a different one per train
    first_run = registry.client.get_run(versions[1].run_id)
    flow_runs = {r.data.tags.get("leadscore.flow_run_id") for r in (first_run, run)}
    assert None not in flow_runs and len(flow_runs) == 2
    assert run.data.metrics["promotion.champion.pr_auc"] == pytest.approx(run.data.metrics["pr_auc"])
    assert run.data.metrics["guardrail.passed"] == 1.0
    assert run.data.metrics["guardrail.roc_auc_low"] > 0.5
    artifacts = {a.path for a in registry.client.list_artifacts(versions[2].run_id, "plots")}
    assert {"plots/roc_curve.png", "plots/calibration_curve.png", "plots/shap_summary.png"} <= artifacts

    listing = runner.invoke(app, ["models", "list"])
    assert listing.exit_code == 0, listing.output
    assert "champion" in listing.output

    # manual promotion rebuilt from the data compares on the same rows, under the same guardrails
    back = runner.invoke(app, ["models", "promote", "1", "--data", str(env["data"])])
    assert back.exit_code == 0, back.output
    assert "same test rows" in _flat(back.output)
    assert registry.champion().version == 1

    rolled = runner.invoke(app, ["models", "rollback"])
    assert rolled.exit_code == 0, rolled.output
    assert "1 -> 2" in _flat(rolled.output)
    assert registry.champion().version == 2


def test_models_promote_unknown_version_is_a_clear_error(env: dict[str, Path]) -> None:
    result = runner.invoke(app, ["models", "promote", "99"])
    assert result.exit_code == 2
    assert "99" in result.output
    assert "Traceback" not in result.output


def test_train_with_too_little_data_explains_what_is_missing(
    env: dict[str, Path], tmp_path: Path, prefect_harness: None
) -> None:
    small = tmp_path / "small"
    assert runner.invoke(app, ["generate", "--leads", "150", "--seed", "1", "--out", str(small)]).exit_code == 0
    result = runner.invoke(app, ["train", "--data", str(small), "--config", str(env["config"])])
    assert result.exit_code == 2
    assert "converted" in result.output
    assert "Traceback" not in result.output


def test_train_rejects_invalid_config(env: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  readiness:\n    num_boost_round: 0\n")
    result = runner.invoke(app, ["train", "--data", str(env["data"]), "--config", str(bad)])
    assert result.exit_code == 2
    assert "num_boost_round" in result.output
