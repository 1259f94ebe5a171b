from __future__ import annotations

import io
import pickle
from typing import Any

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.special import logit

from models.fit.scoring import BIAS_COLUMN, ProbabilityCalibration, ScoreScale, ScoringModel, assign_grades


@pytest.fixture(scope="module")
def model(trained) -> ScoringModel:
    return trained.model


@pytest.fixture(scope="module")
def rows(trained) -> pd.DataFrame:
    return trained.split.test.sample(n=300, random_state=0)


def test_predict_output_contract(model: ScoringModel, rows: pd.DataFrame) -> None:
    out = model.predict(rows)
    assert list(out.columns) == model.output_columns
    assert out.index.equals(rows.index)
    assert ((out["readiness"] > 0) & (out["readiness"] < 1)).all()
    assert out["score"].between(0, 100).all() and out["score"].dtype == np.int64
    assert set(out["grade"]) <= {"A", "B", "C", "D"}
    proba_cols = [f"stage_proba_{s}" for s in model.stage_labels]
    assert np.allclose(out[proba_cols].sum(axis=1), 1.0)
    # the named stage follows the decision rule: argmax of the probabilities times the fitted weights
    best = np.array(model.stage_labels)[(out[proba_cols].to_numpy() * model.stage_weights).argmax(axis=1)]
    assert (out["stage"].to_numpy() == best).all()
    assert np.array_equal(out["score"], model.score_scale(out["readiness"]))
    assert model.score_scale.method == "percentile"
    # The score never decreases with readiness.
    ordered = out.sort_values("readiness")
    assert (np.diff(ordered["score"].to_numpy()) >= 0).all()


def test_grades_follow_cutoffs(model: ScoringModel, rows: pd.DataFrame) -> None:
    out = model.predict(rows)
    cut = model.grade_cutoffs
    assert (out.loc[out["grade"] == "A", "readiness"] >= cut["A"]).all()
    assert (out.loc[out["grade"] == "D", "readiness"] < cut["C"]).all()
    b = out.loc[out["grade"] == "B", "readiness"]
    assert ((b >= cut["B"]) & (b < cut["A"])).all()


def test_assign_grades_at_exact_cutoffs() -> None:
    grades = assign_grades(np.array([0.5, 0.49, 0.2, 0.1, 0.0999]), {"A": 0.5, "B": 0.2, "C": 0.1})
    assert grades.tolist() == ["A", "B", "B", "C", "D"]


def test_contributions_sum_to_raw_margin(model: ScoringModel, rows: pd.DataFrame) -> None:
    contrib = model.readiness_contributions(rows)
    assert list(contrib.columns) == [*model.feature_names, BIAS_COLUMN]
    assert contrib.index.equals(rows.index)
    assert np.allclose(contrib.sum(axis=1).to_numpy(), model.predict_margin(rows), atol=1e-9)
    assert contrib[BIAS_COLUMN].nunique() == 1  # the expected value is one constant


def test_calibrated_logit_space_sums_to_logit_of_readiness(model: ScoringModel, rows: pd.DataFrame) -> None:
    sigmoid = ScoringModel(
        spec=model.spec,
        encoder=model.encoder,
        readiness_booster=model.readiness_booster,
        calibration=ProbabilityCalibration("sigmoid", a=-0.9, b=0.3),
        grade_cutoffs=model.grade_cutoffs,
    )
    contrib = sigmoid.readiness_contributions(rows, space="calibrated_logit")
    assert np.allclose(contrib.sum(axis=1).to_numpy(), logit(sigmoid.predict_readiness(rows)), atol=1e-9)
    isotonic = ProbabilityCalibration("isotonic", knots_x=np.array([-1.0, 1.0]), knots_y=np.array([0.1, 0.9]))
    iso = ScoringModel(
        spec=model.spec,
        encoder=model.encoder,
        readiness_booster=model.readiness_booster,
        calibration=isotonic,
        grade_cutoffs=model.grade_cutoffs,
    )
    with pytest.raises(ValueError, match="not additive"):
        iso.readiness_contributions(rows, space="calibrated_logit")


