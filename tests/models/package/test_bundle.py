from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.models import Model

from models.fit.scoring import ScoringModel
from models.fit.training import LEADSCORE
from models.package.bundle import (
    PYFUNC_ENTRY_FILE,
    LeadscorePyfunc,
    load_scoring_model,
    parse_models_uri,
    pip_requirements,
    read_scoring_model,
    signature_frame,
    unwrap_scoring_model,
    write_scoring_model,
)
from models.package.registry import ModelRegistry
from models.package.tracking import TrackingTarget, TrainingRun, log_training_result, result_evaluator
from tests.models import mlflow_fixtures
from tests.models.mlflow_fixtures import (
    StandInScoringModel,
    ToyData,
    log_toy_run,
    unique_name,
)

# Shared fixtures (pytest finds fixtures by module attribute).
mlflow_target = mlflow_fixtures.mlflow_target
toy_data = mlflow_fixtures.toy_data

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def logged(mlflow_target: TrackingTarget, toy_data: ToyData) -> tuple[TrainingRun, StandInScoringModel]:
    model = toy_data.fit(["segment", "signal", "visits"])
    return log_toy_run(mlflow_target, toy_data, model, name=unique_name("bundle")), model


def test_load_through_alias_gives_identical_predictions(
    mlflow_target: TrackingTarget, logged, toy_data: ToyData
) -> None:
    run, model = logged
    loaded, info = load_scoring_model(f"models:/{run.registered_model_name}@challenger")
    assert isinstance(loaded, StandInScoringModel)
    assert loaded is not model
    pd.testing.assert_frame_equal(loaded.predict(toy_data.test), model.predict(toy_data.test))
    assert info.name == run.registered_model_name
    assert info.version == run.version
    assert info.run_id == run.run_id
    assert info.model_id == run.model_id
    assert info.aliases == ("challenger",)
    assert info.trained_at == model.metadata["trained_at"]
    expected = toy_data.evaluator()(model, toy_data.test_rows)
    assert info.metrics["pr_auc"] == pytest.approx(expected["pr_auc"])
    assert all("." not in key for key in info.metrics)


def test_pyfunc_predict_matches_and_unwraps(logged, toy_data: ToyData) -> None:
    run, model = logged
    pyfunc_model = mlflow.pyfunc.load_model(run.model_uri)
    wrapper = pyfunc_model.unwrap_python_model()
    assert isinstance(wrapper, LeadscorePyfunc)
    assert isinstance(unwrap_scoring_model(pyfunc_model), StandInScoringModel)
    example = signature_frame(model, toy_data.test, rows=len(toy_data.test))
    out = pyfunc_model.predict(example)
    pd.testing.assert_frame_equal(out, model.predict(toy_data.test))
    # Missing values in numeric and categorical features pass the signature.
    holes = example.head(3).copy()
    holes.loc[0, "visits"] = np.nan
    holes.loc[1, "segment"] = None
    assert len(pyfunc_model.predict(holes)) == 3


def test_logged_model_has_signature_example_metadata_and_pins(
    mlflow_target: TrackingTarget, logged, toy_data: ToyData
) -> None:
    run, model = logged
    local = Path(mlflow.artifacts.download_artifacts(run.model_uri, tracking_uri=mlflow_target.tracking_uri))
    meta = Model.load(str(local))
    inputs = {spec.name: spec.type.name for spec in meta.signature.inputs.inputs}
    assert inputs == {"segment": "string", "signal": "double", "noise": "double", "visits": "double"}
    outputs = [spec.name for spec in meta.signature.outputs.inputs]
    assert outputs == list(model.predict(toy_data.test.head(2)).columns)
    assert meta.signature.outputs.inputs[0].type.name == "double"  # readiness
    example = meta.load_input_example(str(local))
    assert isinstance(example, pd.DataFrame) and meta.metadata is not None
    assert list(example.columns) == model.input_columns
    assert len(example) == 5
    assert meta.metadata["leadscore"]["input_columns"] == model.input_columns
    assert meta.metadata["leadscore"]["trained_at"] == model.metadata["trained_at"]
    # Model from code: the entry file, the pickled scoring model, and no cloudpickled wrapper.
    assert (local / PYFUNC_ENTRY_FILE).exists()
    assert (local / "artifacts" / "scoring_model.pkl").exists()
    assert not (local / "python_model.pkl").exists()
    requirements = (local / "requirements.txt").read_text().splitlines()
    assert requirements == pip_requirements()
    assert any(r.startswith("leadscore==") for r in requirements)
    assert any(r.startswith("lightgbm==") for r in requirements)


