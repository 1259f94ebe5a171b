"""Request and response models of the CRM API (v1), with OpenAPI examples an integrator can follow.

Conventions every model follows:

- Unknown fields are rejected (``extra="forbid"``), so a typo in a field name is a 422 naming the field
  instead of being silently ignored.
- Timestamps in requests must carry a time zone (``2026-11-20T09:30:00Z`` or ``...+01:00``); a naive
  timestamp is a 422. Responses are always in UTC.
- ``readiness`` is the calibrated probability of converting within the policy's horizon; ``score`` is the
  same in whole percent (0-100).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from features.contract import Contract
    from features.history import ProspectHistory

from serving.schemas.base import (
    _FORBID,
    API_VERSION,
    DEFAULT_QUEUE_LIMIT,
    FEEDBACK_OUTCOMES,
    FUTURE_TOLERANCE,
    HANDOFF_ID_PATTERN,
    LEAD_ID_PATTERN,
    MAX_ATTRIBUTES,
    MAX_FEEDBACK_TEXT,
    MAX_INLINE_ACTIVITIES,
    MAX_INLINE_STAGES,
    MAX_QUEUE_LIMIT,
    MAX_QUEUE_OFFSET,
    MAX_SCORE_BATCH,
    NAME_PATTERN,
    REASON_CODE_PATTERN,
    Grade,
    LeadId,
    Outcome,
    TrendLabel,
    UtcDatetime,
)
from serving.schemas.errors import (
    ErrorBody,
    ErrorCode,
    ErrorResponse,
    FieldError,
    error_response,
    field_path,
    validation_error_response,
)
from serving.schemas.feedback import FeedbackRequest, FeedbackResponse


# -- predictions ---------------------------------------------------------------------------------
class Reason(BaseModel):
    """One driver of the readiness prediction."""

    model_config = _FORBID

    feature: str = Field(min_length=1, description="Model feature the driver comes from.")
    text: str = Field(min_length=1, description="The driver in plain language.")
    contribution: float = Field(
        description="Exact TreeSHAP contribution to the model's raw output (log-odds); positive raises readiness."
    )

    @field_validator("contribution")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("contribution must be a finite number")
        return value


class Reasons(BaseModel):
    """Top positive and top negative behaviour and fit drivers, strongest first, and the CRM state as context.

    ``sum(positive) + sum(negative) + sum(context) + rest`` is the readiness model's log-odds.
    """

    model_config = _FORBID

    positive: list[Reason] = Field(default_factory=list, max_length=20)
    negative: list[Reason] = Field(default_factory=list, max_length=20)
    context: list[Reason] = Field(
        default_factory=list,
        max_length=20,
        description="What the CRM already shows (stage, days in stage) and its contribution; never a reason.",
    )
    rest: float | None = Field(
        default=None, description="The model's base value plus every driver not listed (log-odds)."
    )

    @model_validator(mode="after")
    def _signs(self) -> Reasons:
        if any(r.contribution < 0 for r in self.positive):
            raise ValueError("positive reasons must have contribution >= 0")
        if any(r.contribution > 0 for r in self.negative):
            raise ValueError("negative reasons must have contribution <= 0")
        return self


class ActionSuggestion(BaseModel):
    """The next-best action: the configured action with the largest *estimated* effect for leads like this one.

    ``action`` is null (label "no action with evidence of effect") when no action's interval lies above 0.
    """

    model_config = _FORBID

    action: str | None = Field(
        default=None, min_length=1, description="Action name from the handoff policy; null when none qualifies."
    )
    label: str = Field(min_length=1, description="What to do, in plain language (says it is an estimate).")
    readiness_gain: float = Field(
        ge=-1.0, le=1.0, description="Estimated gain in the chance to convert within the horizon (0 when none)."
    )
    ci_low: float | None = Field(default=None, description="Lower end of the gain's interval.")
    ci_high: float | None = Field(default=None, description="Upper end of the gain's interval.")
    segment: str | None = Field(default=None, description="The leads the estimate is for (their CRM stage).")
    estimated: bool = Field(default=False, description="True: the gain is an estimated causal effect.")


class HandoffDecision(BaseModel):
    """Whether the lead goes to sales now, and the rule that decided it."""

    model_config = _FORBID

    handoff: bool
    rule: str = Field(min_length=1, description="The policy rule that decided, in plain language.")
    handoff_id: str | None = Field(
        default=None,
        pattern=HANDOFF_ID_PATTERN,
        description="Identifies this handoff; send it back with feedback. Null when not handed off.",
    )

    @model_validator(mode="after")
    def _id_only_with_handoff(self) -> HandoffDecision:
        if self.handoff_id is not None and not self.handoff:
            raise ValueError("handoff_id is only set when handoff is true")
        return self


class ModelRef(BaseModel):
    """The registered model that produced a prediction."""

    model_config = _FORBID

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)


_PREDICTION_EXAMPLE: dict[str, Any] = {
    "lead_id": "L-000123",
    "readiness": 0.62,
    "score": 62,
    "grade": "A",
    "stage": "sql",
    "stage_probabilities": {"new": 0.03, "mql": 0.17, "sql": 0.55, "opportunity": 0.25},
    "reasons": {
        "positive": [
            {
                "feature": "n_pricing_page_view_7d",
                "text": "3 pricing-page views in the last 7 days",
                "contribution": 0.84,
            },
            {"feature": "company_size", "text": "company size 11-50", "contribution": 0.31},
        ],
        "negative": [
            {"feature": "days_since_email_click", "text": "no email click for 41 days", "contribution": -0.22},
        ],
    },
    "needs": ["pricing", "integrations"],
    "next_best_action": {
        "action": "invite_to_webinar",
        "label": "Invite the lead to the next webinar (estimated effect for leads at stage mql)",
        "readiness_gain": 0.021,
        "ci_low": 0.006,
        "ci_high": 0.036,
        "segment": "mql",
        "estimated": True,
    },
    "trend": "improving",
    "handoff": {
        "handoff": True,
        "rule": "grade A >= min grade B; not handed off in the last 14 days",
        "handoff_id": "3f1c9a0e5b2d4c6f8a7e9d1b0c2a4e6f",
    },
    "model": {"name": "leadscore", "version": "7"},
    "scored_at": "2026-11-27T02:00:13Z",
    "as_of": "2026-11-27T02:00:00Z",
    "policy_version": "default-2",
}


class Prediction(BaseModel):
    """Everything the service says about one lead."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_PREDICTION_EXAMPLE]})

    lead_id: LeadId
    readiness: float = Field(ge=0.0, le=1.0, description="Calibrated probability of converting within the horizon.")
    score: int = Field(ge=0, le=100, description="Readiness in whole percent.")
    grade: Grade
    stage: str | None = Field(
        default=None,
        min_length=1,
        description="Current buying stage. Null only when the model has no stage model (data without "
        "conversion times, e.g. single-snapshot exports).",
    )
    stage_probabilities: dict[str, float] = Field(
        default_factory=dict, description="Probability of each stage; sums to 1 (empty when stage is null)."
    )
    reasons: Reasons | None = Field(
        default=None,
        description="Top drivers. Batch scores carry them for the handoff queue and top grades; "
        "POST /v1/score computes them for any lead.",
    )
    needs: list[str] = Field(default_factory=list, description="The prospect's top topics of interest.")
    next_best_action: ActionSuggestion | None = None
    trend: TrendLabel = Field(description="Against the lead's previous score: improving, steady, declining or new.")
    handoff: HandoffDecision
    model: ModelRef
    scored_at: UtcDatetime
    as_of: UtcDatetime | None = Field(default=None, description="The data was taken into account up to this time.")
    policy_version: str = Field(min_length=1)

    @field_validator("stage_probabilities")
    @classmethod
    def _probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            return value
        bad = {k: v for k, v in value.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)}
        if bad:
            raise ValueError(f"stage probabilities must be in [0, 1]: {bad}")
        total = sum(value.values())
        if abs(total - 1.0) > 0.01:
            raise ValueError(f"stage probabilities must sum to 1, got {total:.4f}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Prediction:
        if self.stage is None:
            if self.stage_probabilities:
                raise ValueError("stage_probabilities given without a stage")
        elif self.stage not in self.stage_probabilities:
            raise ValueError(f"stage '{self.stage}' has no entry in stage_probabilities")
        return self

    @classmethod
    def from_record(cls, record: Any) -> Prediction:
        """Build from a stored score (``serving.stores.ScoreRecord`` or anything with the same attributes)."""
        return cls(
            lead_id=record.lead_id,
            readiness=record.readiness,
            score=record.score,
            grade=record.grade,
            stage=record.stage,
            stage_probabilities=record.stage_probabilities,
            reasons=record.reasons,
            needs=record.needs or [],
            next_best_action=record.next_best_action,
            trend=record.trend,
            handoff=HandoffDecision(handoff=record.handoff, rule=record.handoff_rule, handoff_id=record.handoff_id),
            model=ModelRef(name=record.model_name, version=record.model_version),
            scored_at=record.scored_at,
            as_of=record.as_of,
            policy_version=record.policy_version,
        )


# -- score requests ------------------------------------------------------------------------------
class ActivityIn(BaseModel):
    """One activity of an inline lead (same meaning as a row of the ``activities`` table)."""

    model_config = _FORBID

    occurred_at: UtcDatetime
    activity_type: str = Field(pattern=NAME_PATTERN, description="One of the data contract's activity types.")
    channel: str | None = Field(default=None, max_length=200)
    campaign_id: str | None = Field(default=None, max_length=200)
    topic: str | None = Field(default=None, pattern=NAME_PATTERN, description="One of the contract's topics.")
    value: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)


