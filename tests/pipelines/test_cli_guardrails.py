"""Guardrails end to end through ``leadscore train`` / ``models promote``: no signal, feature-set change."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from tests.pipelines.test_cli_train import FAST_CONFIG

pytestmark = pytest.mark.slow
runner = CliRunner()
SEED = 13  # not used by other tests


def _flat(text: str) -> str:
    return " ".join(text.split())


def make_no_signal(source: Path, out: Path, seed: int = 0) -> Path:
    """The same leads and activities, but conversions re-drawn at random: nothing predicts the outcome.

    Every lead keeps only its ``new`` stage and converts (``won``) after an exponential time from its creation:
    a constant hazard, so neither the lead's age nor its attributes or activities say anything about whether
    it converts within the horizon.
    """
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("ground_truth", "quarantine"))
    leads = pd.read_parquet(out / "leads.parquet")
    stages = pd.read_parquet(out / "stage_history.parquet")
    end = pd.read_parquet(out / "activities.parquet")["occurred_at"].max()
    rng = np.random.default_rng(seed)
    new = stages[stages["stage"] == "new"]
    won_at = leads["created_at"] + pd.to_timedelta(rng.exponential(1500.0, len(leads)), unit="D")
    won = pd.DataFrame({"lead_id": leads["lead_id"], "stage": "won", "entered_at": won_at})
    won = won[won["entered_at"] < end]
    shuffled = pd.concat([new, won], ignore_index=True).sort_values(["lead_id", "entered_at"])
    shuffled["entered_at"] = shuffled["entered_at"].astype(stages["entered_at"].dtype)
    shuffled.to_parquet(out / "stage_history.parquet", index=False)
    return out


def make_other_data_set(source: Path, out: Path) -> Path:
    """The same funnel with one more lead attribute: a different feature set."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("ground_truth", "quarantine"))
    leads = pd.read_parquet(out / "leads.parquet")
    leads["region"] = np.where(leads["country"].isin(["US", "CA"]), "americas", "other")
    leads.to_parquet(out / "leads.parquet", index=False)
    contract = yaml.safe_load((out / "contract.yaml").read_text())
    contract["attributes"].append({"name": "region", "kind": "categorical", "description": "sales region"})
    (out / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guardrails")
    data = root / "data"
    result = runner.invoke(app, ["generate", "--leads", "2500", "--seed", str(SEED), "--out", str(data)])
    assert result.exit_code == 0, result.output
    config = root / "leadscore.yaml"
    config.write_text(yaml.safe_dump(FAST_CONFIG))
    return {"root": root, "data": data, "config": config}


def _train(base: dict[str, Path], data: Path, *extra: str) -> tuple[int, str]:
    result = runner.invoke(app, ["train", "--data", str(data), "--config", str(base["config"]), *extra])
    return result.exit_code, _flat(result.output)


def _home(monkeypatch: pytest.MonkeyPatch, base: dict[str, Path], name: str) -> Path:
    home = base["root"] / name
    monkeypatch.setenv("LEADSCORE_HOME", str(home))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return home


def _champion(home: Path, name: str = "leadscore") -> int | None:
    from mlflow import MlflowClient

    from models.package.registry import ModelRegistry

    uri = f"sqlite:///{home / 'mlflow.db'}"
    champion = ModelRegistry(MlflowClient(uri, registry_uri=uri), name).champion()
    return None if champion is None else champion.version


def test_no_signal_model_is_refused_even_as_first_model(base: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    home = _home(monkeypatch, base, "no-signal")
    data = make_no_signal(base["data"], base["root"] / "no-signal-data", seed=SEED)
    code, output = _train(base, data)
    assert code == 1, output
    assert "not promoted (no_signal guardrail)" in output
    assert "no signal:" in output and "check the data" in output and "horizon" in output and "labels" in output
    assert "includes 0.5" in output or "does not beat the base rate" in output
    assert "--force" in output
    assert _champion(home) is None  # registered, not promoted

    refused = runner.invoke(app, ["models", "promote", "1"])
    assert refused.exit_code == 1, refused.output
    assert "no_signal" in _flat(refused.output)

    code, output = _train(base, data, "--force")
    assert code == 0, output
    assert "forced promotion despite the no_signal guardrail" in output
    assert _champion(home) == 2


def test_normal_data_is_promoted_and_a_feature_set_change_is_reported(
    base: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(monkeypatch, base, "features")
    code, output = _train(base, base["data"])
    assert code == 0, output
    assert "promoted to champion" in output and "signal: test ROC AUC" in output
    assert _champion(home) == 1

    other = make_other_data_set(base["data"], base["root"] / "other-data")
    code, output = _train(base, other)
    assert code == 1, output
    assert "not promoted (feature_set guardrail)" in output
    assert "region" in output and "LEADSCORE_MODEL_NAME" in output
    # not the raw errors of scoring the champion on another feature set (Prefect's own log handler may print
    # an unrelated "Logging error" traceback into CliRunner's closed stream, so tracebacks are not checked)
    assert "KeyError" not in output and "cannot be rebuilt" not in output
    assert _champion(home) == 1

    monkeypatch.setenv("LEADSCORE_MODEL_NAME", "leadscore_other")
    code, output = _train(base, other)
    assert code == 0, output
    assert _champion(home, "leadscore_other") == 1
