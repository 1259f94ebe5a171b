"""Reasons (exact TreeSHAP, plain language), needs and counterfactual next-best actions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from features.build import build_features
from features.history import ProspectHistory
from models.explain.reasons import STATE_FEATURES, CounterfactualAction, Explainer, activity_noun, feature_text
from tests.models.sim_scoring import SimulatedScoring, simulated_scoring

ACTIONS = [
    CounterfactualAction("invite_to_demo", "demo_request", "Invite the lead to a product demo"),
    CounterfactualAction("schedule_call", "sales_call", "Schedule a discovery call"),
    CounterfactualAction("email_follow_up", "email_click", "Follow up by email", count=2),
    CounterfactualAction("security_webinar", "webinar", "Invite to the security webinar", topic="security"),
]


@pytest.fixture(scope="module")
def sim() -> SimulatedScoring:
    return simulated_scoring()


@pytest.fixture(scope="module")
def as_of(sim: SimulatedScoring) -> pd.Timestamp:
    return (sim.data_end - pd.Timedelta(days=60)).floor("D")


@pytest.fixture(scope="module")
def frame(sim: SimulatedScoring, as_of: pd.Timestamp) -> pd.DataFrame:
    from features.config import FeatureConfig

    spec = sim.model.spec
    config = FeatureConfig(
        windows_days=spec.windows_days, trend_window_days=spec.trend_window_days, horizon_days=spec.horizon_days
    )
    features, _ = build_features(sim.history, [as_of], config)
    return features.reset_index(drop=True)


@pytest.fixture(scope="module")
def explainer(sim: SimulatedScoring) -> Explainer:
    return Explainer(sim.model, ACTIONS)


# -- texts -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("n_pricing_page_view_7d", 3.0, "3 pricing-page views in the last 7 days"),
        ("n_pricing_page_view_30d", 1.0, "1 pricing-page view in the last 30 days"),
        ("n_demo_request_90d", 0.0, "no demo requests in the last 90 days"),
        ("days_since_demo_request", 12.7, "last demo request 12 days ago"),
        ("days_since_demo_request", float("nan"), "no demo request yet"),
        ("days_since_activity", 0.2, "last activity today"),
        ("company_size", "11-50", "company size 11-50"),
        ("company_size", None, "company size unknown"),
        ("stage", "mql", "stage mql"),
        ("n_activities_30d", 1.0, "1 activity in the last 30 days"),
        ("n_activities_total", 54.0, "54 activities in total"),
        ("trend_30d", 0.4, "engagement rising over the last 30 days"),
        ("trend_30d", -0.4, "engagement falling over the last 30 days"),
        ("trend_30d", 0.0, "engagement steady over the last 30 days"),
        ("n_campaigns", 1.0, "1 different campaign"),
        ("top_topic", "security", "most interested in security"),
        ("top_topic", None, "no topic of interest yet"),
        ("annual_revenue_musd", 12.5, "annual revenue musd 12.5"),
        ("lead_age_days", 40.3, "lead created 40 days ago"),
    ],
)
def test_feature_text_by_family(name: str, value: object, expected: str) -> None:
    assert feature_text(name, value) == expected


def test_feature_text_uses_context() -> None:
    assert feature_text("days_in_stage", 12.0, stage="sql") == "12 days in stage sql"
    assert (
        feature_text("topic_share_security", 0.25, max_window=90)
        == "25% of topic-tagged activity in the last 90 days about security"
    )
    assert activity_noun("web_visit", plural=True) == "web visits"
    assert activity_noun("webinar", plural=False) == "webinar"


# -- reasons ---------------------------------------------------------------------------------------
def test_contributions_reproduce_the_raw_margin(sim: SimulatedScoring, frame: pd.DataFrame) -> None:
    Xe = sim.model.encode(frame)
    contrib = Explainer(sim.model).contributions(Xe)
    assert contrib.shape == (len(frame), len(sim.model.feature_names) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), sim.model.margin_from_encoded(Xe), rtol=0, atol=1e-9)


def test_reasons_are_the_strongest_signed_drivers_with_texts_of_the_lead_values(
    sim: SimulatedScoring, frame: pd.DataFrame, explainer: Explainer
) -> None:
    rows = frame.iloc[:200].reset_index(drop=True)
    Xe = sim.model.encode(rows)
    phi = explainer.contributions(Xe)[:, :-1]
    reasons = explainer.reasons_from_encoded(Xe)
    names = sim.model.feature_names
    categorical = set(sim.model.spec.categorical)
    drivers = [j for j, n in enumerate(names) if n not in STATE_FEATURES]
    for i, r in enumerate(reasons):
        pos, neg = r["positive"], r["negative"]
        assert len(pos) <= 5 and len(neg) <= 5
        assert all(d["contribution"] > 0 for d in pos) and all(d["contribution"] < 0 for d in neg)
        # exactly the top of the sorted contributions of the behaviour and fit drivers (no CRM state)
        d_phi = phi[i, drivers]
        expected_pos = [names[drivers[j]] for j in np.argsort(-d_phi, kind="stable")[:5] if d_phi[j] > 0]
        expected_neg = [names[drivers[j]] for j in np.argsort(d_phi, kind="stable")[:5] if d_phi[j] < 0]
        assert [d["feature"] for d in pos] == expected_pos
        assert [d["feature"] for d in neg] == expected_neg
        for d in pos + neg:
            assert d["contribution"] == pytest.approx(phi[i, names.index(d["feature"])])
            value = rows.loc[i, d["feature"]]
            if d["feature"] in categorical and not pd.isna(value) and d["feature"] not in ("stage", "top_topic"):
                assert str(value) in d["text"]  # the text names the lead's own category
            if d["feature"].startswith("n_") and d["feature"].endswith("d") and not pd.isna(value):
                count = round(float(value))
                assert d["text"].startswith("no " if count == 0 else f"{count} ")


def test_reason_counts_follow_the_explainer_settings(sim: SimulatedScoring, frame: pd.DataFrame) -> None:
    Xe = sim.model.encode(frame.iloc[:50])
    reasons = Explainer(sim.model, n_positive=2, n_negative=0).reasons_from_encoded(Xe)
    assert all(len(r["positive"]) <= 2 and r["negative"] == [] for r in reasons)
    assert any(len(r["positive"]) == 2 for r in reasons)


# -- needs -----------------------------------------------------------------------------------------
def test_needs_are_the_top_topics_by_share(sim: SimulatedScoring, frame: pd.DataFrame, explainer: Explainer) -> None:
    needs = explainer.needs_from_encoded(sim.model.encode(frame))
    share_cols = [c for c in frame.columns if c.startswith("topic_share_")]
    assert share_cols
    n_with = 0
    for i, topics in enumerate(needs):
        shares = frame.loc[i, share_cols].astype(float)
        positive = shares[shares > 0].sort_values(ascending=False, kind="stable")
        if positive.empty:
            assert topics == []
            continue
        n_with += 1
        assert len(topics) == min(3, len(positive))
        values = [float(shares[f"topic_share_{t}"]) for t in topics]
        assert values == sorted(values, reverse=True)
        assert values[0] == positive.iloc[0]
        if not pd.isna(frame.loc[i, "top_topic"]):
            assert frame.loc[i, "top_topic"] == topics[0] or values[0] == float(
                shares[f"topic_share_{frame.loc[i, 'top_topic']}"]
            )
    assert n_with > 0


# -- next-best action ------------------------------------------------------------------------------
def _with_activities(
    history: ProspectHistory, lead_ids: list[str], when: pd.Timestamp, activity_type: str, count: int
) -> ProspectHistory:
    acts = history.activities
    extra = pd.DataFrame(
        {
            "lead_id": pd.array(np.repeat(lead_ids, count), dtype=acts["lead_id"].dtype),
            "occurred_at": pd.Series([when] * (len(lead_ids) * count)).astype(acts["occurred_at"].dtype),
            "activity_type": pd.array([activity_type] * (len(lead_ids) * count), dtype=acts["activity_type"].dtype),
        }
    )
    for col in acts.columns:
        if col not in extra.columns:
            extra[col] = pd.Series([pd.NA if acts[col].dtype != "float64" else np.nan] * len(extra)).astype(
                acts[col].dtype
            )
    merged = pd.concat([acts, extra[acts.columns]], ignore_index=True)
    return ProspectHistory(history.contract, history.leads, merged, history.stage_history)


@pytest.mark.parametrize("action", [a for a in ACTIONS if a.topic is None], ids=lambda a: a.name)
def test_counterfactual_row_matches_rebuilding_features_with_the_activities_added(
    sim: SimulatedScoring, frame: pd.DataFrame, as_of: pd.Timestamp, explainer: Explainer, action: CounterfactualAction
) -> None:
    from features.config import FeatureConfig

    sample = frame.iloc[::40].reset_index(drop=True)
    leads = sample["lead_id"].astype(str).tolist()
    Xe = sim.model.encode(sample)
    k = explainer.actions.index(action)
    cf = explainer.counterfactual_matrix(Xe).reshape(len(sample), len(explainer.actions), -1)[:, k, :]

    # The same activities really happening one second before as_of, through the feature builder.
    spec = sim.model.spec
    config = FeatureConfig(
        windows_days=spec.windows_days, trend_window_days=spec.trend_window_days, horizon_days=spec.horizon_days
    )
    changed = _with_activities(sim.history, leads, as_of - pd.Timedelta(seconds=1), action.activity_type, action.count)
    rebuilt, _ = build_features(changed, [as_of], config)
    rebuilt = rebuilt.set_index("lead_id").loc[leads].reset_index()
    expected = sim.model.encode(rebuilt)

    names = sim.model.feature_names
    t = action.activity_type
    for j, name in enumerate(names):
        if name in (f"days_since_{t}", "days_since_activity"):
            np.testing.assert_allclose(cf[:, j], 0.0)
            np.testing.assert_allclose(expected[:, j], 0.0, atol=2 / 86_400)  # one second, as float32 days
        elif name.startswith(("n_", "trend_")) or name == "n_activities_total":
            np.testing.assert_allclose(cf[:, j], expected[:, j], rtol=1e-5, atol=1e-5, err_msg=name)
        elif name in ("value_sum_90d", "n_channels", "n_campaigns", "n_topics") or name.startswith("topic_share_"):
            continue  # the added activities carry no value, channel, campaign or topic: unchanged either way
        else:
            np.testing.assert_array_equal(cf[:, j], Xe[:, j], err_msg=name)


def test_topic_action_moves_interest_towards_its_topic(
    sim: SimulatedScoring, frame: pd.DataFrame, explainer: Explainer
) -> None:
    Xe = sim.model.encode(frame)
    k = [a.name for a in explainer.actions].index("security_webinar")
    cf = explainer.counterfactual_matrix(Xe).reshape(len(frame), len(explainer.actions), -1)[:, k, :]
    names = sim.model.feature_names
    share = names.index("topic_share_security")
    shares = [names.index(n) for n in names if n.startswith("topic_share_")]
    before = np.nan_to_num(Xe[:, share])
    assert (cf[:, share] >= before - 1e-12).all()
    assert (cf[:, share] > before).any()
    np.testing.assert_allclose(cf[:, shares].sum(axis=1), 1.0)  # still shares
    # no topic activity before -> the new activity is all the interest, and the top topic
    none_before = np.isnan(Xe[:, shares]).all(axis=1)
    assert none_before.any()
    np.testing.assert_allclose(cf[none_before, share], 1.0)
    top = names.index("top_topic")
    security_code = sim.model.encoder.category_codes_["top_topic"]["security"]
    np.testing.assert_array_equal(cf[none_before, top], security_code)


def test_counterfactual_what_if_is_the_largest_gain_from_one_stacked_prediction(
    sim: SimulatedScoring, frame: pd.DataFrame, explainer: Explainer
) -> None:
    Xe = sim.model.encode(frame.iloc[:300])
    gains = explainer.readiness_gains(Xe)
    base = sim.model.calibration(sim.model.margin_from_encoded(Xe))
    cf = explainer.counterfactual_matrix(Xe).reshape(len(Xe), len(ACTIONS), -1)
    for a in range(len(ACTIONS)):  # the stacked call equals predicting each action on its own
        alone = sim.model.calibration(sim.model.margin_from_encoded(cf[:, a, :]))
        np.testing.assert_allclose(gains[:, a], alone - base, rtol=1e-12, atol=1e-12)
    best = explainer.counterfactual_actions_from_encoded(Xe)
    suggested = 0
    for i, nba in enumerate(best):
        top = int(np.argmax(gains[i]))
        if gains[i, top] <= 0:
            assert nba is None
            continue
        suggested += 1
        assert nba is not None
        assert nba["action"] == ACTIONS[top].name and nba["label"] == ACTIONS[top].label
        assert math.isclose(nba["readiness_gain"], gains[i, top])
    assert suggested > 0


def test_actions_must_fit_the_model(sim: SimulatedScoring) -> None:
    with pytest.raises(ValueError, match="no features for activity type 'carrier_pigeon'"):
        Explainer(sim.model, [CounterfactualAction("pigeon", "carrier_pigeon", "Send a pigeon")])
    with pytest.raises(ValueError, match="topic_share_gardening"):
        Explainer(sim.model, [CounterfactualAction("garden", "webinar", "Gardening webinar", topic="gardening")])
    with pytest.raises(ValueError, match="count must be >= 1"):
        CounterfactualAction("none", "webinar", "Nothing", count=0)


def test_crm_state_is_context_and_everything_sums_to_the_log_odds(
    sim: SimulatedScoring, frame: pd.DataFrame, explainer: Explainer
) -> None:
    Xe = sim.model.encode(frame.iloc[:300])
    reasons = explainer.reasons_from_encoded(Xe)
    margin = sim.model.margin_from_encoded(Xe)
    stage_col = sim.model.feature_names.index("stage")
    for i, r in enumerate(reasons):
        assert not {d["feature"] for d in r["positive"] + r["negative"]} & set(STATE_FEATURES)
        assert [d["feature"] for d in r["context"]] == [n for n in sim.model.feature_names if n in STATE_FEATURES]
        stage = explainer.value_of(Xe, i, stage_col)
        assert r["context"][0]["text"] == f"stage {stage}"
        total = sum(d["contribution"] for d in r["positive"] + r["negative"] + r["context"]) + r["rest"]
        assert total == pytest.approx(float(margin[i]), abs=1e-9)
    # the stage is a real driver of the model: moving it out of the reasons changes them for someone
    assert any(abs(r["context"][0]["contribution"]) > 0.05 for r in reasons)


def _effects_table(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "kind": "action",
                "action": a,
                "activity_type": t,
                "segment": g,
                "estimate": e,
                "ci_low": lo,
                "ci_high": hi,
            }
            for (t, g, e, lo, hi), a in zip(rows, [f"a{i}" for i in range(len(rows))], strict=True)
        ]
    )


def test_next_best_action_is_the_largest_estimated_effect_with_evidence_for_the_stage(
    sim: SimulatedScoring, frame: pd.DataFrame
) -> None:
    import copy

    model = copy.copy(sim.model)
    model.effects = _effects_table(
        [
            ("webinar", "new", 0.03, 0.01, 0.05),
            ("email_click", "new", 0.05, -0.01, 0.11),  # larger, but its interval includes 0
            ("demo_request", "new", 0.02, 0.005, 0.035),
            ("webinar", "mql", 0.01, -0.02, 0.04),
            ("sales_call", "mql", 0.04, 0.02, 0.06),
        ]
    )
    Xe = model.encode(frame.iloc[:400])
    best = Explainer(model, ACTIONS).next_best_actions_from_encoded(Xe)
    stage_col = model.feature_names.index("stage")
    seen = set()
    for i, nba in enumerate(best):
        stage = Explainer(model).value_of(Xe, i, stage_col)
        seen.add(stage)
        assert nba is not None and nba["estimated"] is True and nba["segment"] == stage
        if stage == "new":
            assert nba["action"] == "security_webinar" and nba["readiness_gain"] == 0.03 and nba["ci_low"] == 0.01
            assert "estimated" in nba["label"]
        elif stage == "mql":
            assert nba["action"] == "schedule_call"
        else:
            assert nba["action"] is None and nba["label"] == "no action with evidence of effect"
    assert {"new", "mql"} <= seen


def test_a_model_without_effect_estimates_recommends_nothing(sim: SimulatedScoring, frame: pd.DataFrame) -> None:
    Xe = sim.model.encode(frame.iloc[:50])
    assert sim.model.effects is None
    for nba in Explainer(sim.model, ACTIONS).next_best_actions_from_encoded(Xe):
        assert nba is not None and nba["action"] is None and nba["label"] == "no action with evidence of effect"
