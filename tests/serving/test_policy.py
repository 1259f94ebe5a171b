from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from features.contract import Contract
from serving.policy import (
    GRADES,
    HandoffPolicy,
    PolicyError,
    assign_grades,
    decide_handoff,
    load_policy,
    parse_policy,
    trend,
    trends,
    week_start,
)

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)  # a Friday


def _policy_dict(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "version": 1,
        "policy_version": "test-1",
        "horizon_days": 90,
        "grading": {"mode": "probability", "cutoffs": {"A": 0.5, "B": 0.25, "C": 0.1}},
        "min_grade_for_handoff": "B",
        "cooldown_days": 14,
        "next_best_actions": [
            {"name": "invite_to_demo", "activity_type": "demo_request", "count": 1, "label": "Invite to a demo"},
        ],
    }
    base.update(overrides)
    return base


def _policy(**overrides: Any) -> HandoffPolicy:
    return HandoffPolicy.model_validate(_policy_dict(**overrides))


def _capacity(k: int, min_readiness: float = 0.0, **overrides: Any) -> HandoffPolicy:
    grading = {"mode": "capacity", "capacity": {"leads_per_week": k, "min_readiness": min_readiness}}
    return _policy(grading=grading, **overrides)


# -- loading ---------------------------------------------------------------------------------------
def test_packaged_default_loads_and_is_complete() -> None:
    policy = load_policy(None)
    assert policy.version == 1
    assert policy.policy_version
    assert policy.mode == "model"  # grades follow the served model's own cut-offs by default
    assert policy.reasons.positive == 5
    assert policy.reasons.negative == 5
    assert len(policy.next_best_actions) >= 3
    assert all(a.label for a in policy.next_best_actions)


def test_file_roundtrip_in_capacity_mode(tmp_path: Path) -> None:
    raw = _policy_dict(grading={"mode": "capacity", "capacity": {"leads_per_week": 40}}, cooldown_days=30)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(raw))
    policy = load_policy(path)
    assert policy.mode == "capacity"
    assert policy.grading.capacity.leads_per_week == 40  # type: ignore[union-attr]
    assert policy.grading.capacity.min_readiness == 0.0  # type: ignore[union-attr]
    assert policy.cooldown_days == 30
    assert policy.trend.improving_delta == 5.0


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (
            {"grading": {"mode": "probability", "cutoffs": {"A": 0.2, "B": 0.3, "C": 0.1}}},
            "grading.probability.cutoffs",
        ),
        ({"grading": {"mode": "probability", "cutoffs": {"A": 1.5, "B": 0.3, "C": 0.1}}}, "cutoffs.A"),
        ({"grading": {"mode": "capacity", "capacity": {"leads_per_week": 0}}}, "capacity.leads_per_week"),
        ({"grading": {"mode": "lottery"}}, "grading"),
        ({"grading": {"mode": "model", "cutoffs": {"A": 0.5, "B": 0.3, "C": 0.1}}}, "grading.model.cutoffs"),
        (
            {"grading": {"mode": "probability", "cutoffs": {"A": 0.5, "B": 0.3, "C": 0.1}, "K": 3}},
            "grading.probability.K",
        ),
        ({"min_grade_for_handoff": "E"}, "min_grade_for_handoff"),
        ({"cooldown_days": -1}, "cooldown_days"),
        ({"horizon_days": 0}, "horizon_days"),
        ({"policy_version": ""}, "policy_version"),
        ({"policy_version": "has space"}, "policy_version"),
        ({"trend": {"improving_delta": 0}}, "trend.improving_delta"),
        ({"reasons": {"positive": 50}}, "reasons.positive"),
        (
            {"next_best_actions": [{"name": "x", "activity_type": "web visit", "label": "l"}]},
            "next_best_actions.0.activity_type",
        ),
        (
            {"next_best_actions": [{"name": "x", "activity_type": "a", "label": "l", "count": 0}]},
            "next_best_actions.0.count",
        ),
        ({"next_best_actions": [{"name": "x", "activity_type": "a"}]}, "next_best_actions.0.label"),
        (
            {"next_best_actions": [{"name": "x", "activity_type": "a", "label": "l"}] * 2},
            "duplicate action names: ['x']",
        ),
        ({"version": 2}, "version"),
        ({"cooldown": 7}, "cooldown"),
    ],
)
def test_invalid_policy_names_file_and_field(tmp_path: Path, change: dict[str, Any], fragment: str) -> None:
    path = tmp_path / "handoff.yaml"
    path.write_text(yaml.safe_dump(_policy_dict(**change)))
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid handoff policy")
    assert fragment in message


