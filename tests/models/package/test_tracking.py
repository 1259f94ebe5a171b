from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import pytest
import yaml

from models.package.bundle import load_scoring_model
from models.package.tracking import (
    CHALLENGER_ALIAS,
    TEST_ROWS_ARTIFACT,
    DataLineage,
    TrackingError,
    TrackingTarget,
    configure_mlflow,
    content_hash,
    ensure_experiment,
    ensure_postgres_database,
    flatten_params,
    redact_uri,
    run_metrics,
)
from tests.models import mlflow_fixtures
from tests.models.mlflow_fixtures import (
    ToyData,
    log_toy_run,
    unique_name,
    write_data_dir,
)

# Shared fixtures (pytest finds fixtures by module attribute).
mlflow_target = mlflow_fixtures.mlflow_target
toy_data = mlflow_fixtures.toy_data

# --------------------------------------------------------------------------------------------
# lineage and params (no MLflow)


def test_content_hash_is_stable_across_locations_and_sensitive_to_content(tmp_path: Path) -> None:
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "events.csv").write_text("x,y\n1,2\n")
    (a / "sub" / "leads.parquet").write_bytes(b"PAR1...")
    b = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, b)
    (b / ".events.csv.123.tmp").write_text("partial write")  # hidden temp files are not data

    assert content_hash([a]) == content_hash([b])
    assert len(content_hash([a])) == 64

    (b / "events.csv").write_text("x,y\n1,3\n")
    assert content_hash([b]) != content_hash([a])
    (b / "events.csv").write_text("x,y\n1,2\n")
    (b / "events.csv").rename(b / "events_renamed.csv")
    assert content_hash([b]) != content_hash([a])


