"""Per-item results of ``POST /v2/score``: every requested lead scored, explained as not open, or unknown.

The app checks the request first (malformed = 4xx for the whole request); here nothing a lead *is*
fails the request. Known leads go through ``score_each`` (one pass: the open ones scored, the others
looked up in :class:`serving.lead_states.LeadStates`); inline leads are featurised together and those the
feature build leaves out (closed by their own stage history) are explained from that history.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from serving.lead_states import EachScored, LeadStates, NotOpenState
from serving.schemas import ScoreRequest

if TYPE_CHECKING:
    from features.contract import Contract
    from features.history import ProspectHistory


class EachScorer(Protocol):
    def score_each(
        self, lead_ids: Sequence[str], as_of: datetime | None = None, *, explain: bool = True
    ) -> EachScored: ...

    def score_history(
        self,
        history: ProspectHistory,
        lead_ids: Sequence[str] | None = None,
        as_of: datetime | None = None,
        *,
        explain: bool = True,
        as_records: bool = False,
    ) -> Sequence[Any]: ...


def _not_open(state: NotOpenState | None, last_score: float | None) -> dict[str, Any]:
    if state is None:  # the feature build left it out without a terminal stage: report it as closed
        return {"reason": "closed", "at": None, "stage": None, "last_score": _whole(last_score)}
    return {"reason": state.reason, "at": state.at, "stage": state.stage, "last_score": _whole(last_score)}


def _whole(score: float | None) -> int | None:
    return None if score is None else round(score)


def score_items(scorer: EachScorer, body: ScoreRequest, contract: Contract | None) -> list[dict[str, Any]]:
    """Result records shaped like :class:`serving.schemas.results.ScoreResult`, in request order."""
    as_of = body.as_of.replace(microsecond=0) if body.as_of is not None else None
    results: dict[int, dict[str, Any]] = {}
    by_id = [(i, item.lead_id) for i, item in enumerate(body.items) if item.lead_id is not None]
    if by_id:
        each = scorer.score_each([lead for _, lead in by_id], as_of, explain=body.explain)
        unknown = set(each.unknown)
        for i, lead in by_id:
            if lead in each.scored:
                results[i] = {
                    "index": i,
                    "lead_id": lead,
                    "status": "scored",
                    "prediction": each.scored[lead],
                    "not_open": None,
                }
            elif lead in unknown:
                results[i] = {"index": i, "lead_id": lead, "status": "unknown", "prediction": None, "not_open": None}
            else:
                detail = _not_open(*each.not_open[lead])
                results[i] = {"index": i, "lead_id": lead, "status": "not_open", "prediction": None, "not_open": detail}
    inline = [(i, item.inline) for i, item in enumerate(body.items) if item.inline is not None]
    if inline:
        assert contract is not None  # the app refuses inline leads without a data contract
        history = body.inline_history(contract)
        when = as_of or datetime.now(UTC).replace(microsecond=0)
        states = LeadStates(history).explain([inl.lead_id for _, inl in inline], pd.Timestamp(when))
        open_ids = [inl.lead_id for _, inl in inline if inl.lead_id not in states]
        records = (
            scorer.score_history(history, open_ids, when, explain=body.explain, as_records=True) if open_ids else []
        )
        scored = {str(rec["lead_id"]): rec for rec in records}
        for i, inl in inline:
            if inl.lead_id in scored:
                record = scored[inl.lead_id]
                results[i] = {
                    "index": i,
                    "lead_id": inl.lead_id,
                    "status": "scored",
                    "prediction": record,
                    "not_open": None,
                }
            else:
                detail = _not_open(states.get(inl.lead_id), None)
                results[i] = {
                    "index": i,
                    "lead_id": inl.lead_id,
                    "status": "not_open",
                    "prediction": None,
                    "not_open": detail,
                }
    return [results[i] for i in range(len(body.items))]