class StageEntryIn(BaseModel):
    """One stage change of an inline lead (a row of the ``stage_history`` table)."""

    model_config = _FORBID

    stage: str = Field(pattern=NAME_PATTERN, description="One of the contract's stages.")
    entered_at: UtcDatetime


AttributeValue = str | bool | int | float | None


class InlineLead(BaseModel):
    """A lead described in the request itself rather than looked up by id."""

    model_config = _FORBID

    lead_id: LeadId = Field(description="Your identifier for this lead, echoed in the response (not looked up).")
    created_at: UtcDatetime
    attributes: dict[str, AttributeValue] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="Lead attributes declared in the data contract; a missing attribute counts as unknown.",
    )
    activities: list[ActivityIn] = Field(default_factory=list, max_length=MAX_INLINE_ACTIVITIES)
    stage_history: list[StageEntryIn] = Field(default_factory=list, max_length=MAX_INLINE_STAGES)

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, AttributeValue]) -> dict[str, AttributeValue]:
        import re

        bad = [k for k in value if not re.match(NAME_PATTERN, k)]
        if bad:
            raise ValueError(f"attribute names must match {NAME_PATTERN}: {bad}")
        non_finite = [k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)]
        if non_finite:
            raise ValueError(f"attributes must be finite numbers: {non_finite}")
        return value

    @model_validator(mode="after")
    def _events_after_creation(self) -> InlineLead:
        for i, a in enumerate(self.activities):
            if a.occurred_at < self.created_at:
                raise ValueError(
                    f"activities.{i}.occurred_at ({a.occurred_at.isoformat()}) is before created_at "
                    f"({self.created_at.isoformat()})"
                )
        for i, s in enumerate(self.stage_history):
            if s.entered_at < self.created_at:
                raise ValueError(
                    f"stage_history.{i}.entered_at ({s.entered_at.isoformat()}) is before created_at "
                    f"({self.created_at.isoformat()})"
                )
        return self

    def latest_time(self) -> datetime:
        times = [
            self.created_at,
            *(a.occurred_at for a in self.activities),
            *(s.entered_at for s in self.stage_history),
        ]
        return max(times)


