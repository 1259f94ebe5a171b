"""``POST /v2/score``: one result per requested lead (scored, not open, or unknown), in request order.

``/v1/score`` answers all-or-nothing: one converted lead in a batch of 50 turns the whole request into a
422. A CRM syncing all its leads sends mostly converted and closed ones, so ``/v2/score`` gives every lead
its own status and fails only a malformed request (bad JSON, a field out of range, inline data that does
not fit the data contract).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from serving.schemas import _PREDICTION_EXAMPLE, Prediction
from serving.schemas.base import UtcDatetime

ItemStatus = Literal["scored", "not_open", "unknown"]
NotOpenReason = Literal["not_created", "converted", "closed"]


class NotOpen(BaseModel):
    """Why a known lead was not scored: at ``as_of`` it was not created yet, had converted, or was closed."""

    model_config = ConfigDict(extra="forbid")

    reason: NotOpenReason = Field(
        description="not_created: created after as_of; converted: entered the converted stage; "
        "closed: entered a closed (negative) stage."
    )
    at: UtcDatetime | None = Field(
        description="When it was created (not_created) or entered that stage (converted, closed)."
    )
    stage: str | None = Field(default=None, description="The terminal stage it is in (converted, closed).")
    last_score: int | None = Field(
        default=None, ge=0, le=100, description="Its latest stored batch score (0-100), null if never scored."
    )


class ScoreResult(BaseModel):
    """The outcome for one requested lead; ``prediction`` is set when ``status`` is ``scored``."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="Position of the lead in the request's items.")
    lead_id: str
    status: ItemStatus = Field(
        description="scored: see prediction; not_open: see not_open; unknown: not in the service's prospect history."
    )
    prediction: Prediction | None = None
    not_open: NotOpen | None = None


class ResultCounts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scored: int = Field(ge=0)
    not_open: int = Field(ge=0)
    unknown: int = Field(ge=0)


_RESULTS_EXAMPLE: dict[str, Any] = {
    "results": [
        {"index": 0, "lead_id": _PREDICTION_EXAMPLE["lead_id"], "status": "scored", "prediction": _PREDICTION_EXAMPLE},
        {
            "index": 1,
            "lead_id": "L-000042",
            "status": "not_open",
            "not_open": {"reason": "converted", "at": "2026-09-14T10:02:00Z", "stage": "won", "last_score": 81},
        },
        {"index": 2, "lead_id": "L-999999", "status": "unknown"},
    ],
    "counts": {"scored": 1, "not_open": 1, "unknown": 1},
}


class ScoreResultsResponse(BaseModel):
    """``POST /v2/score`` response: ``results[i]`` answers ``items[i]``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_RESULTS_EXAMPLE]})

    results: list[ScoreResult]
    counts: ResultCounts


def results_json(results: Sequence[Mapping[str, Any]]) -> bytes:
    """The JSON of a :class:`ScoreResultsResponse` from result records (see ``predictions_json``)."""
    counts = {"scored": 0, "not_open": 0, "unknown": 0}
    for result in results:
        counts[result["status"]] += 1
    return orjson.dumps({"results": results, "counts": counts}, option=orjson.OPT_UTC_Z)