def test_signature_frame_types(toy_data: ToyData) -> None:
    model = toy_data.fit(["signal"])
    frame = toy_data.test.assign(segment=pd.Categorical(toy_data.test["segment"]), visits=toy_data.test["visits"])
    frame.loc[frame.index[1], "segment"] = np.nan
    example = signature_frame(model, frame, rows=3)
    assert list(example.columns) == model.input_columns
    assert example["visits"].dtype == np.float64
    assert pd.api.types.is_string_dtype(example["segment"])
    assert example["segment"].isna().tolist() == [False, True, False]
    with pytest.raises(ValueError, match=r"lacks the scoring model's input columns \['noise'\]"):
        signature_frame(model, frame.drop(columns="noise"))
    with pytest.raises(ValueError, match="no rows"):
        signature_frame(model, frame.head(0))


def test_parse_models_uri() -> None:
    assert parse_models_uri("models:/leadscore@champion") == ("leadscore", "champion", None)
    assert parse_models_uri("models:/leadscore/12") == ("leadscore", None, 12)
    assert parse_models_uri("models:/m-0123abcd") is None
    assert parse_models_uri("runs:/abc/model") is None


def test_unknown_alias_and_version_are_clear_errors(logged) -> None:
    run, _ = logged
    with pytest.raises(LookupError, match=f"'{run.registered_model_name}' has no alias 'champion'"):
        load_scoring_model(f"models:/{run.registered_model_name}@champion")
    with pytest.raises(LookupError, match="has no version 99"):
        load_scoring_model(f"models:/{run.registered_model_name}/99")


def test_pickle_round_trip_and_bad_pickles(tmp_path: Path, toy_data: ToyData) -> None:
    model = toy_data.fit(["signal"])
    path = write_scoring_model(model, tmp_path / "m.pkl")
    again = read_scoring_model(path)
    np.testing.assert_array_equal(again.predict_readiness(toy_data.test), model.predict_readiness(toy_data.test))
    write_scoring_model({"not": "a model"}, tmp_path / "dict.pkl")
    with pytest.raises(RuntimeError, match="has no predict"):
        read_scoring_model(tmp_path / "dict.pkl")


def test_unloaded_wrapper_says_so() -> None:
    with pytest.raises(RuntimeError, match="no scoring model"):
        LeadscorePyfunc().predict(None, pd.DataFrame())


