"""prepare_training on a single-snapshot table: stratified split, no stage model, and the leakage probe."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.single_snapshot import OPEN_OBSERVED_DAYS, OUTCOME_OBSERVED_DAYS, SINGLE_SNAPSHOT
from features.spec import FeatureSpec
from models.fit.stratified import STRATIFIED
from models.fit.training import prepare_training
from models.judge.leakage import LeakageError
from tests.models.conftest import fast_config

AS_OF = pd.Timestamp("2021-03-01T00:00:00Z")


def single_snapshot_table(
    n_leads: int = 1500, n_open: int = 60, seed: int = 0, leaky: bool = False
) -> tuple[pd.DataFrame, FeatureSpec]:
    """One row per lead, shaped like features.single_snapshot output, with genuine (imperfect) signal."""
    rng = np.random.default_rng(seed)
    n = n_leads + n_open
    intent = rng.normal(size=n)
    source = rng.choice(np.array(["web", "event", "referral"], dtype=object), size=n)
    p = 1 / (1 + np.exp(-(-1.0 + 1.2 * intent + np.where(source == "referral", 0.6, 0.0))))
    converted = (rng.random(n) < p).astype(np.int8)
    open_lead = np.zeros(n, dtype=bool)
    open_lead[rng.choice(n, size=n_open, replace=False)] = True
    converted[open_lead] = 0  # no known outcome: censored, never trained on
    frame = pd.DataFrame(
        {
            "lead_id": pd.Series([f"X{i:05d}" for i in range(n)], dtype="str"),
            "as_of": pd.DatetimeIndex([AS_OF] * n) + pd.to_timedelta(rng.integers(0, 300, n), unit="D"),
            "lead_source": pd.Series(source, dtype="str"),
            "total_visits": rng.poisson(np.exp(0.8 + 0.5 * intent)).astype(np.float32),
            "time_on_site": (rng.exponential(300, n) * np.exp(0.4 * intent)).astype(np.float32),
            "noise": rng.normal(size=n).astype(np.float32),
        }
    )
    numeric = ["total_visits", "time_on_site", "noise"]
    if leaky:
        # A post-outcome field: the deal value, near zero unless the lead converted.
        frame["deal_value"] = (converted * 5000.0 + rng.normal(0, 50, n)).astype(np.float32)
        numeric.append("deal_value")
    frame["converted"] = converted
    frame["days_to_conversion"] = np.full(n, np.nan)
    frame["observed_days"] = np.where(open_lead, OPEN_OBSERVED_DAYS, OUTCOME_OBSERVED_DAYS)
    spec = FeatureSpec(categorical=["lead_source"], numeric=numeric, horizon_days=90, mode=SINGLE_SNAPSHOT)
    return frame, spec


def test_single_snapshot_tables_get_a_stratified_split_and_no_stage_model() -> None:
    df, spec = single_snapshot_table()
    prep = prepare_training(df, spec, fast_config())
    r = prep.split.readiness
    assert (r.valid_strategy, r.test_strategy) == (STRATIFIED, STRATIFIED)
    assert prep.split.stage is None
    parts = [set(part["lead_id"]) for part in (r.train, r.valid, r.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    usable = df[np.isinf(df["observed_days"])]
    assert set.union(*parts) == set(usable["lead_id"])  # the open leads are left out, all others used
    assert r.n_censored == 60
    # Stratified: every part has the converted share of the usable leads (up to rounding of each class).
    share = usable["converted"].mean()
    for part in (r.train, r.valid, r.test):
        assert part["converted"].mean() == pytest.approx(share, abs=0.01)
    assert any(note.startswith("fixed stratified split by lead (seed 42)") for note in prep.notes)
    assert any("no stage model" in note for note in prep.notes)
    # The probe ran on the training rows only and found nothing on honest features.
    assert prep.leakage is not None and prep.leakage.ok
    assert prep.leakage.n_rows == len(r.train)
    assert {f.feature for f in prep.leakage.features} == set(spec.features)


def test_the_history_path_keeps_the_temporal_split(feature_frame) -> None:
    df, spec = feature_frame
    prep = prepare_training(df, spec, fast_config())
    assert prep.split.readiness.test_strategy != STRATIFIED
    assert prep.split.readiness.train["as_of"].max() < prep.split.readiness.test["as_of"].min()
    assert prep.leakage is not None and prep.leakage.ok


def test_a_planted_leaky_feature_stops_training_unless_acknowledged() -> None:
    df, spec = single_snapshot_table(leaky=True)
    with pytest.raises(LeakageError) as info:
        prepare_training(df, spec, fast_config())
    message = str(info.value)
    assert "  - deal_value: ROC AUC" in message
    assert "acknowledge: [deal_value]" in message
    for honest in ("total_visits", "time_on_site", "noise", "lead_source"):
        assert honest not in message
    assert [f.feature for f in info.value.report.flagged] == ["deal_value"]

    prep = prepare_training(df, spec, fast_config(leakage={"acknowledge": ["deal_value"]}))
    assert prep.leakage is not None and [f.feature for f in prep.leakage.acknowledged] == ["deal_value"]
    assert any("'deal_value' acknowledged in train.leakage.acknowledge" in note for note in prep.notes)

    # The probe can be switched off (leakage.enabled: false).
    disabled = prepare_training(df, spec, fast_config(leakage={"enabled": False}))
    assert disabled.leakage is None
    assert not any("deal_value" in note for note in disabled.notes)


def test_acknowledging_a_name_that_is_not_a_feature_is_an_error() -> None:
    df, spec = single_snapshot_table()
    with pytest.raises(ValueError, match=r"train\.leakage\.acknowledge names \['deal_valu'\]"):
        prepare_training(df, spec, fast_config(leakage={"acknowledge": ["deal_valu"]}))
