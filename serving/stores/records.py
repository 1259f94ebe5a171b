"""What the score store returns: batches, scores, previous scores, handoff pages and feedback."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


# -- records ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchInfo:
    """A written batch."""

    batch_id: int
    scored_at: datetime
    as_of: datetime
    model_name: str
    model_version: str
    policy_version: str
    n_scores: int
    n_handoffs: int
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class ScoreRecord:
    """One stored score (field names match ``serving.schemas.Prediction.from_record``)."""

    lead_id: str
    readiness: float
    score: int
    grade: str
    stage: str | None
    stage_probabilities: dict[str, float]
    reasons: dict[str, Any] | None
    needs: list[str] | None
    next_best_action: dict[str, Any] | None
    trend: str
    handoff: bool
    handoff_rule: str
    handoff_id: str | None
    batch_id: int
    is_current: bool
    model_name: str
    model_version: str
    policy_version: str
    scored_at: datetime
    as_of: datetime


@dataclass(frozen=True)
class PreviousScore:
    """A lead's most recent stored score (input to trends)."""

    score: int
    readiness: float
    grade: str
    scored_at: datetime
    batch_id: int


@dataclass(frozen=True)
class HandoffPage:
    """One page of the current handoff queue."""

    items: list[ScoreRecord]
    total: int
    limit: int
    offset: int
    batch: BatchInfo | None


@dataclass(frozen=True)
class FeedbackRecord:
    """Stored feedback; ``created`` is False when an identical earlier record was returned instead."""

    feedback_id: int
    lead_id: str
    handoff_id: str
    outcome: str
    reason_code: str | None
    text: str | None
    recorded_at: datetime
    created: bool
