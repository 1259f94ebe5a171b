"""The recommended modelling configs shipped next to the four public-data mappings.

The fast tests check each config loads through the same loader as ``leadscore train --config`` and that the
train flow's snapshot choice honours its snapshot range. The ``realdata`` tests train on the full imports of
the two history data sets, where the defaults cannot even split, with the shipped configs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from features import build, snapshots, validation
from features.contract import Contract
from features.history import ProspectHistory
from features.mapping import MappingError, builtin_mappings, import_export, recommended_config
from models.config import TrainConfig
from models.fit.split import InsufficientDataError
from models.fit.training import train_models
from pipelines.config import load_config
from pipelines.flows import choose_snapshots
from tests.features.test_adapters import shared_data_dir

HISTORY_SETS = ("olist_marketing_funnel", "maven_crm_sales_opportunities")


@pytest.mark.parametrize("name", sorted(builtin_mappings()))
def test_every_shipped_mapping_has_a_recommended_config_that_loads(name: str) -> None:
    path = recommended_config(name)
    assert path.name == f"{name}.config.yaml"
    assert path.parent == builtin_mappings()[name].parent
    cfg = load_config(path)
    mode = "history" if name in HISTORY_SETS else "single_snapshot"
    if mode == "history":
        # The reason these configs exist: the default 90-day horizon does not fit these exports.
        assert cfg.features.horizon_days == 30
        assert cfg.features.snapshot_start is not None
        # Stage buckets must fit the observed span (the defaults need 365 days after a snapshot).
        assert cfg.train.stage.label_window_days <= 90
    else:
        assert cfg.train.stage.enabled is False


def test_recommended_config_of_an_unknown_mapping_is_a_clear_error() -> None:
    with pytest.raises(MappingError, match=r"my_crm: not a shipped mapping \(\['maven_crm"):
        recommended_config("my_crm")


def test_the_olist_config_restricts_snapshots_to_the_recorded_months() -> None:
    cfg = load_config(recommended_config("olist_marketing_funnel")).features
    assert (cfg.snapshot_start, cfg.snapshot_end) == (dt.date(2018, 1, 1), dt.date(2018, 5, 31))


def test_the_train_flow_chooses_snapshots_in_the_configured_range() -> None:
    leads = pd.DataFrame({"lead_id": ["L0"], "created_at": pd.to_datetime(["2024-01-01"], utc=True)})
    activities = pd.DataFrame(
        {
            "lead_id": ["L0"],
            "occurred_at": pd.to_datetime(["2024-06-30"], utc=True),
            "activity_type": ["visit"],
        }
    )
    stages = pd.DataFrame(
        {
            "lead_id": pd.Series([], dtype="str"),
            "stage": pd.Series([], dtype="str"),
            "entered_at": pd.to_datetime([], utc=True),
        }
    )
    history = ProspectHistory(Contract(activity_types=["visit"]), leads, activities, stages)
    cfg = load_config(None).features.model_copy(
        update={"snapshot_start": dt.date(2024, 3, 1), "snapshot_end": dt.date(2024, 4, 1)}
    )
    got = choose_snapshots.fn(history, None, cfg)  # the task's plain function: no Prefect run needed
    lo, hi = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    assert list(got) == [d for d in snapshots.snapshot_dates(history, 7) if lo <= d <= hi]
    assert got[-1] == hi  # the end date is inclusive (Apr 1 is on this grid)
    explicit = choose_snapshots.fn(history, ["2024-05-05"], cfg)  # --as-of dates win over the range
    assert list(explicit) == [pd.Timestamp("2024-05-05", tz="UTC")]


def _history_features(name: str, tmp_path: Path, cfg) -> tuple[pd.DataFrame, object]:
    data = tmp_path / name
    import_export(name, shared_data_dir(name), data, now=pd.Timestamp("2025-01-01T00:00:00Z"))
    history = validation.load_history(data).history
    return build.build_features(history, snapshots.configured_snapshot_dates(history, cfg), cfg)


def _quiet(train: TrainConfig) -> TrainConfig:
    return train.model_copy(update={"evaluation": train.evaluation.model_copy(update={"plots": False})})


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("name", HISTORY_SETS)
def test_history_data_sets_train_with_their_recommended_config(name: str, tmp_path: Path) -> None:
    cfg = load_config(recommended_config(name))
    frame, spec = _history_features(name, tmp_path, cfg.features)
    start = pd.Timestamp(cfg.features.snapshot_start, tz="UTC")
    assert frame["as_of"].min() >= start
    result = train_models(frame, spec, _quiet(cfg.train))
    readiness = result.split.summary()["readiness"]
    assert readiness["test_strategy"] == "temporal"
    assert pd.Timestamp(readiness["train_as_of_range"][0]) >= start
    assert result.stage_model is not None
    assert 0.5 < result.readiness_metrics["leadscore"]["roc_auc"] <= 1.0
    # The defaults (90-day horizon) on the same snapshot range cannot split honestly: why the config exists.
    default_features = cfg.features.model_copy(update={"horizon_days": 90})
    frame90, spec90 = _history_features(name, tmp_path / "default", default_features)
    with pytest.raises(InsufficientDataError):
        train_models(frame90, spec90, _quiet(load_config(None).train))
