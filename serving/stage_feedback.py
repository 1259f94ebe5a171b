"""Sales verdicts read from the CRM's stage history, for handoffs no one gave feedback on.

Many CRMs never call ``POST /v1/feedback``, but their stage history says what sales did with a lead: a
handed-off lead that sales qualified moves on to the *accept stage* (``sql`` by default) or any later stage
of the funnel that is not a negative close; one sales threw back is closed negatively (``disqualified``,
``lost``). For each handoff without feedback whose lead was still before the accept stage (and open) when it
was handed off, the first such stage entry after the handoff and within ``within_days`` decides:

- an entry into the accept stage, a later stage of ``stages.order`` or the conversion stage: ``accepted``,
  recorded at that entry's time;
- an entry into a negative terminal stage (``stages.closed_negative``) first: ``rejected`` with reason code
  ``crm_<stage>`` (e.g. ``crm_disqualified``), recorded at that entry's time;
- neither within the window (or not yet observed): no verdict; the handoff stays without feedback.

A lead already at the accept stage or later (or closed) at the handoff gets no verdict: it was sales' already,
and a later close (a lost deal) is not sales turning the lead down.

Feedback already recorded (from the CRM through the API) is never overwritten; running this again stores
nothing new for handoffs that have a verdict. The verdicts are stored in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.contract import StageSpec
from features.history import ProspectHistory

DEFAULT_ACCEPT_STAGE = "sql"
DEFAULT_WITHIN_DAYS = 30


@dataclass(frozen=True)
class StageFeedbackSummary:
    """What :func:`record_stage_feedback` found and stored."""

    handoffs_without_feedback: int
    accepted: int
    rejected: int
    undecided: int
    stored: int
    accept_stage: str
    within_days: int

    def text(self) -> str:
        return (
            f"sales verdicts from the stage history ({self.accept_stage} or later = accepted, a negative close = "
            f"rejected, within {self.within_days} days of the handoff): {self.accepted:,} accepted, "
            f"{self.rejected:,} rejected, {self.undecided:,} without a verdict yet, of "
            f"{self.handoffs_without_feedback:,} handoffs without feedback; {self.stored:,} stored"
        )


CRM_REASON_PREFIX = "crm_"
"""Prefix of the rejection reason codes derived from the CRM's stage history (``crm_<stage>``)."""


def _reason_code(stage: str) -> str:
    code = CRM_REASON_PREFIX + re.sub(r"[^a-z0-9_]+", "_", stage.lower()).strip("_")
    return code[:64]


def accepting_stages(stages: StageSpec, accept_stage: str) -> list[str]:
    """The accept stage, every later stage of the funnel that is not a negative close, and the conversion stage.

    Raises:
        ValueError: ``accept_stage`` is not an open or converted stage of the contract (names the stages).
    """
    if accept_stage not in stages.order or accept_stage in stages.closed_negative:
        allowed = [s for s in stages.order if s not in stages.closed_negative]
        raise ValueError(
            f"accept stage {accept_stage!r} is not a stage of the contract's funnel that sales can accept into "
            f"(stages.order without the negative closes: {allowed}); pass --accept-stage with one of them"
        )
    later = stages.order[stages.order.index(accept_stage) :]
    return sorted({*[s for s in later if s not in stages.closed_negative], stages.converted}, key=stages.order.index)