def test_content_hash_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        content_hash([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no data files"):
        content_hash([tmp_path / "empty"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "t.csv").write_text("1")
    (tmp_path / "t.csv").write_text("2")
    with pytest.raises(ValueError, match=r"share the name 't.csv'"):
        content_hash([tmp_path / "x", tmp_path / "t.csv"])


def test_lineage_from_data_dir(tmp_path: Path, toy_data: ToyData) -> None:
    data_dir = write_data_dir(tmp_path / "data", toy_data)
    lineage = DataLineage.from_data_dir(
        data_dir,
        row_counts={"train": 600, "test": 300},
        date_spans={"train": (pd.Timestamp("2025-01-05"), pd.Timestamp("2025-05-18 10:00"))},
    )
    assert lineage.files == ("notes.csv", "snapshots.parquet")
    assert lineage.content_hash == content_hash([data_dir])
    params = lineage.params()
    assert params["data.rows.train"] == "600"
    assert params["data.span.train"] == "2025-01-05..2025-05-18"
    assert params["data.dir"] == str(data_dir)
    assert json.loads(json.dumps(lineage.to_dict()))["date_spans"]["train"] == ["2025-01-05", "2025-05-18"]


def test_flatten_params_nests_and_marks_truncation() -> None:
    flat = flatten_params({"a": {"b": 1, "c": [7, 30]}, "d": "text", "e": None, "f": {}}, "config")
    assert flat == {
        "config.a.b": "1",
        "config.a.c": "[7, 30]",
        "config.d": "text",
        "config.e": "null",
        "config.f": "{}",
    }
    long = flatten_params({"big": "x" * 7000})["big"]
    assert len(long) == 6000
    assert "truncated, 7000 chars" in long


def test_run_metrics_prefixes_baselines_and_rejects_dotted_model_metrics() -> None:
    out = run_metrics({"pr_auc": 0.5}, {"logreg": {"roc_auc": 0.7}, "hgb": {"pr_auc": 0.4}})
    assert out == {"pr_auc": 0.5, "baseline_logreg.roc_auc": 0.7, "baseline_hgb.pr_auc": 0.4}
    with pytest.raises(ValueError, match="plain names"):
        run_metrics({"stage.accuracy": 0.5}, None)
    with pytest.raises(ValueError, match="baseline name"):
        run_metrics({}, {"log reg": {"x": 1.0}})


def test_redact_uri_masks_password() -> None:
    assert redact_uri("postgresql+psycopg://u:secret@h:5432/db") == "postgresql+psycopg://u:***@h:5432/db"
    assert redact_uri("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"


# --------------------------------------------------------------------------------------------
# configuration


def test_configure_sqlite_creates_dirs_and_defaults_artifacts_beside_db(mlflow_target: TrackingTarget) -> None:
    # The session store was configured as sqlite:///<tmp>/state/mlflow.db with no artifact root.
    db = Path(mlflow_target.tracking_uri.removeprefix("sqlite:///"))
    assert db.name == "mlflow.db" and db.parent.name == "state"
    assert db.exists()
    assert mlflow_target.artifact_root == db.resolve().parent / "mlartifacts"
    assert mlflow_target.artifact_root.is_dir()
    assert mlflow.get_tracking_uri() == mlflow_target.tracking_uri
    assert mlflow.get_registry_uri() == mlflow_target.tracking_uri


def test_configure_switches_telemetry_off_unless_the_environment_decides(
    mlflow_target: TrackingTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.telemetry import get_telemetry_client

    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    configure_mlflow(mlflow_target.tracking_uri, mlflow_target.artifact_root)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert get_telemetry_client() is None
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    configure_mlflow(mlflow_target.tracking_uri, mlflow_target.artifact_root)
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "false"  # the user's explicit choice stands


def test_configure_rejects_memory_sqlite_and_unreachable_store(mlflow_target: TrackingTarget) -> None:
    try:
        with pytest.raises(TrackingError, match="in-memory"):
            configure_mlflow("sqlite:///:memory:")
        with pytest.raises(TrackingError, match=r"u:\*\*\*@127.0.0.1:1/"):
            configure_mlflow("postgresql+psycopg://u:pw@127.0.0.1:1/nodb")
    finally:
        configure_mlflow(mlflow_target.tracking_uri, mlflow_target.artifact_root)


def test_experiment_artifacts_live_under_the_root(mlflow_target: TrackingTarget) -> None:
    name = unique_name("exp/with spaces")
    experiment_id = ensure_experiment(mlflow_target, name)
    assert ensure_experiment(mlflow_target, name) == experiment_id
    location = mlflow_target.client().get_experiment(experiment_id).artifact_location
    assert mlflow_target.artifact_root is not None
    assert location.startswith(mlflow_target.artifact_root.as_uri() + "/")
    assert " " not in location


def test_deleted_experiment_is_a_clear_error(mlflow_target: TrackingTarget) -> None:
    name = unique_name("deleted")
    client = mlflow_target.client()
    client.delete_experiment(ensure_experiment(mlflow_target, name))
    with pytest.raises(TrackingError, match="deleted"):
        ensure_experiment(mlflow_target, name)


# --------------------------------------------------------------------------------------------
# a training run


@pytest.fixture(scope="module")
def logged(mlflow_target: TrackingTarget, toy_data: ToyData, tmp_path_factory: pytest.TempPathFactory):
    data_dir = write_data_dir(tmp_path_factory.mktemp("data"), toy_data)
    lineage = DataLineage.from_data_dir(data_dir, row_counts={"train": 600, "test": 300})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    model = toy_data.fit(["segment", "signal"])
    name = unique_name("tracked")
    run = log_toy_run(
        mlflow_target,
        toy_data,
        model,
        name=name,
        figures={"roc": fig, "gains.svg": fig},
        lineage=lineage,
        config={"train": {"readiness": {"num_leaves": 15}, "windows": [7, 30]}},
        params={"readiness.best_iteration": 42},
        baseline_metrics={"logreg": {"roc_auc": 0.61, "pr_auc": 0.4}},
        run_name="unit",
    )
    plt.close(fig)
    return run, model, lineage


def test_run_logs_params_metrics_and_artifacts(mlflow_target: TrackingTarget, logged, toy_data: ToyData) -> None:
    run_info, model, lineage = logged
    client = mlflow_target.client()
    run = client.get_run(run_info.run_id)
    params = run.data.params
    assert params["config.train.readiness.num_leaves"] == "15"
    assert params["config.train.windows"] == "[7, 30]"
    assert params["readiness.best_iteration"] == "42"
    assert params["data.content_hash"] == lineage.content_hash
    assert params["data.rows.test"] == "300"
    metrics = run.data.metrics
    assert metrics["baseline_logreg.roc_auc"] == pytest.approx(0.61)
    expected_pr = toy_data.evaluator()(model, toy_data.test_rows)["pr_auc"]
    assert metrics["pr_auc"] == pytest.approx(expected_pr)
    assert run.data.tags["leadscore.data_hash"] == lineage.content_hash
    assert run.info.run_name == "unit"

    files = {a.path for a in client.list_artifacts(run_info.run_id)}
    assert {"config.yaml", "lineage.json", "plots", "evaluation"} <= files
    plots = {a.path for a in client.list_artifacts(run_info.run_id, "plots")}
    assert plots == {"plots/roc.png", "plots/gains.svg"}
    local = Path(client.download_artifacts(run_info.run_id, "config.yaml"))
    assert yaml.safe_load(local.read_text())["train"]["readiness"]["num_leaves"] == 15
    rows = pd.read_parquet(client.download_artifacts(run_info.run_id, TEST_ROWS_ARTIFACT))
    pd.testing.assert_frame_equal(rows, toy_data.test_rows.reset_index(drop=True), check_dtype=False)
    assert mlflow_target.artifact_root is not None
    assert run.info.artifact_uri.startswith(mlflow_target.artifact_root.as_uri())


def test_run_registers_a_challenger_version(mlflow_target: TrackingTarget, logged) -> None:
    run_info, model, lineage = logged
    client = mlflow_target.client()
    mv = client.get_model_version_by_alias(run_info.registered_model_name, CHALLENGER_ALIAS)
    assert int(mv.version) == run_info.version == 1
    assert mv.run_id == run_info.run_id
    assert mv.tags["leadscore.data_hash"] == lineage.content_hash
    assert mv.tags["leadscore.trained_at"] == model.metadata["trained_at"]
    # The metrics are linked to the logged model (shown on its MLflow page).
    logged_model = client.get_logged_model(run_info.model_id)
    assert {m.key for m in logged_model.metrics} >= {"pr_auc", "baseline_logreg.roc_auc"}


def test_next_run_moves_the_challenger_alias(mlflow_target: TrackingTarget, toy_data: ToyData) -> None:
    name = unique_name("moves")
    model = toy_data.fit(["signal"])
    first = log_toy_run(mlflow_target, toy_data, model, name=name)
    second = log_toy_run(mlflow_target, toy_data, model, name=name)
    assert (first.version, second.version) == (1, 2)
    registered = mlflow_target.client().get_registered_model(name)
    assert registered.aliases == {CHALLENGER_ALIAS: 2}


def test_run_input_errors(mlflow_target: TrackingTarget, toy_data: ToyData) -> None:
    model = toy_data.fit(["signal"])
    name = unique_name("bad")
    with pytest.raises(ValueError, match=r"lacks id columns \['as_of'\]"):
        log_toy_run(mlflow_target, toy_data, model, name=name, test_rows=toy_data.test_rows.drop(columns="as_of"))
    with pytest.raises(ValueError, match=r"\['config\.a'\] clash"):
        log_toy_run(mlflow_target, toy_data, model, name=name, params={"config.a": 1}, config={"a": 2})
    # Nothing was registered by the failed calls.
    assert mlflow_target.client().search_registered_models(f"name='{name}'") == []


# --------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="module")
def postgres_url() -> str:
    url = os.environ.get("LEADSCORE_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("LEADSCORE_TEST_POSTGRES_URL is not set: CI must run the PostgreSQL tracking tests")
        pytest.skip(
            "LEADSCORE_TEST_POSTGRES_URL not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/leadscore_test)"
        )
    return url


@pytest.mark.postgres
def test_postgres_database_is_created_if_missing(postgres_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    fresh = f"leadscore_tmp_{uuid.uuid4().hex[:10]}"
    url = make_url(postgres_url).set(database=fresh).render_as_string(hide_password=False)
    admin = create_engine(make_url(url).set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        assert ensure_postgres_database(url) is True
        assert ensure_postgres_database(url) is False
        with admin.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": fresh}).scalar()
        assert found == 1
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{fresh}"'))
        admin.dispose()


@pytest.mark.postgres
def test_postgres_log_register_and_load(
    postgres_url: str, mlflow_target: TrackingTarget, toy_data: ToyData, tmp_path: Path
) -> None:
    try:
        target = configure_mlflow(postgres_url, tmp_path / "pg-artifacts")
        model = toy_data.fit(["segment", "signal"])
        name = unique_name("pg")
        run = log_toy_run(target, toy_data, model, name=name, experiment=unique_name("pg-exp"))
        loaded, info = load_scoring_model(f"models:/{name}@challenger", tracking_uri=target.tracking_uri)
        assert (info.name, info.version, info.run_id) == (name, 1, run.run_id)
        pd.testing.assert_frame_equal(loaded.predict(toy_data.test), model.predict(toy_data.test))
        assert (tmp_path / "pg-artifacts").is_dir()
        assert any((tmp_path / "pg-artifacts").rglob("scoring_model.pkl"))
    finally:
        configure_mlflow(mlflow_target.tracking_uri, mlflow_target.artifact_root)


# --------------------------------------------------------------------------------------------
# the leakage probe's report in the run


@pytest.mark.slow
def test_training_result_logs_its_leakage_report(mlflow_target: TrackingTarget, feature_frame) -> None:
    import dataclasses

    import numpy as np

    from models.fit.training import train_models
    from models.package.tracking import LEAKAGE_ARTIFACT, log_training_result
    from tests.models.conftest import fast_config

    df, spec = feature_frame
    # A feature recorded with the outcome, which the user vouches for: training goes on, the run must say so.
    rng = np.random.default_rng(0)
    df = df.assign(crm_score=(df["converted"] * 3 + rng.normal(scale=0.3, size=len(df))).astype(np.float32))
    spec = dataclasses.replace(spec, numeric=[*spec.numeric, "crm_score"])
    result = train_models(df, spec, fast_config(stage={"enabled": False}, leakage={"acknowledge": ["crm_score"]}))
    assert result.leakage is not None
    assert [f.feature for f in result.leakage.acknowledged] == ["crm_score"]

    run = log_training_result(
        mlflow_target, result, experiment="leakage-report", registered_model_name=unique_name("leak")
    )
    client = mlflow_target.client()
    metrics = client.get_run(run.run_id).data.metrics
    assert metrics["leakage.flagged"] == 1.0
    assert metrics["leakage.rows_probed"] == float(result.leakage.rows_probed)
    assert metrics["leakage.max_feature_auc"] == pytest.approx(result.leakage.features[0].auc)
    assert metrics["leakage.max_feature_auc"] > 0.95
    logged = json.loads(Path(client.download_artifacts(run.run_id, LEAKAGE_ARTIFACT)).read_text())
    assert logged["acknowledged"] == ["crm_score"]
    assert logged["flagged"] == []  # nothing unacknowledged (it would have stopped training)
    assert logged["features"]["crm_score"]["flagged"] is True
    assert set(logged["features"]) == set(spec.features)


@pytest.mark.slow
def test_a_run_without_the_probe_logs_no_leakage_report(mlflow_target: TrackingTarget, trained) -> None:
    import dataclasses

    from models.package.tracking import LEAKAGE_ARTIFACT, log_training_result

    assert trained.leakage is not None  # the probe is on by default
    result = dataclasses.replace(trained, leakage=None)  # as with train.leakage.enabled: false
    run = log_training_result(
        mlflow_target, result, experiment="leakage-report", registered_model_name=unique_name("nl")
    )
    client = mlflow_target.client()
    assert not any(k.startswith("leakage.") for k in client.get_run(run.run_id).data.metrics)
    assert LEAKAGE_ARTIFACT not in {a.path for a in client.list_artifacts(run.run_id, "evaluation")}
