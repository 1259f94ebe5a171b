"""``POST /v1/feedback``: sales' verdict on a handoff, and the stored record."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.schemas.base import (
    HANDOFF_ID_PATTERN,
    MAX_FEEDBACK_TEXT,
    REASON_CODE_PATTERN,
    LeadId,
    Outcome,
    UtcDatetime,
)


class FeedbackRequest(BaseModel):
    """``POST /v1/feedback``: sales accepted or rejected a handed-off lead.

    Idempotent per (``lead_id``, ``handoff_id``): sending the same feedback again returns the stored record;
    a different outcome, reason or text for the same handoff is a 409 conflict.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "lead_id": "L-000123",
                    "handoff_id": "3f1c9a0e5b2d4c6f8a7e9d1b0c2a4e6f",
                    "outcome": "rejected",
                    "reason_code": "no_budget",
                    "text": "Budget frozen until Q2; call back in March.",
                },
                {"lead_id": "L-000456", "handoff_id": "9b8e7d6c5a4f3e2d1c0b9a8f7e6d5c4b", "outcome": "accepted"},
            ],
            # what _reason_for_rejection enforces, stated in the schema: rejected needs a reason_code
            "anyOf": [
                {"properties": {"outcome": {"const": "accepted"}}},
                {
                    "properties": {"outcome": {"const": "rejected"}, "reason_code": {"type": "string"}},
                    "required": ["reason_code"],
                },
            ],
        },
    )

    lead_id: LeadId
    handoff_id: str = Field(pattern=HANDOFF_ID_PATTERN, description="From the prediction's handoff.handoff_id.")
    outcome: Outcome
    reason_code: str | None = Field(
        default=None,
        pattern=REASON_CODE_PATTERN,
        description="Short machine-readable reason (snake_case), e.g. no_budget, wrong_contact, not_ready. "
        "Required when the outcome is rejected.",
    )
    text: str | None = Field(default=None, max_length=MAX_FEEDBACK_TEXT, description="Free text from sales.")

    @model_validator(mode="after")
    def _reason_for_rejection(self) -> FeedbackRequest:
        if self.outcome == "rejected" and self.reason_code is None:
            raise ValueError("reason_code is required when the outcome is 'rejected'")
        return self


class FeedbackResponse(BaseModel):
    """The stored feedback; ``created`` is false when the same feedback had already been recorded."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "feedback_id": 42,
                    "lead_id": "L-000123",
                    "handoff_id": "3f1c9a0e5b2d4c6f8a7e9d1b0c2a4e6f",
                    "outcome": "rejected",
                    "reason_code": "no_budget",
                    "text": "Budget frozen until Q2; call back in March.",
                    "recorded_at": "2026-11-27T10:12:45Z",
                    "created": True,
                }
            ]
        },
    )

    feedback_id: int
    lead_id: str
    handoff_id: str
    outcome: Outcome
    reason_code: str | None
    text: str | None
    recorded_at: UtcDatetime
    created: bool

    @classmethod
    def from_record(cls, record: Any) -> FeedbackResponse:
        """Build from ``serving.stores.FeedbackRecord``."""
        return cls(
            feedback_id=record.feedback_id,
            lead_id=record.lead_id,
            handoff_id=record.handoff_id,
            outcome=record.outcome,
            reason_code=record.reason_code,
            text=record.text,
            recorded_at=record.recorded_at,
            created=record.created,
        )