def derive_verdicts(
    handoffs: pd.DataFrame,
    stage_history: pd.DataFrame,
    stages: StageSpec,
    *,
    accept_stage: str = DEFAULT_ACCEPT_STAGE,
    within_days: int = DEFAULT_WITHIN_DAYS,
) -> pd.DataFrame:
    """One verdict per handoff the stage history decides (see the module docstring).

    Args:
        handoffs: ``handoff_id``, ``lead_id``, ``handed_off_at`` (UTC).
        stage_history: ``lead_id``, ``stage``, ``entered_at`` (UTC), as validated.

    Returns:
        ``lead_id``, ``handoff_id``, ``outcome``, ``reason_code``, ``text`` (where the verdict came from),
        ``recorded_at``.
    """
    if within_days <= 0:
        raise ValueError(f"within_days must be positive, got {within_days}")
    accepting = set(accepting_stages(stages, accept_stage))
    deciding = stage_history.loc[
        stage_history["stage"].isin(accepting | set(stages.closed_negative)), ["lead_id", "stage", "entered_at"]
    ]
    columns = ["lead_id", "handoff_id", "outcome", "reason_code", "text", "recorded_at"]
    if handoffs.empty or deciding.empty:
        return pd.DataFrame(columns=columns)
    # A lead already at the accept stage or later (or closed) when it was handed off is in sales' hands, not a
    # lead sales still had to judge: its later entries (e.g. a lost deal) say nothing about the handoff.
    already = _stage_at_handoff(handoffs, stage_history, stages)
    judged = handoffs.loc[~already.isin([*accepting, *stages.closed_negative]).to_numpy()]
    pairs = judged[["handoff_id", "lead_id", "handed_off_at"]].merge(deciding, on="lead_id", how="inner")
    window = pd.Timedelta(days=within_days)
    in_window = (pairs["entered_at"] > pairs["handed_off_at"]) & (
        pairs["entered_at"] <= pairs["handed_off_at"] + window
    )
    pairs = pairs.loc[in_window]
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    # the first deciding entry per handoff; at equal times an acceptance wins (qualified, then closed)
    pairs = pairs.assign(_rejects=~pairs["stage"].isin(accepting))
    first = pairs.sort_values(["handoff_id", "entered_at", "_rejects"]).drop_duplicates("handoff_id", keep="first")
    outcome = np.where(first["_rejects"], "rejected", "accepted")
    reason: list[Any] = [_reason_code(s) if r else None for s, r in zip(first["stage"], first["_rejects"], strict=True)]
    return pd.DataFrame(
        {
            "lead_id": first["lead_id"].astype(str).to_numpy(),
            "handoff_id": first["handoff_id"].astype(str).to_numpy(),
            "outcome": outcome,
            "reason_code": reason,
            "text": [f"from the CRM stage history: entered {stage}" for stage in first["stage"]],
            "recorded_at": first["entered_at"].to_numpy(),
        }
    ).reset_index(drop=True)


def _stage_at_handoff(handoffs: pd.DataFrame, stage_history: pd.DataFrame, stages: StageSpec) -> pd.Series:
    """Each handoff's lead stage at the handoff: its last entry at or before ``handed_off_at`` (NA: none)."""
    if handoffs.empty or stage_history.empty:
        return pd.Series(pd.NA, index=handoffs.index, dtype="object")
    left = handoffs[["handoff_id", "lead_id", "handed_off_at"]].reset_index().sort_values("handed_off_at")
    right = stage_history[["lead_id", "stage", "entered_at"]].sort_values("entered_at")
    left["handed_off_at"] = left["handed_off_at"].astype("datetime64[us, UTC]")
    right = right.assign(entered_at=right["entered_at"].astype("datetime64[us, UTC]"))
    merged = pd.merge_asof(
        left, right, left_on="handed_off_at", right_on="entered_at", by="lead_id", direction="backward"
    )
    return merged.set_index("index")["stage"].reindex(handoffs.index).astype("object")


def record_stage_feedback(
    store: Any,
    history: ProspectHistory,
    *,
    accept_stage: str = DEFAULT_ACCEPT_STAGE,
    within_days: int = DEFAULT_WITHIN_DAYS,
) -> StageFeedbackSummary:
    """Derive verdicts for the store's handoffs without feedback and store them (one transaction)."""
    accepting_stages(history.contract.stages, accept_stage)  # a wrong stage name fails before any read
    open_handoffs = store.handoffs_without_feedback()
    verdicts = derive_verdicts(
        open_handoffs,
        history.stage_history,
        history.contract.stages,
        accept_stage=accept_stage,
        within_days=within_days,
    )
    stored = store.record_feedback_many(verdicts)
    accepted = int((verdicts["outcome"] == "accepted").sum())
    rejected = int((verdicts["outcome"] == "rejected").sum())
    return StageFeedbackSummary(
        handoffs_without_feedback=len(open_handoffs),
        accepted=accepted,
        rejected=rejected,
        undecided=len(open_handoffs) - accepted - rejected,
        stored=stored,
        accept_stage=accept_stage,
        within_days=within_days,
    )
