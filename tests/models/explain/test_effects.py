"""Effect estimates: the AIPW arithmetic on known data, I/O, and agreement with the simulator's truth."""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.history import ProspectHistory
from models.explain.effects import (
    EVIDENCE_EFFECT,
    NO_EVIDENCE_LABEL,
    TABLE_COLUMNS,
    ActionEffects,
    ActionSpec,
    EffectEstimator,
    _att,
    _naive,
    compare_with_truth,
    read_effects,
    write_effects,
)

# -- the estimator's arithmetic --------------------------------------------------------------------


def _confounded(n: int, effect: float, seed: int) -> tuple[np.ndarray, ...]:
    """Exposure more likely for leads that convert more anyway (x), and a known effect on the exposed."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    e = 1 / (1 + np.exp(-(x - 1.5)))
    T = (rng.random(n) < e).astype(float)
    m0 = 0.05 + 0.15 / (1 + np.exp(-2 * x))
    Y = (rng.random(n) < m0 + effect * T).astype(float)
    return T, Y, e, m0


def test_att_recovers_a_known_effect_where_the_naive_contrast_is_biased() -> None:
    T, Y, e, m0 = _confounded(60_000, 0.04, seed=1)
    lead = np.arange(len(T))
    _, se, lo, hi = _att(T, Y, np.ones(len(T)), e, m0, lead, 1.96)
    _, nlo, _ = _naive(T, Y, np.ones(len(T)), lead, 1.96)
    assert lo <= 0.04 <= hi and se < 0.006
    assert nlo > 0.04 + 0.03  # the touched convert more anyway
    # with no effect the interval covers 0, the naive one does not
    T, Y, e, m0 = _confounded(60_000, 0.0, seed=2)
    _, se, lo, hi = _att(T, Y, np.ones(len(T)), e, m0, lead, 1.96)
    assert lo <= 0.0 <= hi
    assert _naive(T, Y, np.ones(len(T)), lead, 1.96)[1] > 0


def test_repeated_units_of_a_lead_widen_the_interval() -> None:
    T, Y, e, m0 = _confounded(20_000, 0.0, seed=3)
    once = _att(T, Y, np.ones(len(T)), e, m0, np.arange(len(T)), 1.96)[1]
    # every unit duplicated: the same leads twice is not twice the evidence
    twice = _att(
        np.tile(T, 2),
        np.tile(Y, 2),
        np.ones(2 * len(T)),
        np.tile(e, 2),
        np.tile(m0, 2),
        np.tile(np.arange(len(T)), 2),
        1.96,
    )[1]
    assert twice == pytest.approx(once, rel=1e-9)


def test_effect_table_round_trips_as_csv_and_parquet_and_refuses_other_suffixes(tmp_path: Path) -> None:
    table = pd.DataFrame(
        [
            {**dict.fromkeys(TABLE_COLUMNS, 0.0), "kind": "campaign", "campaign_id": "CMP001", "action": "webinar"},
            {**dict.fromkeys(TABLE_COLUMNS, 0.0), "kind": "action", "campaign_id": "", "action": "invite"},
        ]
    ).assign(segment="all", evidence="no evidence of effect")
    for name in ("e.csv", "e.parquet"):
        back = read_effects(write_effects(table, tmp_path / name))
        assert list(back["campaign_id"]) == ["CMP001", ""]
        assert list(back.columns) == list(table.columns)
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        write_effects(table, tmp_path / "e.xlsx")
    with pytest.raises(FileNotFoundError, match="no effect table"):
        read_effects(tmp_path / "missing.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_effects(tmp_path / "bad.csv")


def test_action_effects_recommend_only_with_evidence() -> None:
    table = pd.DataFrame(
        [
            {
                "kind": "action",
                "action": "w",
                "activity_type": "webinar",
                "segment": "new",
                "estimate": 0.02,
                "ci_low": 0.01,
                "ci_high": 0.03,
            },
            {
                "kind": "action",
                "action": "e",
                "activity_type": "email_click",
                "segment": "new",
                "estimate": 0.09,
                "ci_low": -0.01,
                "ci_high": 0.19,
            },
            {
                "kind": "action",
                "action": "w",
                "activity_type": "webinar",
                "segment": "all",
                "estimate": 0.5,
                "ci_low": 0.4,
                "ci_high": 0.6,
            },
        ]
    )
    effects = ActionEffects(table)
    candidates = [("invite", "Invite to a webinar", "webinar"), ("mail", "Mail", "email_click")]
    rec = effects.recommend("new", candidates)
    assert rec["action"] == "invite" and rec["readiness_gain"] == 0.02 and rec["estimated"]
    # the overall row never counts for a stage; a stage without rows gets nothing
    assert effects.recommend("mql", candidates)["label"] == NO_EVIDENCE_LABEL
    assert effects.recommend("new", candidates[1:])["action"] is None


def test_estimator_refuses_bad_settings() -> None:
    for kwargs, match in (({"alpha": 1.5}, "alpha"), ({"trim": 0.3}, "trim"), ({"n_folds": 1}, "n_folds")):
        with pytest.raises(ValueError, match=match):
            EffectEstimator(**kwargs).fit(None)  # type: ignore[arg-type]  # checked before the data is read


# -- against the simulator's truth -----------------------------------------------------------------
# A smaller world than the benchmark's that still separates: 20,000 leads, 12 campaigns with their
# effects x2, seed 301 (not the development seed 101 nor the benchmark's validation seeds 201-203).
# The benchmark's targets (Spearman >= 0.6, <= 2 of 24 placebo flags) are checked at full size there;
# here the estimator must beat the naive contrast.
N_LEADS, N_CAMPAIGNS, SEED, SCALE = 20_000, 12, 301, 2.0
ACTIONS = [
    ActionSpec("invite_to_webinar", "webinar"),
    ActionSpec("invite_to_event", "event_attendance"),
    ActionSpec("email_follow_up", "email_click"),
    ActionSpec("send_case_study", "content_download"),
    ActionSpec("invite_to_demo", "demo_request"),
]


class _World:
    def __init__(self, data: Path, history: ProspectHistory, table: pd.DataFrame) -> None:
        self.data, self.history, self.table = data, history, table
        self.truth = pd.read_parquet(data / "ground_truth" / "campaigns.parquet")


@functools.cache
def _world(scale: float) -> _World:
    from features.simulator import generate
    from features.simulator.config import SimulatorConfig
    from features.validation import load_history

    data = Path(tempfile.mkdtemp(prefix="leadscore-effects-")) / f"scale{scale}"
    generate(N_LEADS, SEED, data, config=SimulatorConfig(n_campaigns=N_CAMPAIGNS, campaign_effect_scale=scale))
    history = load_history(data).history
    table = EffectEstimator(ACTIONS, max_controls=6_000).fit(history).table_
    return _World(data, history, table)


@pytest.mark.slow
def test_placebo_world_flags_at_most_one_campaign_while_the_naive_contrast_flags_more() -> None:
    world = _world(0.0)
    assert (world.truth["true_effect"] == 0).all()
    stats = compare_with_truth(world.table, world.truth)
    assert stats["n_estimated"] >= 6
    assert stats["n_flagged"] <= 1
    assert stats["naive_flagged"] > stats["n_flagged"]


@pytest.mark.slow
def test_default_world_estimates_rank_campaigns_better_than_the_naive_contrast() -> None:
    world = _world(SCALE)
    stats = compare_with_truth(world.table, world.truth)
    assert stats["n_estimated"] >= 6
    assert stats["spearman"] > stats["naive_spearman"] + 0.05
    assert stats["zero_covered"] >= 0.8
    assert stats["n_flagged"] < stats["naive_flagged"]
    rows = world.table[world.table["segment"] == "all"]
    assert list(rows.columns) == TABLE_COLUMNS
    assert (rows.loc[rows["kind"] == "action", "campaign_id"] == "").all()
    # lead-initiated activity is no action the company can trigger: no estimate
    demo = rows[rows["action"] == "invite_to_demo"].iloc[0]
    assert demo["evidence"] == "not estimable" and demo["n_exposed"] == 0


def _recommendations(world: _World) -> pd.DataFrame:
    """Recommendations for the open leads at a late grid week, with the simulator's truth for each."""
    effects = ActionEffects(world.table)
    candidates = [(a.name, a.name, a.activity_type) for a in ACTIONS]
    from features.snapshots import snapshot_dates

    as_of = snapshot_dates(world.history, 7)[-20]
    frame, _ = build_features(world.history, [as_of], FeatureConfig())
    recs = [effects.recommend(str(s), candidates) for s in frame["stage"].astype("string")]
    out = frame[["lead_id"]].assign(action=[r["action"] for r in recs], as_of=as_of)
    kind_of = {a.name: a.activity_type for a in ACTIONS}
    out["activity_type"] = out["action"].map(kind_of)
    # true effect of an action type: the touch-weighted true effect of the campaigns that deliver it,
    # and only for leads a campaign can move (dormant, researching or evaluating at as_of)
    truth = world.truth
    by_type = (truth["true_effect"] * truth["n_touches"]).groupby(truth["activity_type"]).sum() / truth.groupby(
        "activity_type"
    )["n_touches"].sum()
    phases = pd.read_parquet(
        world.data / "ground_truth" / "propensity.parquet", columns=["lead_id", "week_start", "phase"]
    )
    phases = phases[phases["week_start"] == as_of][["lead_id", "phase"]]
    out = out.merge(phases, on="lead_id", how="left")
    movable = out["phase"].isin(["dormant", "research", "evaluation"])
    out["true_effect"] = out["activity_type"].map(by_type).fillna(0.0).where(movable, 0.0)
    return out


@pytest.mark.slow
def test_placebo_world_recommends_no_action_to_anyone() -> None:
    recs = _recommendations(_world(0.0))
    assert len(recs) > 1_000
    assert recs["action"].isna().all()


@pytest.mark.slow
def test_default_world_recommended_actions_mostly_have_a_true_effect() -> None:
    recs = _recommendations(_world(SCALE))
    recommended = recs[recs["action"].notna()]
    assert len(recommended) >= 50
    share = float((recommended["true_effect"] > 0).mean())
    assert share >= 0.8, f"{share:.0%} of {len(recommended)} recommendations have a true effect"
    assert not math.isnan(share)


@pytest.mark.slow
def test_effect_rows_flag_evidence_only_when_the_interval_excludes_zero() -> None:
    table = _world(SCALE).table
    est = table[table["estimate"].notna()]
    flagged = est["evidence"] == EVIDENCE_EFFECT
    excludes = (est["ci_low"] > 0) | (est["ci_high"] < 0)
    assert (flagged == excludes).all()
    assert ((est["ci_low"] <= est["estimate"]) & (est["estimate"] <= est["ci_high"])).all()
