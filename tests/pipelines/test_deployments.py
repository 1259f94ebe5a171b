"""The DEPLOYMENTS table, its parameters, schedules, errors and the shipped prefect.yaml (no server)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cloudpickle
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.deployments import (
    DEPLOYMENTS,
    DeploymentError,
    check_api,
    check_crons,
    plan_deployments,
    prefect_api_url,
    run_env,
)
from pipelines.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "contract.yaml").write_text("version: 1\n")
    return data


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home")


def test_table_keys_names_and_flows_are_consistent() -> None:
    keys = [spec.key for spec in DEPLOYMENTS]
    assert len(set(keys)) == len(keys)
    assert len({spec.name for spec in DEPLOYMENTS}) == len(keys)
    assert {"score-batch", "train"} <= set(keys)
    for spec in DEPLOYMENTS:
        flow = spec.load_flow()
        assert flow.name == spec.key, f"{spec.entrypoint} is flow '{flow.name}', row key '{spec.key}'"


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=lambda s: s.key)
def test_parameters_are_json_and_accepted_by_the_shipped_flow(spec: object, settings: Settings, data_dir: Path) -> None:
    planned = {p.spec.key: p for p in plan_deployments(settings, data_dir)}[spec.key]  # type: ignore[attr-defined]
    stored = json.loads(json.dumps(planned.parameters))  # what the server keeps
    assert stored["data_dir"] == str(data_dir.resolve())
    flow = cloudpickle.loads(cloudpickle.dumps(planned.spec.load_flow()))  # what a worker receives
    validated = flow.validate_parameters(stored)
    assert validated["data_dir"] == data_dir.resolve()
    for key, value in stored.items():
        if isinstance(value, str) and key.endswith(("_dir", "_root")):
            assert Path(value).is_absolute(), f"{spec.key}.{key} = {value} is relative to the deployer's cwd"


def test_default_and_overridden_schedules(settings: Settings, data_dir: Path) -> None:
    planned = {p.spec.key: p.cron for p in plan_deployments(settings, data_dir, {"train": "0 4 * * 1"})}
    assert planned["train"] == "0 4 * * 1"
    assert planned["score-batch"] == "0 2 * * *"


def test_bad_cron_and_missing_deployment_are_named() -> None:
    with pytest.raises(DeploymentError, match=r"--train-cron: 'every sunday' is not a cron"):
        check_crons({"train": "every sunday"})
    with pytest.raises(DeploymentError, match=r"--nope-cron given, but .* no 'nope' deployment"):
        check_crons({"nope": "0 1 * * *"})
    assert check_crons({"train": None}) == {}


def test_data_directory_without_contract_is_refused(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match=r"not a leadscore data directory .* leadscore generate"):
        plan_deployments(settings, tmp_path)


def test_unreachable_api_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DeploymentError, match=r"PREFECT_API_URL=http://127.0.0.1:\d+/api is not reachable"):
        check_api(f"http://127.0.0.1:{port}/api", timeout=2)


def test_unset_api_url_is_a_clear_error() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(restore_defaults={PREFECT_API_URL}),
        pytest.raises(DeploymentError, match=r"PREFECT_API_URL is not set.*prefect server start"),
    ):
        prefect_api_url()


def test_cli_deploy_reports_a_bad_cron(data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LEADSCORE_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(app, ["deploy", "--data", str(data_dir), "--score-cron", "61 * * * *"])
    assert result.exit_code == 2
    assert "--score-cron: '61 * * * *' is not a cron expression" in " ".join(result.output.split())


def test_prefect_yaml_declares_the_same_deployments(settings: Settings, data_dir: Path) -> None:
    config = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    declared = {d["entrypoint"]: d for d in config["deployments"]}
    planned = plan_deployments(settings, data_dir)
    assert set(declared) == {p.spec.entrypoint for p in planned}
    for item in planned:
        entry = declared[item.spec.entrypoint]
        assert entry["name"] == item.spec.name
        assert [s["cron"] for s in entry["schedules"]] == [item.spec.cron]
        assert set(entry["parameters"]) == set(item.parameters), item.spec.key
        assert entry["work_pool"]["name"] == "leadscore"
        assert entry["work_pool"]["job_variables"]["env"] == run_env()
    assert config["pull"] == []  # module paths: the worker imports the installed package


def test_config_file_is_stored_in_the_train_deployment(settings: Settings, data_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump({"version": 1, "train": {"readiness": {"num_boost_round": 7}}}))
    planned = {p.spec.key: p for p in plan_deployments(settings, data_dir, config_path=config)}
    stored = json.loads(json.dumps(planned["train"].parameters))
    validated = planned["train"].spec.load_flow().validate_parameters(stored)
    assert validated["config"].train.readiness.num_boost_round == 7
    assert planned["score-batch"].parameters.get("config") is None


def test_dask_address_reaches_train_and_score_of_partitioned_data_only(tmp_path: Path, data_dir: Path) -> None:
    settings = Settings(home=tmp_path / "home", dask_address="tcp://10.0.0.5:8786")
    plain = {p.spec.key: p.parameters for p in plan_deployments(settings, data_dir)}
    assert all("cluster" not in params for params in plain.values())
    (data_dir / "partitions.json").write_text('{"format": 1, "n_partitions": 1, "hash": "crc32-utf8"}')
    planned = {p.spec.key: p for p in plan_deployments(settings, data_dir)}
    for key in ("train", "score-batch"):
        assert planned[key].parameters["cluster"] == "tcp://10.0.0.5:8786"
        flow = cloudpickle.loads(cloudpickle.dumps(planned[key].spec.load_flow()))
        assert flow.validate_parameters(json.loads(json.dumps(planned[key].parameters)))["cluster"] == (
            "tcp://10.0.0.5:8786"
        )
    assert "cluster" not in planned["monitor"].parameters