class ScoreItem(BaseModel):
    """One lead to score: EITHER ``lead_id`` (looked up in the service's prospect history) OR ``inline``."""

    model_config = _FORBID

    lead_id: LeadId | None = Field(default=None, description="Score a lead the service knows.")
    inline: InlineLead | None = Field(default=None, description="Score a lead described in the request.")

    @model_validator(mode="after")
    def _exactly_one(self) -> ScoreItem:
        if (self.lead_id is None) == (self.inline is None):
            raise ValueError("give exactly one of 'lead_id' (a known lead) or 'inline' (a lead described here)")
        return self

    @property
    def key(self) -> str:
        """The lead id the prediction will carry."""
        return self.lead_id if self.lead_id is not None else self.inline.lead_id  # type: ignore[union-attr]


_SCORE_REQUEST_EXAMPLE: dict[str, Any] = {
    "items": [
        {"lead_id": "L0000123"},
        {
            "inline": {
                "lead_id": "crm-98765",
                "created_at": "2026-10-02T08:15:00Z",
                "attributes": {"industry": "software", "company_size": "11-50", "annual_revenue_musd": 4.2},
                "activities": [
                    {
                        "occurred_at": "2026-11-20T09:30:00+01:00",
                        "activity_type": "pricing_page_view",
                        "topic": "analytics",
                    },
                    {"occurred_at": "2026-11-24T14:02:00Z", "activity_type": "webinar", "channel": "web"},
                ],
                "stage_history": [
                    {"stage": "new", "entered_at": "2026-10-02T08:15:00Z"},
                    {"stage": "mql", "entered_at": "2026-11-20T10:00:00Z"},
                ],
            }
        },
    ],
    "explain": True,
}