def test_missing_required_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\n")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    for name in ("policy_version", "grading"):
        assert f"  - {name}: Field required" in str(info.value)
    # horizon_days is optional: left out, the policy follows the served model's horizon
    assert "horizon_days" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragment"), [("- a\n- b\n", "expected a mapping"), ("grading: [\n", "not valid YAML")]
)
def test_unreadable_policy(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        parse_policy(text, source="inline.yaml")


def test_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "nope.yaml")


def test_policy_checked_against_contract_and_model() -> None:
    policy = _policy(
        next_best_actions=[
            {"name": "a", "activity_type": "demo_request", "label": "Demo"},
            {"name": "b", "activity_type": "fax", "label": "Fax them"},
            {"name": "c", "activity_type": "demo_request", "topic": "astrology", "label": "Stars"},
        ]
    )
    contract = Contract(activity_types=["demo_request", "email_open"], topics=["pricing"])
    with pytest.raises(PolicyError) as info:
        policy.check_against_contract(contract, source="p.yaml")
    message = str(info.value)
    assert "next_best_actions.1.activity_type: 'fax'" in message
    assert "next_best_actions.2.topic: 'astrology'" in message
    assert "next_best_actions.0" not in message
    policy.check_horizon(90)
    with pytest.raises(PolicyError, match="horizon_days is 90 but the model predicts conversion within 60 days"):
        policy.check_horizon(60)


# -- grades ----------------------------------------------------------------------------------------
def test_probability_grades_at_the_cutoffs() -> None:
    policy = _policy()
    readiness = [0.5, np.nextafter(0.5, 0), 0.25, 0.2499, 0.1, 0.0999, 0.0, 1.0]
    assert assign_grades(readiness, policy).tolist() == ["A", "B", "B", "C", "C", "D", "D", "A"]


def test_capacity_grades_are_bands_of_k_by_rank() -> None:
    policy = _capacity(2)
    readiness = np.array([0.10, 0.90, 0.30, 0.80, 0.20, 0.70, 0.05])
    # rank: 0.90, 0.80 -> A; 0.70, 0.30 -> B; 0.20, 0.10 -> C; 0.05 -> D
    assert assign_grades(readiness, policy).tolist() == ["C", "A", "B", "A", "C", "B", "D"]


def test_capacity_ties_break_by_lead_id_else_input_order() -> None:
    policy = _capacity(1)
    readiness = [0.5, 0.5, 0.5]
    assert assign_grades(readiness, policy, lead_ids=["c", "a", "b"]).tolist() == ["C", "A", "B"]
    assert assign_grades(readiness, policy).tolist() == ["A", "B", "C"]


def test_capacity_floor_and_thin_batches() -> None:
    policy = _capacity(5, min_readiness=0.2)
    assert assign_grades([0.9, 0.3, 0.19], policy).tolist() == ["A", "A", "D"]


@pytest.mark.parametrize("bad", [[0.2, float("nan")], [1.01], [-0.1], [[0.1, 0.2]]])
def test_grades_refuse_non_probabilities(bad: list[Any]) -> None:
    with pytest.raises(ValueError, match="readiness"):
        assign_grades(bad, _policy())