@pytest.mark.slow
def test_model_loads_in_a_fresh_interpreter(mlflow_target: TrackingTarget, logged, tmp_path: Path) -> None:
    """No state of the logging process is needed to load the model (only the installed package)."""
    run, _ = logged
    code = (
        "import sys, mlflow\n"
        "from models.package.bundle import load_scoring_model\n"
        "m, info = load_scoring_model(sys.argv[1], tracking_uri=sys.argv[2])\n"
        "print(type(m).__name__, info.version)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, f"models:/{run.registered_model_name}/{run.version}", mlflow_target.tracking_uri],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == f"StandInScoringModel {run.version}"
    assert list(tmp_path.iterdir()) == []  # nothing fell back to MLflow's default ./mlflow.db


# --------------------------------------------------------------------------------------------
# the real ScoringModel (the session's ``trained`` result from tests/models/conftest.py)


@pytest.fixture(scope="module")
def real_logged(
    mlflow_target: TrackingTarget, trained, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainingRun, Any]:
    data_dir = tmp_path_factory.mktemp("real-data")
    trained.test_frame.to_parquet(data_dir / "snapshots.parquet")
    run = log_training_result(
        mlflow_target,
        trained,
        experiment="leadscore-real",
        registered_model_name=unique_name("real"),
        data_dir=data_dir,
        row_counts={"leads": 400},
    )
    return run, trained


def test_real_model_round_trip(mlflow_target: TrackingTarget, real_logged) -> None:
    run, result = real_logged
    loaded, info = load_scoring_model(f"models:/{run.registered_model_name}@challenger")
    assert isinstance(loaded, ScoringModel)
    test = result.test_frame
    pd.testing.assert_frame_equal(loaded.predict(test), result.model.predict(test))
    pd.testing.assert_frame_equal(loaded.readiness_contributions(test), result.model.readiness_contributions(test))
    assert info.metrics == pytest.approx(result.readiness_metrics[LEADSCORE])
    assert info.trained_at == str(result.model.metadata["trained_at"])

    client = mlflow_target.client()
    logged = client.get_run(run.run_id).data
    assert logged.metrics["baseline_logistic_regression.pr_auc"] == pytest.approx(
        result.readiness_metrics["logistic_regression"]["pr_auc"]
    )
    assert logged.metrics["leadscore_uncalibrated.pr_auc"] == pytest.approx(
        result.readiness_metrics["leadscore_uncalibrated"]["pr_auc"]
    )
    assert logged.metrics["stage.accuracy"] == pytest.approx(result.stage_metrics["accuracy"])
    assert logged.params["readiness.best_iteration"] == str(result.model.metadata["readiness_best_iteration"])
    assert logged.params["data.rows.test"] == str(len(test))
    assert logged.params["data.rows.leads"] == "400"
    assert logged.params["config.primary_metric"] == result.config.primary_metric
    plots = {a.path for a in client.list_artifacts(run.run_id, "plots")}
    assert plots == {f"plots/{name}.png" for name in result.figures}
    evaluation = {a.path for a in client.list_artifacts(run.run_id, "evaluation")}
    assert {"evaluation/grade_table.csv", "evaluation/stage_metrics.json", "evaluation/test_rows.parquet"} <= evaluation
    grades = pd.read_csv(client.download_artifacts(run.run_id, "evaluation/grade_table.csv"))
    assert len(grades) == len(result.grade_table)

    # The generic pyfunc path (with MLflow's schema enforcement) gives the same outputs.
    pyfunc_model = mlflow.pyfunc.load_model(run.model_uri)
    example = signature_frame(result.model, test, rows=len(test))
    pd.testing.assert_frame_equal(
        pyfunc_model.predict(example).reset_index(drop=True), result.model.predict(test).reset_index(drop=True)
    )


def test_real_model_champion_is_re_evaluated_on_the_same_rows(mlflow_target: TrackingTarget, real_logged) -> None:
    run, result = real_logged
    from models.package.promotion import training_signal

    registry = ModelRegistry(mlflow_target.client(), run.registered_model_name)
    signal = training_signal(result)
    assert registry.promote_if_better(run.version, signal=signal).promoted
    again = log_training_result(
        mlflow_target, result, experiment="leadscore-real", registered_model_name=run.registered_model_name
    )
    decision = registry.promote_if_better(again.version, evaluate=result_evaluator(result), signal=signal)
    # The same model on the same rows: the re-evaluated champion matches the logged metrics exactly,
    # so the (equally good, fresher) challenger meets min_relative x champion; it is promoted only if it
    # also beats the best baseline on the same rows.
    assert decision.champion_metrics == pytest.approx(result.readiness_metrics[LEADSCORE])
    assert decision.delta == pytest.approx(0.0, abs=1e-12)
    assert "meets >= 0.95 x" in decision.reason
    own = result.readiness_metrics[LEADSCORE]["pr_auc"]
    best_baseline = max(
        m["pr_auc"] for name, m in result.readiness_metrics.items() if name.startswith(("logistic", "hist"))
    )
    assert decision.promoted == (own > best_baseline), decision.reason
    assert decision.guardrail == (None if own > best_baseline else "baseline")
    rows = registry.test_rows(again.version).head(3).copy()
    rows.loc[0, "lead_id"] = "unknown-lead"
    with pytest.raises(ValueError, match="1 of 3 test rows are not in this training result"):
        result_evaluator(result)(result.model, rows)


def test_models_pickled_under_the_old_flat_module_names_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model logged before models/ was grouped into subpackages pickled its classes under the flat names
    (``models.scoring``, ``models.encoding`` ...); reading it maps the old names to the new modules."""
    import sys

    from models.fit import encoding, scoring
    from models.package.bundle import read_scoring_model

    # Pickle a real scoring model's class under its pre-move module names.
    monkeypatch.setitem(sys.modules, "models.scoring", scoring)
    monkeypatch.setitem(sys.modules, "models.encoding", encoding)
    monkeypatch.setattr(scoring.ScoreScale, "__module__", "models.scoring")
    monkeypatch.setattr(encoding.FeatureEncoder, "__module__", "models.encoding")
    legacy = pickle.dumps(_LegacyModel(), protocol=pickle.HIGHEST_PROTOCOL)
    assert b"models.scoring" in legacy
    assert b"models.encoding" in legacy
    monkeypatch.undo()
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(legacy)  # plain pickle no longer finds the old modules

    path = tmp_path / "scoring_model.pkl"
    path.write_bytes(legacy)
    model = read_scoring_model(path)
    assert type(model.scale).__module__ == "models.fit.scoring"
    assert type(model.encoder).__module__ == "models.fit.encoding"


class _LegacyModel:
    def __init__(self) -> None:
        from models.fit.encoding import FeatureEncoder
        from models.fit.scoring import ScoreScale

        self.encoder = FeatureEncoder()
        self.scale = ScoreScale.__new__(ScoreScale)

    def predict(self, frame: object) -> object:
        return frame