class ScoreRequest(BaseModel):
    """``POST /v1/score``: 1 to ``MAX_SCORE_BATCH`` leads; predictions come back in the same order."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_SCORE_REQUEST_EXAMPLE]})

    items: list[ScoreItem] = Field(min_length=1, max_length=MAX_SCORE_BATCH)
    explain: bool = Field(default=True, description="Compute reasons and the next-best action (slower).")
    as_of: UtcDatetime | None = Field(
        default=None,
        description="Score as the leads looked at this time (default: now). Inline events after it are rejected.",
    )

    @model_validator(mode="after")
    def _unique_and_not_future(self) -> ScoreRequest:
        seen: dict[str, int] = {}
        for i, item in enumerate(self.items):
            if item.key in seen:
                raise ValueError(f"items.{i}: lead '{item.key}' is already items.{seen[item.key]}")
            seen[item.key] = i
        now = datetime.now(UTC)
        if self.as_of is not None and self.as_of > now + FUTURE_TOLERANCE:
            raise ValueError(f"as_of ({self.as_of.isoformat()}) is in the future")
        limit = self.as_of if self.as_of is not None else now + FUTURE_TOLERANCE
        for i, item in enumerate(self.items):
            if item.inline is not None and item.inline.latest_time() > limit:
                what = f"after as_of ({limit.isoformat()})" if self.as_of is not None else "in the future"
                raise ValueError(f"items.{i}.inline has an event {what}: {item.inline.latest_time().isoformat()}")
        return self

    # -- helpers for the service ---------------------------------------------------------------------
    def contract_errors(self, contract: Contract) -> list[FieldError]:
        """Inline content that does not fit the data contract, one error per field (empty = fits)."""
        errors: list[FieldError] = []
        declared = {a.name: a.kind for a in contract.attributes}
        stages = set(contract.stages.order)
        for i, item in enumerate(self.items):
            lead = item.inline
            if lead is None:
                continue
            base = f"items.{i}.inline"
            for name, value in lead.attributes.items():
                kind = declared.get(name)
                if kind is None:
                    errors.append(
                        FieldError(field=f"{base}.attributes.{name}", message="not an attribute of the data contract")
                    )
                elif (
                    kind == "numeric"
                    and value is not None
                    and (isinstance(value, bool) or not isinstance(value, int | float))
                ):
                    errors.append(FieldError(field=f"{base}.attributes.{name}", message="expected a number"))
                elif kind == "categorical" and isinstance(value, float):
                    errors.append(
                        FieldError(
                            field=f"{base}.attributes.{name}", message="expected a category (text), got a number"
                        )
                    )
            for j, act in enumerate(lead.activities):
                if act.activity_type not in contract.activity_types:
                    errors.append(
                        FieldError(
                            field=f"{base}.activities.{j}.activity_type",
                            message=(
                                f"unknown activity type '{act.activity_type}'; "
                                f"expected one of {contract.activity_types}"
                            ),
                        )
                    )
                if act.topic is not None and act.topic not in contract.topics:
                    errors.append(
                        FieldError(
                            field=f"{base}.activities.{j}.topic",
                            message=f"unknown topic '{act.topic}'; expected one of {contract.topics}",
                        )
                    )
            for j, entry in enumerate(lead.stage_history):
                if entry.stage not in stages:
                    errors.append(
                        FieldError(
                            field=f"{base}.stage_history.{j}.stage",
                            message=f"unknown stage '{entry.stage}'; expected one of {contract.stages.order}",
                        )
                    )
        return errors

    def inline_history(self, contract: Contract) -> ProspectHistory:
        """The inline leads as a :class:`~features.history.ProspectHistory` in canonical dtypes.

        Raises:
            ValueError: if :meth:`contract_errors` finds problems (check it first to answer 422).
        """
        from features.history import ProspectHistory

        problems = self.contract_errors(contract)
        if problems:
            raise ValueError(
                "inline leads do not fit the data contract: " + "; ".join(f"{e.field}: {e.message}" for e in problems)
            )
        leads = [item.inline for item in self.items if item.inline is not None]
        return ProspectHistory(
            contract=contract,
            leads=_leads_frame(leads, contract),
            activities=_activities_frame(leads),
            stage_history=_stages_frame(leads),
        )


def _times(values: Sequence[datetime]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(list(values), utc=True)).as_unit("us")


def _leads_frame(leads: Sequence[InlineLead], contract: Contract) -> pd.DataFrame:
    frame: dict[str, Any] = {
        "lead_id": pd.array([lead.lead_id for lead in leads], dtype="str"),
        "created_at": _times([lead.created_at for lead in leads]),
    }
    for attr in contract.attributes:
        raw = [lead.attributes.get(attr.name) for lead in leads]
        if attr.kind == "numeric":
            frame[attr.name] = np.array([np.nan if v is None else float(v) for v in raw], dtype=np.float64)
        else:
            frame[attr.name] = pd.array([None if v is None else str(v) for v in raw], dtype="str")
    return pd.DataFrame(frame)


def _activities_frame(leads: Sequence[InlineLead]) -> pd.DataFrame:
    rows = [(lead.lead_id, a) for lead in leads for a in lead.activities]
    rows.sort(key=lambda r: (r[0], r[1].occurred_at))
    return pd.DataFrame(
        {
            "lead_id": pd.array([lid for lid, _ in rows], dtype="str"),
            "occurred_at": _times([a.occurred_at for _, a in rows]),
            "activity_type": pd.array([a.activity_type for _, a in rows], dtype="str"),
            "channel": pd.array([a.channel for _, a in rows], dtype="str"),
            "campaign_id": pd.array([a.campaign_id for _, a in rows], dtype="str"),
            "topic": pd.array([a.topic for _, a in rows], dtype="str"),
            "value": np.array([np.nan if a.value is None else a.value for _, a in rows], dtype=np.float64),
        }
    )


def _stages_frame(leads: Sequence[InlineLead]) -> pd.DataFrame:
    rows = [(lead.lead_id, s) for lead in leads for s in lead.stage_history]
    rows.sort(key=lambda r: (r[0], r[1].entered_at))
    return pd.DataFrame(
        {
            "lead_id": pd.array([lid for lid, _ in rows], dtype="str"),
            "stage": pd.array([s.stage for _, s in rows], dtype="str"),
            "entered_at": _times([s.entered_at for _, s in rows]),
        }
    )


class ScoreResponse(BaseModel):
    """``POST /v1/score`` response: one prediction per requested lead, in request order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"predictions": [_PREDICTION_EXAMPLE]}]},
    )

    predictions: list[Prediction]


