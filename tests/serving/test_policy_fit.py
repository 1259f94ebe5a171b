"""The packaged policy adapts to any data set; a user's policy stays strict."""

from __future__ import annotations

import pytest

from features.contract import Contract
from serving.policy import PolicyError, load_policy, parse_policy


def _contract(activity_types: list[str], topics: list[str] | None = None) -> Contract:
    return Contract.model_validate({"activity_types": activity_types, "topics": topics or []})


def test_packaged_policy_follows_the_model_horizon() -> None:
    policy = load_policy(None)
    assert policy.horizon_days is None
    for horizon in (30, 90, 365):
        policy.check_horizon(horizon)  # no error: null follows the model


def test_explicit_horizon_must_match_the_model() -> None:
    policy = load_policy(None).model_copy(update={"horizon_days": 90})
    policy.check_horizon(90)
    with pytest.raises(PolicyError, match="horizon_days is 90 but the model predicts conversion within 30 days"):
        policy.check_horizon(30)


def test_packaged_policy_drops_actions_the_data_cannot_express() -> None:
    policy = load_policy(None)
    assert policy.skip_inapplicable_actions
    fitted = policy.check_against_contract(_contract(["email_open", "web_visit"]))
    kept = {a.activity_type for a in fitted.next_best_actions}
    assert kept <= {"email_open", "web_visit"}
    assert len(fitted.next_best_actions) < len(policy.next_best_actions)
    # the original is unchanged
    assert {a.activity_type for a in policy.next_best_actions} > kept


def test_user_policy_with_an_unknown_action_is_an_error() -> None:
    text = """
version: 1
policy_version: mine-1
grading: {mode: model}
next_best_actions:
  - {name: demo, activity_type: demo_requets, count: 1, label: Invite to a demo}
"""
    policy = parse_policy(text, source="mine.yaml")
    assert not policy.skip_inapplicable_actions
    with pytest.raises(PolicyError, match="demo_requets"):
        policy.check_against_contract(_contract(["demo_request"]))
