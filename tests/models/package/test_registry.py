from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from features.spec import FeatureSpec
from models.config import PromotionConfig
from models.package.registry import HISTORY_TAG, ModelRegistry, RegistryError
from models.package.tracking import CHALLENGER_ALIAS, CHAMPION_ALIAS, TrackingTarget
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


@pytest.fixture(scope="module")
def models(toy_data: ToyData) -> dict[str, StandInScoringModel]:
    """Models of known quality: noise-only < signal-only < signal + segment."""
    return {
        "bad": toy_data.fit(["noise"]),
        "good": toy_data.fit(["signal"]),
        "best": toy_data.fit(["signal", "segment"]),
    }


@pytest.fixture
def registry(mlflow_target: TrackingTarget) -> ModelRegistry:
    return ModelRegistry(mlflow_target.client(), unique_name("reg"))


def log(target: TrackingTarget, data: ToyData, model: StandInScoringModel, registry: ModelRegistry) -> int:
    return log_toy_run(target, data, model, name=registry.name).version


def aliases(registry: ModelRegistry) -> dict[str, int]:
    return {k: int(v) for k, v in registry.client.get_registered_model(registry.name).aliases.items()}


def test_first_model_becomes_champion(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    version = log(mlflow_target, toy_data, models["good"], registry)
    decision = registry.promote_if_better()  # defaults to the challenger
    assert decision.promoted
    assert decision.version == version == 1
    assert decision.champion_version is None and decision.champion_metrics is None and decision.delta is None
    assert "first model" in decision.reason
    assert aliases(registry) == {CHAMPION_ALIAS: 1}  # the challenger alias left with the promotion
    assert registry.champion_history() == [1]
    champion = registry.champion()
    assert champion is not None and champion.version == 1
    assert registry.challenger() is None
    mv = registry.client.get_model_version(registry.name, "1")
    assert mv.tags["leadscore.promotion"] == "promoted"


def test_worse_challenger_is_not_promoted_and_both_metrics_are_recorded(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    log(mlflow_target, toy_data, models["good"], registry)
    registry.promote_if_better()
    worse = log(mlflow_target, toy_data, models["bad"], registry)
    evaluate = toy_data.evaluator()
    decision = registry.promote_if_better(evaluate=evaluate)

    assert not decision.promoted
    assert decision.version == worse and decision.champion_version == 1
    assert aliases(registry) == {CHAMPION_ALIAS: 1, CHALLENGER_ALIAS: worse}
    expected_champion = evaluate(models["good"], toy_data.test_rows)
    expected_challenger = evaluate(models["bad"], toy_data.test_rows)
    assert decision.champion_metrics == pytest.approx(expected_champion)
    assert decision.challenger_metrics == pytest.approx(expected_challenger)
    assert decision.delta == pytest.approx(expected_challenger["pr_auc"] - expected_champion["pr_auc"])
    assert decision.delta is not None and decision.delta < 0
    assert decision.same_rows
    assert decision.reason.startswith("not promoted")

    worse_run_id = registry.get(worse).run_id
    assert worse_run_id is not None
    run = registry.client.get_run(worse_run_id)
    assert run.data.metrics["promotion.champion.pr_auc"] == pytest.approx(expected_champion["pr_auc"])
    assert run.data.metrics["promotion.promoted"] == 0.0
    assert run.data.metrics["promotion.delta"] == pytest.approx(decision.delta)
    assert run.data.tags["leadscore.promotion"] == "rejected"
    assert run.data.tags["leadscore.promotion.compared_to"] == "1"
    files = [a.path for a in registry.client.list_artifacts(run.info.run_id, "promotion")]
    assert len(files) == 1
    logged = json.loads(Path(registry.client.download_artifacts(run.info.run_id, files[0])).read_text())
    assert logged["promoted"] is False
    assert logged["champion_metrics"]["pr_auc"] == pytest.approx(expected_champion["pr_auc"])
    assert registry.client.get_model_version(registry.name, str(worse)).tags["leadscore.promotion"] == "rejected"
    table = {row[0]: row[1:] for row in decision.metric_rows()}
    assert table["pr_auc"] == pytest.approx(
        (expected_challenger["pr_auc"], expected_champion["pr_auc"], decision.delta)
    )
    assert set(table) == set(expected_challenger)


def test_challenger_within_min_relative_of_the_champion_is_promoted(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    log(mlflow_target, toy_data, models["best"], registry)
    registry.promote_if_better()
    slightly_worse = log(mlflow_target, toy_data, models["good"], registry)
    evaluate = toy_data.evaluator()
    ratio = (
        evaluate(models["good"], toy_data.test_rows)["pr_auc"] / evaluate(models["best"], toy_data.test_rows)["pr_auc"]
    )
    assert 0.5 < ratio < 0.995  # the data makes segment informative

    held = registry.promote_if_better(
        slightly_worse, evaluate=evaluate, policy=PromotionConfig(min_relative=ratio + 0.002)
    )
    assert not held.promoted and held.guardrail == "champion"
    assert held.reason.startswith("not promoted (champion guardrail)")
    assert held.delta is not None and held.delta < 0
    assert aliases(registry)[CHAMPION_ALIAS] == 1

    promoted = registry.promote_if_better(
        slightly_worse, evaluate=evaluate, policy=PromotionConfig(min_relative=ratio - 0.002)
    )
    assert promoted.promoted and not promoted.forced and promoted.guardrail is None
    assert aliases(registry) == {CHAMPION_ALIAS: slightly_worse}
    assert registry.champion_history() == [1, slightly_worse]
    # Two decisions were logged on the candidate's run, the latest tags win.
    run_id = registry.get(slightly_worse).run_id
    assert run_id is not None
    assert len(registry.client.list_artifacts(run_id, "promotion")) == 2
    assert registry.client.get_run(run_id).data.tags["leadscore.promotion"] == "promoted"

    again = registry.promote_if_better(slightly_worse, evaluate=evaluate)
    assert not again.promoted and "already the champion" in again.reason


def test_no_signal_model_is_never_promoted_not_even_the_first(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    noise = log(mlflow_target, toy_data, models["bad"], registry)
    check = registry.logged_signal(noise)
    assert check is not None and not check.passed
    assert check.roc_auc_low <= 0.5 <= check.roc_auc_high
    refused = registry.promote_if_better()
    assert not refused.promoted and refused.guardrail == "no_signal"
    assert "includes 0.5" in refused.reason and "check the data" in refused.reason
    assert registry.champion() is None
    run = registry.client.get_run(registry.get(noise).run_id or "")
    assert run.data.tags["leadscore.promotion.guardrail"] == "no_signal"
    # The same check on manual promotion; --force overrides and says so.
    assert not registry.promote(noise).promoted
    forced = registry.promote(noise, force=True)
    assert forced.promoted and forced.forced and "no_signal" in forced.reason
    signal = log(mlflow_target, toy_data, models["good"], registry)
    logged = registry.logged_signal(signal)
    assert logged is not None and logged.passed and logged.roc_auc_low > 0.5


def test_challenger_must_beat_the_best_baseline(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    first = log(mlflow_target, toy_data, models["good"], registry)
    # the first model becomes champion even below a baseline (nothing else to serve), and the reason says so
    own = toy_data.evaluator()(models["good"], toy_data.test_rows)["pr_auc"]
    crowned = registry.promote_if_better(first, baselines={"hgb": {"pr_auc": own + 0.01}})
    assert crowned.promoted and "WARNING pr_auc" in crowned.reason and "the best baseline 'hgb'" in crowned.reason
    better = log(mlflow_target, toy_data, models["best"], registry)
    evaluate = toy_data.evaluator()
    value = evaluate(models["best"], toy_data.test_rows)["pr_auc"]
    decision = registry.promote_if_better(
        better, evaluate=evaluate, baselines={"logistic": {"pr_auc": value - 0.01}, "hgb": {"pr_auc": value + 0.01}}
    )
    assert not decision.promoted and decision.guardrail == "baseline"
    assert "does not beat the best baseline 'hgb'" in decision.reason
    promoted = registry.promote_if_better(better, evaluate=evaluate, baselines={"logistic": {"pr_auc": value - 0.01}})
    assert promoted.promoted


def test_feature_set_change_is_reported_with_the_fix(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    log(mlflow_target, toy_data, models["good"], registry)
    registry.promote_if_better()
    other = toy_data.fit(["signal"])
    other.spec = FeatureSpec(categorical=[], numeric=["signal", "noise", "visits", "pages"], horizon_days=90)
    version = log(mlflow_target, toy_data, other, registry)

    def must_not_score(model: object, rows: pd.DataFrame) -> dict[str, float]:
        raise AssertionError("the champion must not be scored on another feature set")

    decision = registry.promote_if_better(version, evaluate=must_not_score)
    assert not decision.promoted and decision.guardrail == "feature_set"
    assert "LEADSCORE_MODEL_NAME" in decision.reason
    assert "lacks 1 of its features (segment)" in decision.reason and "(pages)" in decision.reason
    assert aliases(registry)[CHAMPION_ALIAS] == 1


def test_lower_is_better_primary_metric(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    log(mlflow_target, toy_data, models["best"], registry)
    registry.promote_if_better()
    worse = log(mlflow_target, toy_data, models["bad"], registry)
    evaluate = toy_data.evaluator()
    decision = registry.promote_if_better(primary_metric="log_loss", evaluate=evaluate)
    ll_best = evaluate(models["best"], toy_data.test_rows)["log_loss"]
    ll_bad = evaluate(models["bad"], toy_data.test_rows)["log_loss"]
    assert ll_bad > ll_best
    assert not decision.higher_is_better
    assert decision.delta == pytest.approx(ll_best - ll_bad)
    assert not decision.promoted and decision.version == worse


def test_manual_promote_force_and_rollback(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    log(mlflow_target, toy_data, models["good"], registry)
    registry.promote_if_better()
    better = log(mlflow_target, toy_data, models["best"], registry)
    registry.promote_if_better(evaluate=toy_data.evaluator())
    worse = log(mlflow_target, toy_data, models["bad"], registry)

    refused = registry.promote(worse)  # no evaluator: logged metrics of each model's own test set
    assert not refused.promoted and not refused.same_rows
    assert "different test sets" in refused.reason
    assert aliases(registry)[CHAMPION_ALIAS] == better

    forced = registry.promote(worse, force=True, evaluate=toy_data.evaluator())
    assert forced.promoted and forced.forced and forced.same_rows
    assert forced.reason.startswith("forced promotion")
    assert aliases(registry) == {CHAMPION_ALIAS: worse}
    assert registry.client.get_model_version(registry.name, str(worse)).tags["leadscore.promotion"] == "forced"
    assert registry.champion_history() == [1, better, worse]

    back = registry.rollback()
    assert (back.from_version, back.to_version) == (worse, better)
    assert aliases(registry)[CHAMPION_ALIAS] == better
    assert registry.client.get_model_version(registry.name, str(worse)).tags["leadscore.promotion"] == "rolled_back"
    assert registry.rollback().to_version == 1
    with pytest.raises(RegistryError, match="no previous champion to roll back to"):
        registry.rollback()
    assert aliases(registry)[CHAMPION_ALIAS] == 1


def test_rollback_skips_deleted_versions_and_needs_a_champion(
    mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry
) -> None:
    log(mlflow_target, toy_data, models["good"], registry)
    with pytest.raises(RegistryError, match="no champion to roll back"):
        registry.rollback()
    registry.promote_if_better()
    second = log(mlflow_target, toy_data, models["best"], registry)
    registry.promote(second, evaluate=toy_data.evaluator())
    third = log(mlflow_target, toy_data, models["best"], registry)
    registry.promote(third, force=True)
    assert registry.champion_history() == [1, second, third]
    registry.client.delete_model_version(registry.name, str(second))
    assert registry.rollback().to_version == 1
    assert json.loads(registry.client.get_registered_model(registry.name).tags[HISTORY_TAG]) == [1]


def test_list_versions(mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry) -> None:
    log(mlflow_target, toy_data, models["good"], registry)
    registry.promote_if_better()
    log(mlflow_target, toy_data, models["bad"], registry)
    versions = registry.list_versions()
    assert [v.version for v in versions] == [1, 2]
    assert [v.aliases for v in versions] == [(CHAMPION_ALIAS,), (CHALLENGER_ALIAS,)]
    assert versions[0].is_champion and not versions[1].is_champion
    expected = toy_data.evaluator()(models["bad"], toy_data.test_rows)["pr_auc"]
    assert versions[1].primary_metric == "pr_auc"
    assert versions[1].primary_value == pytest.approx(expected)
    assert versions[1].run_id and versions[1].status == "READY"
    assert versions[0].created <= versions[1].created
    rows = registry.test_rows(2)
    pd.testing.assert_frame_equal(rows, toy_data.test_rows.reset_index(drop=True), check_dtype=False)


def test_clear_errors(mlflow_target: TrackingTarget, toy_data: ToyData, models, registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match=f"no registered model '{registry.name}'.*train one first"):
        registry.list_versions()
    with pytest.raises(RegistryError, match="no registered model"):
        registry.champion()
    log(mlflow_target, toy_data, models["good"], registry)
    with pytest.raises(RegistryError, match=r"has no version 7 \(versions: 1\)"):
        registry.promote(7)
    with pytest.raises(RegistryError, match="must be a number"):
        registry.get("latest")
    with pytest.raises(ValueError, match="min_relative"):
        PromotionConfig(min_relative=1.5)
    with pytest.raises(RegistryError, match="direction unknown"):
        registry.promote_if_better(primary_metric="accuracy")
    registry.promote_if_better()
    second = log(mlflow_target, toy_data, models["best"], registry)
    with pytest.raises(RegistryError, match="needs an evaluator"):
        registry.promote_if_better(second)
    assert aliases(registry) == {CHAMPION_ALIAS: 1, CHALLENGER_ALIAS: second}
    registry.client.delete_registered_model_alias(registry.name, CHALLENGER_ALIAS)
    with pytest.raises(RegistryError, match="no 'challenger' version"):
        registry.promote_if_better()
