"""Limits, patterns and field types shared by the API's request and response models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, ConfigDict, Field

API_VERSION = "v1"
MAX_SCORE_BATCH = 100
"""Leads per ``POST /v1/score`` request; larger jobs belong to the batch flow."""
MAX_INLINE_ACTIVITIES = 10_000
MAX_INLINE_STAGES = 100
MAX_ATTRIBUTES = 200
MAX_FEEDBACK_TEXT = 2_000
DEFAULT_QUEUE_LIMIT = 50
MAX_QUEUE_LIMIT = 500
MAX_QUEUE_OFFSET = 1_000_000_000
"""Largest ``offset`` of ``GET /v1/handoff`` (a larger integer does not fit the store's 64-bit column)."""
FUTURE_TOLERANCE = timedelta(minutes=5)
"""Clock skew allowed between a CRM and the service before an event counts as "in the future"."""

FEEDBACK_OUTCOMES: tuple[str, ...] = ("accepted", "rejected")
LEAD_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
REASON_CODE_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
HANDOFF_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Grade = Literal["A", "B", "C", "D"]
TrendLabel = Literal["improving", "steady", "declining", "new"]
Outcome = Literal["accepted", "rejected"]

_FORBID = ConfigDict(extra="forbid")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware")
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+12:16: before year 1 once in UTC
        raise ValueError("timestamp out of range once converted to UTC") from None


LeadId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=LEAD_ID_PATTERN, description="The CRM's lead identifier.")
]
UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
"""A timezone-aware timestamp (naive ones are rejected), normalised to UTC."""
