from __future__ import annotations

from pathlib import Path

import pytest

from models.config import TrainConfig, TrainConfigError, load_train_config, parse_train_config


def test_shipped_defaults_equal_model_defaults() -> None:
    # The YAML and the pydantic defaults must not drift apart.
    assert load_train_config() == TrainConfig()


def test_user_file_overrides_only_what_it_sets(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("readiness:\n  params:\n    num_leaves: 7\nmin_class_count: 10\n")
    config = load_train_config(path)
    assert config.readiness.params.num_leaves == 7
    assert config.readiness.params.learning_rate == TrainConfig().readiness.params.learning_rate
    assert config.min_class_count == 10
    assert config.stage.labels == ["decision", "consideration", "awareness", "not_in_market"]


def test_combined_modelling_config_uses_train_section(tmp_path: Path) -> None:
    path = tmp_path / "modelling.yaml"
    path.write_text("features:\n  horizon_days: 60\ntrain:\n  seed: 7\n")
    assert load_train_config(path).seed == 7


def test_unknown_field_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("readiness:\n  params:\n    num_leavs: 7\n")
    with pytest.raises(TrainConfigError) as err:
        load_train_config(path)
    assert str(path) in str(err.value)
    assert "readiness.params.num_leavs" in str(err.value)


def test_invalid_value_names_field() -> None:
    with pytest.raises(TrainConfigError, match=r"readiness\.params\.learning_rate"):
        parse_train_config({"readiness": {"params": {"learning_rate": 0}}})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="not found"):
        load_train_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("readiness: [unclosed\n")
    with pytest.raises(TrainConfigError, match="not valid YAML"):
        load_train_config(bad)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([{"name": "a", "max_days": 30}, {"name": "b", "max_days": 20}, {"name": "c"}], "increase strictly"),
        ([{"name": "a", "max_days": 30}, {"name": "b", "max_days": 60}], "open-ended"),
        ([{"name": "a", "max_days": 30}, {"name": "a"}], "unique"),
        ([{"name": "a"}, {"name": "b", "max_days": 30}, {"name": "c"}], "only the last"),
    ],
)
def test_bucket_rules(buckets: list[dict], message: str) -> None:
    with pytest.raises(TrainConfigError, match=message):
        parse_train_config({"stage": {"buckets": buckets}})


def test_version_primary_metric_and_grades_are_checked() -> None:
    with pytest.raises(TrainConfigError, match="version 2 is not supported"):
        parse_train_config({"version": 2})
    with pytest.raises(TrainConfigError, match="unknown metric"):
        parse_train_config({"primary_metric": "accuracy"})
    with pytest.raises(TrainConfigError, match="increase from A to C"):
        parse_train_config({"grades": {"top_fractions": {"A": 0.5, "B": 0.3, "C": 0.6}}})
    with pytest.raises(TrainConfigError, match="needs cutoffs"):
        parse_train_config({"grades": {"mode": "probability"}})


def test_reserved_lightgbm_keys_cannot_be_overridden() -> None:
    with pytest.raises(TrainConfigError, match="objective"):
        parse_train_config({"readiness": {"params": {"extra": {"objective": "regression"}}}})
    config = parse_train_config({"readiness": {"params": {"extra": {"scale_pos_weight": 3.0}}}})
    assert config.readiness.params.to_lightgbm(seed=1)["scale_pos_weight"] == 3.0


def test_direction_of_primary_metric() -> None:
    assert parse_train_config({"primary_metric": "pr_auc"}).higher_is_better
    assert not parse_train_config({"primary_metric": "log_loss"}).higher_is_better


def test_stage_label_window() -> None:
    assert TrainConfig().stage.label_window_days == 365
    recorded = parse_train_config({"stage": {"use_recorded_stage_column": "crm_stage"}})
    assert recorded.stage.label_window_days == 0