def test_model_mode_uses_the_served_models_cutoffs() -> None:
    policy = _policy(grading={"mode": "model"})
    cutoffs = {"A": 0.08, "B": 0.04, "C": 0.01}
    readiness = [0.08, 0.0799, 0.04, 0.01, 0.0099]
    assert assign_grades(readiness, policy, model_cutoffs=cutoffs).tolist() == ["A", "B", "B", "C", "D"]
    with pytest.raises(ValueError, match="needs the served model's grade cut-offs"):
        assign_grades(readiness, policy)
    with pytest.raises(ValueError, match="keys A, B and C"):
        assign_grades(readiness, policy, model_cutoffs={"A": 0.5, "B": 0.2})
    with pytest.raises(ValueError, match="1 >= A >= B >= C >= 0"):
        assign_grades(readiness, policy, model_cutoffs={"A": 0.1, "B": 0.2, "C": 0.0})


def test_default_policy_fits_the_simulated_data() -> None:
    from features.simulator.generate import simulated_contract

    load_policy(None).check_against_contract(simulated_contract())


@settings(max_examples=60, deadline=None)
@given(
    readiness=st.lists(st.floats(0, 1), min_size=1, max_size=40),
    k=st.integers(1, 10),
    mode=st.sampled_from(["probability", "model", "capacity"]),
)
def test_higher_readiness_never_gets_a_worse_grade(readiness: list[float], k: int, mode: str) -> None:
    capacity = mode == "capacity"
    policy = _capacity(k) if capacity else _policy(grading={"mode": "model"}) if mode == "model" else _policy()
    grades = assign_grades(readiness, policy, model_cutoffs={"A": 0.3, "B": 0.3, "C": 0.05})
    rank = np.array([GRADES.index(g) for g in grades])  # 0 = A
    values = np.array(readiness)
    # No lead with strictly higher readiness has a worse grade (ties may straddle a capacity band).
    worse = (values[:, None] > values[None, :]) & (rank[:, None] > rank[None, :])
    assert not worse.any()
    if capacity:
        counts = {g: int((grades == g).sum()) for g in "ABC"}
        assert all(c <= k for c in counts.values())


# -- handoff decisions -----------------------------------------------------------------------------
def test_min_grade_and_rule_texts() -> None:
    policy = _policy()
    handoff, rules = decide_handoff(["A", "B", "C", "D"], ["a", "b", "c", "d"], {}, NOW, policy)
    assert handoff.tolist() == [True, True, False, False]
    assert rules.tolist() == [
        "grade A >= min grade B; not handed off in the last 14 days",
        "grade B >= min grade B; not handed off in the last 14 days",
        "grade C < min grade B",
        "grade D < min grade B",
    ]


def test_cooldown_boundary() -> None:
    policy = _policy(cooldown_days=14)
    last = {
        "exact": NOW - timedelta(days=14),
        "just_inside": NOW - timedelta(days=14) + timedelta(seconds=1),
        "long_ago": NOW - timedelta(days=400),
        "future": NOW + timedelta(hours=1),
    }
    ids = ["exact", "just_inside", "long_ago", "future", "never"]
    handoff, rules = decide_handoff(["A"] * 5, ids, last, NOW, policy)
    assert handoff.tolist() == [True, False, True, False, True]
    assert rules[1] == "grade A >= min grade B; cool-down: handed off 2026-11-13, eligible again 2026-11-27"
    assert "after the decision time" in rules[3]
    assert rules[0] == rules[2] == rules[4] == "grade A >= min grade B; not handed off in the last 14 days"


def test_cooldown_rule_shows_dates() -> None:
    handed = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    _, rules = decide_handoff(["B"], ["x"], {"x": handed}, NOW, _policy())
    assert rules[0] == "grade B >= min grade B; cool-down: handed off 2026-11-20, eligible again 2026-12-04"


def test_cooldown_accepts_series_and_other_time_zones() -> None:
    cet = timezone(timedelta(hours=1))
    series = pd.Series({"x": pd.Timestamp("2026-11-13T03:00:00+01:00"), "y": pd.NaT})
    handoff, _ = decide_handoff(["A", "A"], ["x", "y"], series, NOW.astimezone(cet), _policy())
    assert handoff.tolist() == [True, True]  # 2026-11-13 02:00 UTC is exactly 14 days before NOW
    series = pd.Series({"x": pd.Timestamp("2026-11-13T03:00:01+01:00")})
    handoff, _ = decide_handoff(["A"], ["x"], series, NOW, _policy())
    assert handoff.tolist() == [False]