def predictions_json(records: Sequence[Mapping[str, Any]]) -> bytes:
    """The JSON of a :class:`ScoreResponse` from prediction records, without building the models.

    The records come from :meth:`serving.service.ScoredLeads.to_records`, already in the exact shape of
    :class:`Prediction` (plain str/int/float/bool/list/dict, aware UTC datetimes): validating them again per
    request would cost more than scoring a lead. The output equals
    ``ScoreResponse(predictions=records).model_dump_json()`` (UTC times end in ``Z``), which the tests check.
    """
    return orjson.dumps({"predictions": records}, option=orjson.OPT_UTC_Z)


# -- handoff queue -------------------------------------------------------------------------------
class HandoffQueuePage(BaseModel):
    """``GET /v1/handoff``: the current batch's handed-off leads, best (highest readiness) first."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [_PREDICTION_EXAMPLE],
                    "limit": 50,
                    "offset": 0,
                    "total": 1,
                    "scored_at": "2026-11-27T02:00:13Z",
                    "policy_version": "default-2",
                }
            ]
        },
    )

    items: list[Prediction]
    limit: int = Field(ge=1, le=MAX_QUEUE_LIMIT)
    offset: int = Field(ge=0)
    total: int = Field(ge=0, description="Handed-off leads in the current batch.")
    scored_at: UtcDatetime | None = Field(
        default=None, description="When the current batch was scored (null: none yet)."
    )
    policy_version: str | None = None


# -- model, health, errors -----------------------------------------------------------------------
class ModelInfo(BaseModel):
    """``GET /v1/model``: the model being served and the policy it is graded with."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "leadscore",
                    "version": "7",
                    "alias": "champion",
                    "run_id": "5c0b7e3e1f2a4d5b9c8d7e6f5a4b3c2d",
                    "trained_at": "2026-11-20T03:12:00Z",
                    "metrics": {"test_roc_auc": 0.861, "test_pr_auc": 0.412, "test_brier": 0.071},
                    "horizon_days": 90,
                    "policy_version": "default-2",
                    "loaded_at": "2026-11-27T06:00:02Z",
                }
            ]
        },
    )

    name: str
    version: str
    alias: str | None = None
    run_id: str | None = None
    trained_at: UtcDatetime | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    horizon_days: int | None = None
    policy_version: str
    loaded_at: UtcDatetime | None = None


