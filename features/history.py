"""Validated prospect history: the three contract tables in canonical dtypes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from features.contract import Contract


@dataclass(frozen=True)
class ProspectHistory:
    """The three tables of a data directory after validation.

    Canonical dtypes (what every consumer may rely on):

    - ``leads``: ``lead_id`` (str, unique), ``created_at`` (datetime64, UTC), then each declared
      attribute: categorical as str (missing = NA), numeric as float64 (missing = NaN).
    - ``activities``: ``lead_id`` (str), ``occurred_at`` (datetime64, UTC), ``activity_type``
      (str, one of ``contract.activity_types``), ``channel``, ``campaign_id``, ``topic`` (str or
      NA; ``topic`` is one of ``contract.topics`` when present), ``value`` (float64 >= 0 or NaN).
    - ``stage_history``: ``lead_id`` (str), ``stage`` (str, one of ``contract.stages.order``),
      ``entered_at`` (datetime64, UTC).

    Every event belongs to a known lead and happens at or after that lead's creation.
    """

    contract: Contract
    leads: pd.DataFrame
    activities: pd.DataFrame
    stage_history: pd.DataFrame

    def of_leads(self, lead_ids: Iterable[str]) -> ProspectHistory:
        """The same history restricted to ``lead_ids`` (rows keep their order; unknown ids are ignored)."""
        wanted = pd.Index(list(lead_ids), dtype=object)

        def keep(frame: pd.DataFrame) -> pd.DataFrame:
            return frame[frame["lead_id"].isin(wanted)].reset_index(drop=True)

        return ProspectHistory(
            contract=self.contract,
            leads=keep(self.leads),
            activities=keep(self.activities),
            stage_history=keep(self.stage_history),
        )

    @property
    def span(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Earliest and latest timestamp over all three tables."""
        starts = [self.leads["created_at"].min()]
        ends = [self.leads["created_at"].max()]
        for df, col in ((self.activities, "occurred_at"), (self.stage_history, "entered_at")):
            if len(df):
                starts.append(df[col].min())
                ends.append(df[col].max())
        return min(starts), max(ends)