def test_no_cooldown() -> None:
    handoff, rules = decide_handoff(["A"], ["x"], {"x": NOW}, NOW, _policy(cooldown_days=0))
    assert handoff.tolist() == [True]
    assert rules[0] == "grade A >= min grade B; no cool-down"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"now": datetime(2026, 11, 27)}, "timezone-aware"),
        ({"last_handoff_at": {"a": datetime(2026, 11, 1)}}, "timezone-aware"),
        ({"grades": ["A", "E"]}, "unknown grades"),
        ({"lead_ids": ["a", "a"]}, "unique"),
        ({"lead_ids": ["a"]}, "equal length"),
    ],
)
def test_decide_handoff_input_errors(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"grades": ["A", "B"], "lead_ids": ["a", "b"], "last_handoff_at": {}, "now": NOW}
    args.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        decide_handoff(args["grades"], args["lead_ids"], args["last_handoff_at"], args["now"], _policy())


def test_capacity_budget_takes_the_best_eligible_leads() -> None:
    policy = _capacity(3, min_grade_for_handoff="B")
    readiness = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.1])
    ids = ["a", "b", "c", "d", "e", "f", "g"]
    grades = assign_grades(readiness, policy, lead_ids=ids)
    assert grades.tolist() == ["A", "A", "A", "B", "B", "B", "C"]
    # "a" is cooling down; 1 handoff already made this week -> budget 2 -> "b" and "c".
    last = {"a": NOW - timedelta(days=2)}
    handoff, rules = decide_handoff(grades, ids, last, NOW, policy, readiness=readiness, handoffs_this_week=1)
    assert handoff.tolist() == [False, True, True, False, False, False, False]
    assert "cool-down" in rules[0]
    assert rules[3].startswith("grade B >= min grade B; weekly capacity of 3 reached")
    assert "since Monday 2026-11-23" in rules[3]
    assert rules[6] == "grade C < min grade B"


def test_capacity_budget_used_up_and_readiness_required() -> None:
    policy = _capacity(2)
    handoff, rules = decide_handoff(["A", "A"], ["a", "b"], {}, NOW, policy, readiness=[0.9, 0.8], handoffs_this_week=5)
    assert handoff.tolist() == [False, False]
    assert all("weekly capacity of 2 reached" in r for r in rules)
    with pytest.raises(ValueError, match="capacity mode needs readiness"):
        decide_handoff(["A"], ["a"], {}, NOW, policy)


def test_week_start_is_monday_midnight_utc() -> None:
    assert week_start(NOW) == datetime(2026, 11, 23, tzinfo=UTC)
    assert week_start(datetime(2026, 11, 23, tzinfo=UTC)) == datetime(2026, 11, 23, tzinfo=UTC)
    # Monday 00:30 at UTC+2 is still Sunday in UTC: the week began the Monday before.
    plus2 = timezone(timedelta(hours=2))
    assert week_start(datetime(2026, 11, 23, 0, 30, tzinfo=plus2)) == datetime(2026, 11, 16, tzinfo=UTC)
    with pytest.raises(ValueError):
        week_start(datetime(2026, 11, 23))


# -- trends ----------------------------------------------------------------------------------------
def test_trend_thresholds() -> None:
    policy = _policy(trend={"improving_delta": 5, "declining_delta": 3})
    assert trend(None, 50, policy) == "new"
    assert trend(float("nan"), 50, policy) == "new"
    assert trend(45, 50, policy) == "improving"
    assert trend(46, 50, policy) == "steady"
    assert trend(53, 50, policy) == "declining"
    assert trend(52, 50, policy) == "steady"


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 100)), st.integers(0, 100)), min_size=1, max_size=30)
)
def test_vectorised_trends_match_scalar(pairs: list[tuple[int | None, int]]) -> None:
    policy = _policy()
    prev = np.array([np.nan if p is None else p for p, _ in pairs], dtype=float)
    cur = np.array([c for _, c in pairs], dtype=float)
    assert trends(prev, cur, policy).tolist() == [trend(p, c, policy) for p, c in pairs]


