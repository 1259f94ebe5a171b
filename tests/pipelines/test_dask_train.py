"""``leadscore train`` on a partitioned data directory: in this process, and with ``--cluster local:2``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from tests.pipelines.test_cli_monitor import FAST_CONFIG  # few boosting rounds, no plots

runner = CliRunner()


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("dask-train-cli")
    data = base / "parts"
    result = runner.invoke(app, ["generate", "--leads", "3000", "--seed", "5", "--partitions", "3", "--out", str(data)])
    assert result.exit_code == 0, result.output
    config = base / "leadscore.yaml"
    config.write_text(yaml.safe_dump(FAST_CONFIG))
    return {"base": base, "data": data, "config": config, "home": base / "home"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, parts: dict[str, Path]) -> dict[str, Path]:
    home = parts["home"]
    monkeypatch.setenv("LEADSCORE_HOME", str(home))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("LEADSCORE_SCORE_STORE_URL", f"sqlite:///{home / 'scores.db'}")
    monkeypatch.delenv("LEADSCORE_DASK_ADDRESS", raising=False)
    return parts


def _train(env: dict[str, Path], *extra: str) -> str:
    args = ["train", "--data", str(env["data"]), "--config", str(env["config"])]
    result = runner.invoke(app, [*args, "--work-dir", str(env["base"] / "w"), *extra])
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


@pytest.mark.slow
def test_train_on_partitions_here_then_on_a_local_cluster_compares_on_the_same_rows(env: dict[str, Path]) -> None:
    from mlflow import MlflowClient

    from models.package.registry import ModelRegistry

    here = _train(env)
    assert "version 1" in here and "promoted to champion" in here
    assert (env["base"] / "w" / "features" / "part-00000.parquet").is_file()
    on_dask = _train(env, "--cluster", "local:2")
    assert "version 2" in on_dask

    uri = f"sqlite:///{env['home'] / 'mlflow.db'}"
    registry = ModelRegistry(MlflowClient(uri, registry_uri=uri), "leadscore")
    versions = {v.version: v for v in registry.list_versions()}
    runs = {k: registry.client.get_run(v.run_id) for k, v in versions.items()}
    # Same split, same test rows: the champion scored on the Dask model's test rows gets its own test metric.
    # Promoted, or rejected by a guardrail (e.g. a baseline does better on these 3,000 leads): compared either way.
    assert runs[2].data.tags.get("leadscore.promotion") in ("promoted", "rejected")
    assert runs[2].data.tags.get("leadscore.promotion.compared_to") == "1"
    assert runs[2].data.metrics["promotion.champion.pr_auc"] == pytest.approx(runs[1].data.metrics["pr_auc"])
    assert runs[2].data.metrics["roc_auc"] > 0.65

    # The Dask-trained champion (or the kept one) scores the partitioned data like any other.
    if registry.champion().version != 2:  # kept: promote it by hand, compared on rows rebuilt from the partitions
        promoted = runner.invoke(app, ["models", "promote", "2", "--data", str(env["data"]), "--force"])
        assert promoted.exit_code == 0, promoted.output
    assert registry.champion().version == 2
    scored = runner.invoke(app, ["score", "--data", str(env["data"])])
    assert scored.exit_code == 0, scored.output


def test_cluster_on_plain_data_is_refused_before_anything_runs(env: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    result = runner.invoke(app, ["train", "--data", str(plain), "--cluster", "local:2"])
    assert result.exit_code == 2
    assert "is not partitioned: --cluster needs a partitioned data directory" in " ".join(
        result.output.replace("│", " ").split()
    )
