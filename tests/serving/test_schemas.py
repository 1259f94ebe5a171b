from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from pydantic import BaseModel, ValidationError

from features.contract import Contract
from serving import schemas
from serving.schemas import (
    MAX_SCORE_BATCH,
    FeedbackRequest,
    FeedbackResponse,
    HandoffQueuePage,
    ModelInfo,
    Prediction,
    ScoreRequest,
    validation_error_response,
)
from serving.stores import FeedbackRecord, ScoreRecord

ALL_MODELS = [
    schemas.Prediction,
    schemas.ScoreRequest,
    schemas.ScoreResponse,
    schemas.HandoffQueuePage,
    schemas.FeedbackRequest,
    schemas.FeedbackResponse,
    schemas.ModelInfo,
    schemas.HealthResponse,
    schemas.ReadyResponse,
    schemas.ErrorResponse,
]

CONTRACT = Contract(
    attributes=[
        {"name": "industry", "kind": "categorical"},
        {"name": "company_size", "kind": "categorical"},
        {"name": "annual_revenue", "kind": "numeric"},
    ],
    activity_types=["pricing_page_view", "webinar_attended"],
    topics=["pricing", "integrations"],
)


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.value.errors()]


def _inline(**overrides: Any) -> dict[str, Any]:
    lead: dict[str, Any] = {
        "lead_id": "crm-1",
        "created_at": "2026-10-02T08:15:00Z",
        "attributes": {"industry": "software", "annual_revenue": 4.2e6},
        "activities": [
            {"occurred_at": "2026-11-24T14:02:00+01:00", "activity_type": "webinar_attended"},
            {"occurred_at": "2026-11-20T09:30:00Z", "activity_type": "pricing_page_view", "topic": "pricing"},
        ],
        "stage_history": [{"stage": "mql", "entered_at": "2026-11-20T10:00:00Z"}],
    }
    lead.update(overrides)
    return lead


@pytest.mark.parametrize("model", ALL_MODELS, ids=lambda m: m.__name__)
def test_every_openapi_example_is_valid(model: type[BaseModel]) -> None:
    examples = model.model_json_schema().get("examples")
    assert examples, f"{model.__name__} has no OpenAPI example"
    for example in examples:
        model.model_validate(example)


def test_examples_reach_the_openapi_document() -> None:
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/score", response_model=schemas.ScoreResponse)
    def score(request: ScoreRequest) -> schemas.ScoreResponse:  # pragma: no cover - never called
        raise NotImplementedError

    components = app.openapi()["components"]["schemas"]
    assert components["ScoreRequest"]["examples"][0]["items"][0] == {"lead_id": "L0000123"}
    assert components["ScoreResponse"]["examples"][0]["predictions"][0]["grade"] == "A"