# -- the small-request path of decide_handoff equals the vectorised one --------------------------
def _random_decision_inputs(seed: int, n: int) -> tuple[list[str], list[str], dict[str, Any], np.ndarray]:
    """Grades, ids, handoff times (never, long ago, inside/at the cool-down edge, in the future) and readiness."""
    rng = np.random.default_rng(seed)
    ids = [f"lead-{i:05d}" for i in rng.permutation(n * 3)[:n]]
    grades = rng.choice(list("ABCD"), size=n).tolist()
    cet = timezone(timedelta(hours=1))
    offsets = [
        None,
        timedelta(days=400),
        timedelta(days=14),  # exactly the cool-down: eligible again
        timedelta(days=14) - timedelta(seconds=1),
        timedelta(days=3, hours=5, microseconds=123_456),
        timedelta(0),
        -timedelta(hours=2),  # recorded after the decision time
    ]
    last: dict[str, Any] = {}
    for lead in ids:
        offset = offsets[int(rng.integers(len(offsets)))]
        if offset is not None:
            at = NOW - offset
            last[lead] = at.astimezone(cet) if rng.random() < 0.3 else at
    last["not-asked-for"] = NOW - timedelta(days=1)
    readiness = np.round(rng.random(n), 2)  # rounded: ties broken by lead_id
    return grades, ids, last, readiness


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "policy",
    [
        _policy(),
        _policy(cooldown_days=0, min_grade_for_handoff="A"),
        _policy(min_grade_for_handoff="C", cooldown_days=30),
        _capacity(3),
        _capacity(2, min_readiness=0.2, min_grade_for_handoff="A"),
    ],
    ids=["default", "no-cooldown", "min-C", "capacity", "capacity-min-A"],
)
def test_small_decision_path_equals_the_vectorised_path(
    seed: int, policy: HandoffPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.policy as policy_module

    for n in (1, 7, 100):
        grades, ids, last, readiness = _random_decision_inputs(seed * 1000 + n, n)
        kwargs: dict[str, Any] = {"readiness": readiness, "handoffs_this_week": seed % 3}
        monkeypatch.setattr(policy_module, "SMALL_DECISION_MAX", 10_000)
        small = decide_handoff(grades, ids, last, NOW, policy, **kwargs)
        monkeypatch.setattr(policy_module, "SMALL_DECISION_MAX", 0)
        vectorised = decide_handoff(grades, ids, last, NOW, policy, **kwargs)
        assert small[0].dtype == vectorised[0].dtype == np.bool_
        assert small[0].tolist() == vectorised[0].tolist()
        assert small[1].tolist() == vectorised[1].tolist()
        # the inputs reach every kind of rule the policy can give
        if n == 100 and policy.cooldown_days and policy.min_grade_for_handoff != "A":
            texts = " | ".join(small[1].tolist())
            assert "eligible again" in texts and "after the decision time" in texts and "not handed off" in texts


@pytest.mark.parametrize("threshold", [0, 10_000])
def test_both_decision_paths_refuse_the_same_bad_handoff_times(threshold: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import serving.policy as policy_module

    monkeypatch.setattr(policy_module, "SMALL_DECISION_MAX", threshold)
    with pytest.raises(ValueError, match=r"timezone-aware datetimes; not so for leads \['b'\]"):
        decide_handoff(["A", "A"], ["a", "b"], {"a": NOW, "b": datetime(2026, 11, 1), "c": None}, NOW, _policy())
    with pytest.raises(ValueError, match="timezone-aware datetimes"):
        decide_handoff(["A"], ["a"], {"a": "2026-11-01T00:00:00+00:00"}, NOW, _policy())
    with pytest.raises(ValueError, match=r"more than once \(keys with the same text\): \['1'\]"):
        decide_handoff(["A"], ["1"], {1: NOW, "1": NOW}, NOW, _policy())
    handoff, _ = decide_handoff(["A", "A"], ["a", "b"], {"a": None, "b": float("nan")}, NOW, _policy())
    assert handoff.tolist() == [True, True]  # missing values mean never handed off
