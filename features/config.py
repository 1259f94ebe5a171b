"""Modelling configuration for the point-in-time feature build (versioned YAML section)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class FeatureConfig(BaseModel):
    """How snapshots, features and labels are built.

    Lives under ``features:`` in the modelling config YAML.
    """

    model_config = ConfigDict(extra="forbid")

    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90], min_length=1)
    trend_window_days: int = Field(default=30, gt=0, description="recent window vs the window before it")
    horizon_days: int = Field(default=90, gt=0, description="converted = conversion within (as_of, as_of + horizon]")
    snapshot_every_days: int = Field(default=7, gt=0)
    # Some exports record outcomes only for part of their span (e.g. wins only from a given month): snapshots
    # outside that part would be labelled "not converted" by a gap in the recording, not by the leads.
    snapshot_start: dt.date | None = Field(
        default=None,
        description="first snapshot date (UTC) of the regular grid; default: one interval after the first lead",
    )
    snapshot_end: dt.date | None = Field(
        default=None, description="last snapshot date (UTC) of the regular grid; default: the end of the data"
    )

    @field_validator("windows_days")
    @classmethod
    def _positive_sorted(cls, values: list[int]) -> list[int]:
        if any(v <= 0 for v in values):
            raise ValueError(f"windows must be positive day counts, got {values}")
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate windows: {values}")
        return sorted(values)

    @model_validator(mode="after")
    def _range_ordered(self) -> FeatureConfig:
        if (
            self.snapshot_start is not None
            and self.snapshot_end is not None
            and self.snapshot_end < self.snapshot_start
        ):
            raise ValueError(f"snapshot_end ({self.snapshot_end}) is before snapshot_start ({self.snapshot_start})")
        return self
