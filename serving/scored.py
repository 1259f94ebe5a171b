""":class:`ScoredLeads`: one scoring pass, column-wise, and how it becomes API records and store rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serving.schemas import ModelRef, Prediction

if TYPE_CHECKING:
    pass


@dataclass
class ScoredLeads:
    """One scoring pass, column-wise (row ``i`` of every array is lead ``lead_ids[i]``)."""

    lead_ids: np.ndarray
    readiness: np.ndarray
    score: np.ndarray
    grade: np.ndarray
    stage: np.ndarray
    stage_proba: np.ndarray
    stage_labels: list[str]
    trend: np.ndarray
    previous_score: np.ndarray
    handoff: np.ndarray
    handoff_rule: np.ndarray
    explained: np.ndarray
    reasons: list[dict[str, Any] | None]
    needs: list[list[str]]
    next_best_action: list[dict[str, Any] | None]
    as_of: list[datetime | None]
    scored_at: datetime
    model: ModelRef
    policy_version: str
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lead_ids)

    def stage_probabilities(self) -> list[dict[str, float]]:
        labels = self.stage_labels
        return [dict(zip(labels, row, strict=True)) for row in self.stage_proba.tolist()]

    def to_store_frame(self) -> pd.DataFrame:
        """The frame :meth:`serving.stores.ScoreStore.write_batch` takes."""
        return pd.DataFrame(
            {
                "lead_id": self.lead_ids.astype(object),
                "readiness": self.readiness,
                "score": self.score,
                "grade": self.grade.astype(object),
                "stage": self.stage.astype(object),
                "stage_probabilities": self.stage_probabilities(),
                "trend": self.trend,
                "handoff": self.handoff,
                "handoff_rule": self.handoff_rule,
                "reasons": self.reasons,
                "needs": self.needs,
                "next_best_action": self.next_best_action,
            }
        )

    def to_records(self) -> list[dict[str, Any]]:
        """Plain JSON-able dicts shaped like :class:`~serving.schemas.Prediction` (handoff_id empty)."""
        probs = self.stage_probabilities()
        model = self.model.model_dump()
        out = []
        for i in range(len(self)):
            as_of = self.as_of[i]
            out.append(
                {
                    "lead_id": str(self.lead_ids[i]),
                    "readiness": float(self.readiness[i]),
                    "score": int(self.score[i]),
                    "grade": str(self.grade[i]),
                    "stage": None if self.stage[i] is None else str(self.stage[i]),
                    "stage_probabilities": probs[i],
                    "reasons": self.reasons[i],
                    "needs": self.needs[i],
                    "next_best_action": self.next_best_action[i],
                    "trend": str(self.trend[i]),
                    "handoff": {
                        "handoff": bool(self.handoff[i]),
                        "rule": str(self.handoff_rule[i]),
                        "handoff_id": None,
                    },
                    "model": dict(model),
                    "scored_at": self.scored_at,
                    "as_of": as_of,
                    "policy_version": self.policy_version,
                }
            )
        return out

    def to_predictions(self) -> list[Prediction]:
        """Validated :class:`~serving.schemas.Prediction` objects (the records are shaped for it)."""
        return [Prediction.model_validate(rec) for rec in self.to_records()]