class HealthResponse(BaseModel):
    """``GET /health``: the process is alive (no model needed, no authentication)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = "ok"


class ReadyResponse(BaseModel):
    """``GET /ready``: a model is loaded and requests can be scored."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "ready": True,
                    "model": {"name": "leadscore", "version": "7"},
                    "policy_version": "default-2",
                    "detail": None,
                },
                {
                    "ready": True,
                    "model": {"name": "leadscore", "version": "7"},
                    "policy_version": "default-2",
                    "detail": "champion version 8 failed to load; still serving version 7",
                },
            ]
        },
    )

    ready: bool
    model: ModelRef | None = None
    policy_version: str | None = None
    detail: str | None = Field(default=None, description="Why not ready, or a degraded-state warning.")


__all__ = [
    "API_VERSION",
    "DEFAULT_QUEUE_LIMIT",
    "FEEDBACK_OUTCOMES",
    "FUTURE_TOLERANCE",
    "HANDOFF_ID_PATTERN",
    "LEAD_ID_PATTERN",
    "MAX_ATTRIBUTES",
    "MAX_FEEDBACK_TEXT",
    "MAX_INLINE_ACTIVITIES",
    "MAX_INLINE_STAGES",
    "MAX_QUEUE_LIMIT",
    "MAX_QUEUE_OFFSET",
    "MAX_SCORE_BATCH",
    "NAME_PATTERN",
    "REASON_CODE_PATTERN",
    "ActionSuggestion",
    "ActivityIn",
    "AttributeValue",
    "ErrorBody",
    "ErrorCode",
    "ErrorResponse",
    "FeedbackRequest",
    "FeedbackResponse",
    "FieldError",
    "Grade",
    "HandoffDecision",
    "HandoffQueuePage",
    "HealthResponse",
    "InlineLead",
    "LeadId",
    "ModelInfo",
    "ModelRef",
    "Outcome",
    "Prediction",
    "ReadyResponse",
    "Reason",
    "Reasons",
    "ScoreItem",
    "ScoreRequest",
    "ScoreResponse",
    "StageEntryIn",
    "TrendLabel",
    "UtcDatetime",
    "error_response",
    "field_path",
    "predictions_json",
    "validation_error_response",
]
