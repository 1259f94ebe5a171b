"""Why a lead cannot be scored at ``as_of``: not yet created, converted, or closed (per-item results).

A lead is open at ``as_of`` when it was created before it and its latest stage entry at or before it is
not terminal (the rule of :func:`features.build.build_features`). :class:`LeadStates` indexes a history
once (numpy arrays per lead) so that explaining a refused lead costs a few array reads, less than
scoring it: a CRM that syncs all its leads sends mostly converted and closed ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from features.history import ProspectHistory

NotOpenReason = Literal["not_created", "converted", "closed"]


@dataclass(frozen=True)
class NotOpenState:
    """What a known lead is at ``as_of`` instead of open."""

    reason: NotOpenReason
    at: datetime  # created at (``not_created``), or when it entered its terminal stage
    stage: str | None  # the terminal stage (``converted``/``closed``), None for ``not_created``


def _us(values: pd.Series) -> np.ndarray:
    """Times as integer microseconds since the epoch (microseconds cover years 1-9999; nanoseconds stop at 1677)."""
    return pd.DatetimeIndex(values).as_unit("us").asi8


def _utc(us: int) -> datetime:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).replace(microsecond=0)


class LeadStates:
    """Creation time and stage entries of every lead of a history, for :meth:`not_open`."""

    def __init__(self, history: ProspectHistory) -> None:
        stages = history.contract.stages
        self._converted = stages.converted
        self._closed = set(stages.closed_negative)
        leads = history.leads
        self._created = dict(zip(leads["lead_id"].astype(str).tolist(), _us(leads["created_at"]).tolist(), strict=True))
        entries = history.stage_history
        self._entries: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if len(entries):
            order = np.lexsort((_us(entries["entered_at"]), entries["lead_id"].astype(str).to_numpy()))
            ids = entries["lead_id"].astype(str).to_numpy()[order]
            times = _us(entries["entered_at"])[order]
            names = entries["stage"].astype(str).to_numpy(dtype=object)[order]
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            ends = np.r_[starts[1:], len(ids)]
            for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
                self._entries[str(ids[s])] = (times[s:e], names[s:e])

    def __contains__(self, lead_id: object) -> bool:
        return lead_id in self._created

    def not_open(self, lead_id: str, as_of: pd.Timestamp) -> NotOpenState | None:
        """Why ``lead_id`` (a lead of the history) is not open at ``as_of``; None when it is open."""
        when = int(_us(pd.Series([as_of]))[0])
        created = self._created[lead_id]
        if created >= when:
            return NotOpenState("not_created", _utc(created), None)
        found = self._entries.get(lead_id)
        if found is None:
            return None
        times, names = found
        last = int(np.searchsorted(times, when, side="right")) - 1
        if last < 0:
            return None
        stage = str(names[last])
        if stage == self._converted:
            return NotOpenState("converted", _utc(int(times[last])), stage)
        if stage in self._closed:
            return NotOpenState("closed", _utc(int(times[last])), stage)
        return None

    def explain(self, lead_ids: Sequence[str], as_of: pd.Timestamp) -> dict[str, NotOpenState]:
        """:meth:`not_open` of each lead that is not open (leads that are open are left out)."""
        out: dict[str, NotOpenState] = {}
        for lead in lead_ids:
            state = self.not_open(lead, as_of)
            if state is not None:
                out[lead] = state
        return out


@dataclass
class EachScored:
    """``ScoringService.score_each``: per lead, a prediction record, why it is not open, or unknown."""

    as_of: datetime
    scored: dict[str, dict[str, Any]]
    not_open: dict[str, tuple[NotOpenState | None, float | None]]  # state, latest stored score
    unknown: list[str]