def test_fast_paths_match_the_frame_path(model: ScoringModel, rows: pd.DataFrame) -> None:
    expected = model.predict(rows)
    frame = rows[model.input_columns].astype(object).where(rows[model.input_columns].notna(), None)
    records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in frame.to_dict(orient="records")]
    one = model.predict_one(records[0])
    assert one["readiness"] == pytest.approx(expected["readiness"].iloc[0], abs=1e-12)
    assert one["score"] == expected["score"].iloc[0] and one["grade"] == expected["grade"].iloc[0]
    assert one["stage"] == expected["stage"].iloc[0]
    assert set(one["stage_proba"]) == set(model.stage_labels)
    array = np.array([[r[c] for c in model.input_columns] for r in records], dtype=object)
    arrays = model.predict_arrays(array)
    assert np.allclose(arrays["readiness"], expected["readiness"], atol=1e-12)
    assert np.allclose(model.predict_readiness(array[:3]), expected["readiness"].iloc[:3], atol=1e-12)
    stage_cols = [f"stage_proba_{s}" for s in model.stage_labels]
    assert np.allclose(model.predict_stage_proba(array), expected[stage_cols].to_numpy(), atol=1e-12)


@pytest.mark.parametrize("dumps,loads", [(pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)])
def test_pickle_round_trip_gives_identical_predictions(model: ScoringModel, rows: pd.DataFrame, dumps, loads) -> None:
    clone = loads(dumps(model))
    pd.testing.assert_frame_equal(clone.predict(rows), model.predict(rows), check_exact=True)
    pd.testing.assert_frame_equal(clone.readiness_contributions(rows), model.readiness_contributions(rows))
    assert clone.metadata == model.metadata
    assert clone.input_columns == model.input_columns


def test_joblib_round_trip(model: ScoringModel, rows: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    buffer.seek(0)
    clone = joblib.load(buffer)
    assert np.array_equal(clone.predict_readiness(rows), model.predict_readiness(rows))


def test_metadata_and_description(model: ScoringModel) -> None:
    meta = model.metadata
    for key in ("trained_at", "config", "feature_spec", "metrics", "grade_cutoffs", "calibration", "test_ids_sha256"):
        assert key in meta
    assert model.horizon_days == 90
    assert model.input_columns == model.spec.features
    assert "ScoringModel(" in repr(model)


def test_missing_input_column_is_a_clear_error(model: ScoringModel, rows: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="lacks feature columns"):
        model.predict(rows.drop(columns=["visits_30d"]))
    with pytest.raises(ValueError, match="record 0 lacks"):
        model.predict_one({"industry": "software"})


def test_inconsistent_parts_are_rejected(model: ScoringModel) -> None:
    with pytest.raises(ValueError, match="classes"):
        ScoringModel(
            spec=model.spec,
            encoder=model.encoder,
            readiness_booster=model.readiness_booster,
            calibration=model.calibration,
            grade_cutoffs=model.grade_cutoffs,
            stage_booster=model.stage_booster,
            stage_labels=["only", "three", "labels"],
        )
    with pytest.raises(ValueError, match="A >= B >= C"):
        ScoringModel(
            spec=model.spec,
            encoder=model.encoder,
            readiness_booster=model.readiness_booster,
            calibration=model.calibration,
            grade_cutoffs={"A": 0.1, "B": 0.2, "C": 0.05},
        )


def test_model_without_stage(model: ScoringModel, rows: pd.DataFrame) -> None:
    no_stage = ScoringModel(
        spec=model.spec,
        encoder=model.encoder,
        readiness_booster=model.readiness_booster,
        calibration=model.calibration,
        grade_cutoffs=model.grade_cutoffs,
    )
    out = no_stage.predict(rows)
    assert list(out.columns) == ["readiness", "score", "grade"]
    with pytest.raises(ValueError, match="no stage model"):
        no_stage.predict_stage_proba(rows)


def test_calibration_dict_round_trip(model: ScoringModel) -> None:
    cal = model.calibration
    again = ProbabilityCalibration.from_dict(cal.to_dict())
    m = np.linspace(-5, 3, 50)
    assert np.allclose(again(m), cal(m))


def test_percentile_score_scale() -> None:
    reference = np.linspace(0.0, 0.2, 10001)  # uniform on [0, 0.2]
    scale = ScoreScale.percentile_of(reference)
    p = np.array([-0.1, 0.0, 0.02, 0.1, 0.18, 0.2, 0.5])
    assert scale(p).tolist() == [0, 0, 10, 50, 90, 100, 100]
    again = ScoreScale.from_dict(scale.to_dict())
    assert np.array_equal(again(p), scale(p))


def test_percentile_score_with_tied_reference() -> None:
    # 40% of the reference sits on one value: those rows are at the 40th percentile, not spread 0-40.
    reference = np.r_[np.full(400, 0.01), np.linspace(0.02, 0.5, 600)]
    scale = ScoreScale.percentile_of(reference)
    assert scale(np.array([0.01]))[0] == 40
    assert scale(np.array([0.005]))[0] == 0
    assert ScoreScale("probability")(np.array([0.014, 0.5, 0.996])).tolist() == [1, 50, 100]
