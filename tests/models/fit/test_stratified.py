"""Tests for models.fit.stratified: a fixed stratified split by lead for data without time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.contract import AttributeSpec, Contract, StageSpec
from features.history import ProspectHistory
from features.single_snapshot import build_single_snapshot_features
from features.validation import STR_DTYPE, TIMESTAMP_DTYPE
from models.config import SplitConfig
from models.fit.split import InsufficientDataError, Split
from models.fit.stratified import stratified_split
from tests.models.conftest import fast_config, make_feature_frame

AS_OF = pd.Timestamp("2020-01-01T00:00:00Z")


def snapshot_frame(n_pos: int = 300, n_neg: int = 700, n_open: int = 50, seed: int = 0) -> pd.DataFrame:
    """One row per lead like features.single_snapshot output: outcome leads never censored, open leads at 0."""
    rng = np.random.default_rng(seed)
    n = n_pos + n_neg + n_open
    converted = np.r_[np.ones(n_pos), np.zeros(n_neg + n_open)].astype(np.int8)
    order = rng.permutation(n)
    return pd.DataFrame(
        {
            "lead_id": pd.Series([f"L{i:05d}" for i in range(n)], dtype="str"),
            "as_of": pd.DatetimeIndex([AS_OF] * n),
            "x": rng.normal(size=n).astype(np.float32),
            "converted": converted[order],
            "days_to_conversion": np.full(n, np.nan),
            "observed_days": np.r_[np.full(n_pos + n_neg, np.inf), np.zeros(n_open)][order],
        }
    )


def leads_of(frame: pd.DataFrame) -> set[str]:
    return set(frame["lead_id"].astype(str))


def test_parts_are_disjoint_stratified_and_censored_rows_are_left_out() -> None:
    df = snapshot_frame()
    config = fast_config()
    split = stratified_split(df, config, horizon_days=90)
    assert isinstance(split, Split)
    r = split.readiness
    train, valid, test = leads_of(r.train), leads_of(r.valid), leads_of(r.test)
    assert not (train & valid or train & test or valid & test)
    usable = df[df["observed_days"] >= 90]
    assert train | valid | test == leads_of(usable)
    assert r.n_censored == 50
    # Per class: round(fraction * n) leads in test and valid, the rest in train.
    fractions = config.split
    for part, fraction in (("test", fractions.test_fraction), ("valid", fractions.valid_fraction)):
        frame = getattr(r, part)
        assert int(frame["converted"].sum()) == round(fraction * 300)
        assert int((frame["converted"] == 0).sum()) == round(fraction * 700)
    assert int(r.train["converted"].sum()) == 300 - round(fractions.test_fraction * 300) - round(
        fractions.valid_fraction * 300
    )
    assert (r.valid_strategy, r.test_strategy, r.gap_days) == ("stratified", "stratified", 0)
    assert split.stage is None and split.stage_labels == []
    assert "fixed stratified split by lead (seed 42)" in r.note
    summary = split.summary()
    assert summary["readiness"]["test_leads"] == len(test)
    assert split.boundaries["test_start"] == AS_OF


def test_the_split_is_fixed_by_the_seed() -> None:
    df = snapshot_frame()
    config = fast_config()
    first = stratified_split(df, config, horizon_days=90)
    again = stratified_split(df.sample(frac=1.0, random_state=3), config, horizon_days=90)
    assert leads_of(first.test) == leads_of(again.test)  # row order does not matter
    other = stratified_split(df, config, seed=7, horizon_days=90)
    assert leads_of(first.test) != leads_of(other.test)
    assert leads_of(stratified_split(df, config, seed=42, horizon_days=90).test) == leads_of(first.test)


def test_no_lead_is_in_two_parts_when_leads_have_many_rows() -> None:
    df, spec = make_feature_frame(n_leads=300, n_dates=10)
    split = stratified_split(df, fast_config(), horizon_days=spec.horizon_days)
    parts = [leads_of(split.train), leads_of(split.valid), leads_of(split.test)]
    assert sum(len(p) for p in parts) == len(set().union(*parts))
    assert (split.train["observed_days"] >= spec.horizon_days).all()


def test_a_bare_split_config_needs_a_seed() -> None:
    df = snapshot_frame()
    with pytest.raises(ValueError, match="give seed="):
        stratified_split(df, SplitConfig(), horizon_days=90)
    split = stratified_split(df, SplitConfig(test_fraction=0.3, valid_fraction=0.1), seed=1, horizon_days=90)
    assert int(split.test["converted"].sum()) == round(0.3 * 300)


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        (snapshot_frame(n_pos=0), "no converted lead"),
        (snapshot_frame(n_pos=3), "too few converted leads (3)"),
        (snapshot_frame(n_pos=0, n_neg=0), "no row has an observed label"),
    ],
)
def test_too_little_data_is_explained(frame: pd.DataFrame, fragment: str) -> None:
    with pytest.raises(InsufficientDataError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        stratified_split(frame, fast_config(), horizon_days=90)


def test_splits_the_single_snapshot_feature_table() -> None:
    n = 400
    rng = np.random.default_rng(5)
    ids = [f"P{i:04d}" for i in range(n)]
    outcome = rng.choice(np.array(["won", "lost", None], dtype=object), size=n, p=[0.35, 0.6, 0.05])
    has = outcome != None  # noqa: E711 - element-wise comparison
    contract = Contract(
        mode="single_snapshot",
        activity_types=[],
        attributes=[AttributeSpec(name="visits", kind="numeric")],
        stages=StageSpec(order=["open", "won", "lost"], converted="won", closed_negative=["lost"]),
    )
    created = pd.Series(pd.DatetimeIndex([AS_OF] * n), dtype=TIMESTAMP_DTYPE)
    history = ProspectHistory(
        contract,
        pd.DataFrame({"lead_id": pd.Series(ids, dtype=STR_DTYPE), "created_at": created, "visits": rng.random(n)}),
        pd.DataFrame({"lead_id": pd.Series([], dtype=STR_DTYPE), "occurred_at": created[:0]}),
        pd.DataFrame(
            {
                "lead_id": pd.Series(np.asarray(ids, dtype=object)[has], dtype=STR_DTYPE),
                "stage": pd.Series(outcome[has], dtype=STR_DTYPE),
                "entered_at": created[has].reset_index(drop=True),
            }
        ),
    )
    frame, spec = build_single_snapshot_features(history)
    config = fast_config()
    split = stratified_split(frame, config, horizon_days=spec.horizon_days)
    assert split.readiness.n_censored == int((~has).sum())
    labelled = leads_of(split.train) | leads_of(split.valid) | leads_of(split.test)
    assert labelled == set(np.asarray(ids, dtype=object)[has])
    n_won = int((outcome == "won").sum())
    assert int(split.test["converted"].sum()) == round(config.split.test_fraction * n_won)