def test_score_request_by_id_and_inline() -> None:
    req = ScoreRequest.model_validate({"items": [{"lead_id": "L1"}, {"inline": _inline()}]})
    assert [item.key for item in req.items] == ["L1", "crm-1"]
    assert req.explain is True
    first = req.items[1].inline.activities[0]  # type: ignore[union-attr]
    assert first.occurred_at == datetime(2026, 11, 24, 13, 2, tzinfo=UTC)
    assert first.occurred_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "item",
    [{}, {"lead_id": "L1", "inline": _inline()}],
    ids=["neither", "both"],
)
def test_exactly_one_of_lead_id_or_inline(item: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate({"items": [item]})
    assert any(loc == "items.0" and "exactly one of 'lead_id'" in msg for loc, msg in _errors(info))


@pytest.mark.parametrize(
    ("change", "where", "fragment"),
    [
        ({"created_at": "2026-10-02T08:15:00"}, "items.0.inline.created_at", "timezone"),
        (
            {"activities": [{"occurred_at": "2026-11-20T09:30:00", "activity_type": "pricing_page_view"}]},
            "items.0.inline.activities.0.occurred_at",
            "timezone",
        ),
        (
            {"activities": [{"occurred_at": "2026-01-01T00:00:00Z", "activity_type": "pricing_page_view"}]},
            "items.0.inline",
            "activities.0.occurred_at (2026-01-01T00:00:00+00:00) is before created_at",
        ),
        (
            {"activities": [{"occurred_at": "2026-11-20T09:30:00Z", "activity_type": "x", "value": -1}]},
            "items.0.inline.activities.0.value",
            "greater than or equal to 0",
        ),
        ({"attributes": {"bad name": 1}}, "items.0.inline.attributes", "attribute names"),
        ({"colour": "blue"}, "items.0.inline.colour", "Extra inputs"),
        ({"lead_id": ""}, "items.0.inline.lead_id", "at least 1 character"),
    ],
)
def test_inline_errors_name_the_field(change: dict[str, Any], where: str, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate({"items": [{"inline": _inline(**change)}]})
    assert any(loc == where and fragment in msg for loc, msg in _errors(info)), _errors(info)


def test_batch_size_duplicates_and_future_events() -> None:
    too_many = {"items": [{"lead_id": f"L{i}"} for i in range(MAX_SCORE_BATCH + 1)]}
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate(too_many)
    assert _errors(info)[0][0] == "items"
    ScoreRequest.model_validate({"items": too_many["items"][:MAX_SCORE_BATCH]})

    with pytest.raises(ValidationError, match=r"lead 'L1' is already items\.0"):
        ScoreRequest.model_validate({"items": [{"lead_id": "L1"}, {"inline": _inline(lead_id="L1")}]})
    with pytest.raises(ValidationError, match="at least 1 item"):
        ScoreRequest.model_validate({"items": []})

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    acts = [{"occurred_at": future, "activity_type": "pricing_page_view"}]
    with pytest.raises(ValidationError, match=r"items\.0\.inline has an event in the future"):
        ScoreRequest.model_validate({"items": [{"inline": _inline(activities=acts)}]})
    with pytest.raises(ValidationError, match=r"after as_of \(2026-11-21"):
        ScoreRequest.model_validate({"items": [{"inline": _inline()}], "as_of": "2026-11-21T00:00:00Z"})
    ok = ScoreRequest.model_validate({"items": [{"inline": _inline()}], "as_of": "2026-11-25T00:00:00+01:00"})
    assert ok.as_of == datetime(2026, 11, 24, 23, tzinfo=UTC)


def test_contract_errors_name_each_field() -> None:
    lead = _inline(
        attributes={"industry": 3.5, "annual_revenue": "lots", "shoe_size": 44, "company_size": "11-50"},
        activities=[
            {"occurred_at": "2026-11-20T09:30:00Z", "activity_type": "fax_sent"},
            {"occurred_at": "2026-11-20T09:31:00Z", "activity_type": "pricing_page_view", "topic": "astrology"},
        ],
        stage_history=[{"stage": "limbo", "entered_at": "2026-11-20T10:00:00Z"}],
    )
    req = ScoreRequest.model_validate({"items": [{"lead_id": "L1"}, {"inline": lead}]})
    fields = {e.field: e.message for e in req.contract_errors(CONTRACT)}
    assert set(fields) == {
        "items.1.inline.attributes.industry",
        "items.1.inline.attributes.annual_revenue",
        "items.1.inline.attributes.shoe_size",
        "items.1.inline.activities.0.activity_type",
        "items.1.inline.activities.1.topic",
        "items.1.inline.stage_history.0.stage",
    }
    assert "unknown activity type 'fax_sent'" in fields["items.1.inline.activities.0.activity_type"]
    with pytest.raises(ValueError, match="do not fit the data contract"):
        req.inline_history(CONTRACT)


def test_inline_history_has_canonical_dtypes() -> None:
    second = _inline(lead_id="crm-2", attributes={"company_size": 50}, activities=[], stage_history=[])
    req = ScoreRequest.model_validate({"items": [{"inline": _inline()}, {"lead_id": "L9"}, {"inline": second}]})
    assert req.contract_errors(CONTRACT) == []
    history = req.inline_history(CONTRACT)
    leads = history.leads
    assert leads["lead_id"].tolist() == ["crm-1", "crm-2"]
    assert str(leads["created_at"].dtype) == "datetime64[us, UTC]"
    assert leads["industry"].dtype == "str"
    assert leads["industry"].isna().tolist() == [False, True]
    assert leads["company_size"].tolist()[1] == "50"
    assert leads["annual_revenue"].dtype == "float64"
    assert leads["annual_revenue"].isna().tolist() == [False, True]
    acts = history.activities
    # sorted by lead then time: the 09:30Z view comes before the 13:02Z webinar
    assert acts["activity_type"].tolist() == ["pricing_page_view", "webinar_attended"]
    assert acts["occurred_at"].tolist() == [
        pd.Timestamp("2026-11-20T09:30:00Z"),
        pd.Timestamp("2026-11-24T13:02:00Z"),
    ]
    assert acts["topic"].isna().tolist() == [False, True]
    assert set(acts.columns) == {"lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value"}
    assert history.stage_history["stage"].tolist() == ["mql"]
    assert str(history.stage_history["entered_at"].dtype) == "datetime64[us, UTC]"


def _record(**overrides: Any) -> ScoreRecord:
    values: dict[str, Any] = {
        "lead_id": "L1",
        "readiness": 0.62,
        "score": 62,
        "grade": "A",
        "stage": "sql",
        "stage_probabilities": {"mql": 0.2, "sql": 0.8},
        "reasons": {"positive": [{"feature": "f", "text": "t", "contribution": 0.5}], "negative": []},
        "needs": ["pricing"],
        "next_best_action": {"action": "demo", "label": "Demo", "readiness_gain": 0.04},
        "trend": "new",
        "handoff": True,
        "handoff_rule": "grade A >= min grade B; not handed off in the last 14 days",
        "handoff_id": "abc123",
        "batch_id": 3,
        "is_current": True,
        "model_name": "leadscore",
        "model_version": "7",
        "policy_version": "p-1",
        "scored_at": datetime(2026, 11, 27, 2, tzinfo=UTC),
        "as_of": datetime(2026, 11, 27, tzinfo=UTC),
    }
    values.update(overrides)
    return ScoreRecord(**values)


def test_prediction_from_store_record() -> None:
    pred = Prediction.from_record(_record())
    assert pred.handoff.handoff is True
    assert pred.handoff.handoff_id == "abc123"
    assert pred.model.version == "7"
    assert pred.reasons is not None
    assert pred.reasons.positive[0].contribution == 0.5
    assert pred.next_best_action is not None
    assert pred.next_best_action.readiness_gain == 0.04
    body = json.loads(pred.model_dump_json())
    assert body["scored_at"] == "2026-11-27T02:00:00Z"
    unexplained = Prediction.from_record(_record(reasons=None, needs=None, next_best_action=None))
    assert unexplained.reasons is None
    assert unexplained.needs == []


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"stage_probabilities": {"mql": 0.2, "sql": 0.5}}, "sum to 1"),
        ({"stage_probabilities": {"mql": 0.2, "won": 0.8}}, "stage 'sql' has no entry"),
        ({"reasons": {"positive": [{"feature": "f", "text": "t", "contribution": -0.1}], "negative": []}}, "positive"),
        ({"handoff": False}, "handoff_id is only set when handoff is true"),
        ({"score": 101}, "less than or equal to 100"),
        ({"scored_at": datetime(2026, 11, 27)}, "timezone"),
    ],
)
def test_prediction_rejects_inconsistent_values(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        Prediction.from_record(_record(**overrides))


def test_feedback_request_rules() -> None:
    FeedbackRequest.model_validate({"lead_id": "L1", "handoff_id": "abc", "outcome": "accepted"})
    with pytest.raises(ValidationError, match="reason_code is required"):
        FeedbackRequest.model_validate({"lead_id": "L1", "handoff_id": "abc", "outcome": "rejected"})
    with pytest.raises(ValidationError) as info:
        FeedbackRequest.model_validate(
            {"lead_id": "L1", "handoff_id": "abc", "outcome": "maybe", "reason_code": "No Budget!"}
        )
    fields = {loc for loc, _ in _errors(info)}
    assert fields == {"outcome", "reason_code"}
    record = FeedbackRecord(7, "L1", "abc", "rejected", "no_budget", None, datetime(2026, 11, 27, tzinfo=UTC), False)
    response = FeedbackResponse.from_record(record)
    assert response.created is False
    assert response.feedback_id == 7


def test_queue_page_and_model_info_bounds() -> None:
    with pytest.raises(ValidationError, match="limit"):
        HandoffQueuePage(items=[], limit=0, offset=0, total=0)
    page = HandoffQueuePage(items=[Prediction.from_record(_record())], limit=10, offset=0, total=1)
    assert page.items[0].lead_id == "L1"
    info = ModelInfo(name="leadscore", version="7", policy_version="p-1", metrics={"auc": 0.8})
    assert info.metrics == {"auc": 0.8}


def test_validation_error_body_never_echoes_input() -> None:
    secret = "4111-1111-1111-1111"
    bad = {"items": [{"inline": _inline(created_at=secret)}]}
    with pytest.raises(ValidationError) as info:
        ScoreRequest.model_validate(bad)
    errors = [{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()]
    assert any(secret in json.dumps(e, default=str) for e in errors)  # pydantic keeps the input...
    body = validation_error_response(errors, request_id="r-1").model_dump_json()
    assert secret not in body  # ...the response does not
    parsed = json.loads(body)["error"]
    assert parsed["code"] == "validation_error"
    assert parsed["request_id"] == "r-1"
    assert parsed["fields"][0]["field"] == "items.0.inline.created_at"
