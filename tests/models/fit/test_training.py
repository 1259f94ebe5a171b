from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from models.fit.baselines import HIST_GB, LOGISTIC
from models.fit.training import LEADSCORE, InsufficientDataError, predict_readiness_of, train_models
from models.judge.evaluation import READINESS_METRIC_KEYS
from tests.models.conftest import fast_config, make_feature_frame


def test_result_contents(trained) -> None:
    assert set(trained.readiness_metrics) == {LEADSCORE, "leadscore_uncalibrated", LOGISTIC, HIST_GB}
    for metrics in trained.readiness_metrics.values():
        assert tuple(metrics) == READINESS_METRIC_KEYS
    assert trained.test_ids.columns.tolist() == ["lead_id", "as_of"]
    assert len(trained.test_ids) == len(trained.split.test)
    assert trained.grade_table["rows"].sum() == len(trained.split.test)
    assert trained.stage_metrics is not None and trained.stage_metrics["n"] == len(trained.split.stage.test)
    assert trained.stage_metrics["test_strategy"] == "temporal"
    expected_figures = {
        "roc_curve",
        "pr_curve",
        "calibration_curve",
        "cumulative_gains",
        "feature_importance",
        "shap_summary",
        "stage_confusion_matrix",
    }
    assert set(trained.figures) == expected_figures
    assert all(isinstance(f, Figure) for f in trained.figures.values())
    flat = trained.flat_metrics()
    assert flat["test.leadscore.pr_auc"] == trained.readiness_metrics[LEADSCORE]["pr_auc"]
    assert "test.stage.accuracy" in flat
    assert trained.summary_table().loc[LEADSCORE, "roc_auc"] == trained.readiness_metrics[LEADSCORE]["roc_auc"]
    assert set(trained.timings) >= {"split", "readiness_fit", "stage_fit", "baselines_fit", "evaluation", "plots"}


def test_model_has_signal_and_is_calibrated(trained) -> None:
    m = trained.readiness_metrics[LEADSCORE]
    assert m["roc_auc"] > 0.72
    assert m["lift_at_10"] > 2.0
    assert m["ece"] < 0.05
    # Grades rank conversion: A converts more often than D.
    rates = trained.grade_table.set_index("grade")["conversion_rate"]
    assert rates["A"] > rates["B"] > rates["D"]
    assert trained.stage_metrics["accuracy"] >= trained.stage_metrics["majority_class_accuracy"]
    assert trained.stage_metrics["log_loss"] < trained.stage_metrics["prior_log_loss"]


def test_evaluate_on_reproduces_result_metrics(trained) -> None:
    again = trained.evaluate_on(trained.model)
    assert again == pytest.approx(trained.readiness_metrics[LEADSCORE])
    baseline = trained.evaluate_on(trained.baselines[LOGISTIC], trained.split.test)
    assert baseline == pytest.approx(trained.readiness_metrics[LOGISTIC])

    class PyfuncLike:  # what an MLflow pyfunc's predict returns
        def predict(self, df: pd.DataFrame) -> pd.DataFrame:
            return trained.model.predict(df)

    assert trained.evaluate_on(PyfuncLike()) == pytest.approx(trained.readiness_metrics[LEADSCORE])
    with pytest.raises(TypeError, match="no predict_readiness"):
        predict_readiness_of(object(), trained.split.test)


def test_test_ids_identify_the_test_rows(trained) -> None:
    test = trained.split.test
    merged = trained.test_ids.merge(test[["lead_id", "as_of"]], how="inner")
    assert len(merged) == len(test)
    assert trained.model.metadata["test_ids_sha256"]


def test_lightgbm_beats_logistic_on_an_interaction() -> None:
    df, spec = make_feature_frame(n_leads=500, n_dates=40, seed=11, interaction=True)
    result = train_models(df, spec, fast_config())
    lgbm, lr = result.readiness_metrics[LEADSCORE], result.readiness_metrics[LOGISTIC]
    assert lgbm["roc_auc"] > lr["roc_auc"] + 0.03
    assert lgbm["pr_auc"] > lr["pr_auc"] + 0.03


def test_too_few_converted_is_a_clear_error() -> None:
    df, spec = make_feature_frame(n_leads=60, n_dates=40, seed=12, base_log_rate=-9.0)
    with pytest.raises(InsufficientDataError) as err:
        train_models(df, spec, fast_config(stage={"enabled": False}))
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "converted" in message and "at least 40 of each" in message
    assert "more leads" in message and "longer history" in message and "horizon" in message
    train_pos = int(err.value.args[0].split(" hold ")[1].split(" converted")[0])
    assert train_pos < 40


def test_stage_can_be_disabled(feature_frame) -> None:
    df, spec = feature_frame
    result = train_models(df, spec, fast_config(stage={"enabled": False}, baselines={"enabled": False}))
    assert result.stage_model is None and result.stage_metrics is None
    assert not result.model.has_stage
    assert set(result.readiness_metrics) == {LEADSCORE, "leadscore_uncalibrated"}


def test_stage_lead_holdout_test_is_noted(feature_frame) -> None:
    df, spec = feature_frame
    result = train_models(df, spec, fast_config(baselines={"enabled": False}))
    assert result.stage_metrics is not None
    assert result.stage_metrics["test_strategy"] == "lead_holdout"
    assert any("held-out leads" in n for n in result.notes)
    assert result.model.metadata["notes"] == result.notes


def test_recorded_stage_column(feature_frame) -> None:
    df, spec = feature_frame
    crm = np.where(df["visits_30d"] > 2, "engaged", np.where(df["emails_90d"] > 2, "aware", "cold"))
    df = df.assign(crm_stage=crm)
    config = fast_config(
        stage={"use_recorded_stage_column": "crm_stage", "recorded_stage_order": ["cold", "aware", "engaged"]},
        baselines={"enabled": False},
    )
    result = train_models(df, spec, config)
    assert result.model.stage_labels == ["cold", "aware", "engaged"]
    assert result.stage_metrics is not None
    assert result.stage_metrics["accuracy"] > 0.9  # the recorded stage is a function of two features
    spec_leaky = type(spec)(categorical=[*spec.categorical, "crm_stage"], numeric=spec.numeric, horizon_days=90)
    with pytest.raises(ValueError, match="also a feature"):
        train_models(df, spec_leaky, config)


def test_unknown_feature_table_modes_are_refused(feature_frame) -> None:
    df, spec = feature_frame
    odd = type(spec)(categorical=spec.categorical, numeric=spec.numeric, horizon_days=90)
    odd.mode = "monthly_rollup"
    with pytest.raises(ValueError, match=r"mode 'monthly_rollup' is not supported for training: expected one of"):
        train_models(df, odd, fast_config())


def test_missing_feature_column_is_reported(feature_frame) -> None:
    df, spec = feature_frame
    with pytest.raises(ValueError, match=r"lacks feature columns .*'x2'"):
        train_models(df.drop(columns=["x2"]), spec, fast_config())
