"""Knobs of the synthetic prospect-history generator (``SimulatorConfig``)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SimulatorConfig(BaseModel):
    """Everything the simulator can be told, with defaults that give a realistic B2B funnel.

    Rates that depend on a lead's hidden fit are given for a lead of average fit (fit = 0); better-fit
    leads enter buying journeys more often, progress faster and win more often.

    Results depend on the seed *and* on every field here, including ``chunk_size`` (each chunk of leads
    draws from its own random stream), so keep ``chunk_size`` fixed when comparing runs.
    """

    model_config = ConfigDict(extra="forbid")

    # -- time span -------------------------------------------------------------------------
    start_date: dt.date = Field(default=dt.date(2024, 1, 1), description="first day of the data (UTC midnight)")
    days: int = Field(default=730, ge=28, le=3660, description="length of the span in days")

    # -- execution -------------------------------------------------------------------------
    chunk_size: int = Field(
        default=20_000, ge=100, le=1_000_000, description="leads simulated (and written) per chunk; fixes the RNG"
    )

    # -- lead arrival ----------------------------------------------------------------------
    lead_growth_per_year: float = Field(default=0.25, ge=-0.9, le=10.0, description="trend in new leads per day")
    revenue_missing_rate: float = Field(default=0.10, ge=0.0, le=0.9, description="share of missing revenue")

    # -- latent buying journeys ------------------------------------------------------------
    entry_hazard_per_week: float = Field(
        default=0.0036, gt=0.0, le=0.5, description="weekly chance a dormant lead starts a buying journey"
    )
    initial_in_market_rate: float = Field(
        default=0.06,
        ge=0.0,
        le=0.9,
        description="chance an average lead arrives already in a buying journey (higher for inbound sources)",
    )
    urgent_need_share: float = Field(
        default=0.25, ge=0.0, le=1.0, description="share of journeys that skip research (urgent needs)"
    )
    research_weeks: float = Field(default=2.0, ge=1.0, le=52.0, description="mean weeks in the research phase")
    evaluation_weeks: float = Field(default=3.0, ge=1.0, le=52.0, description="mean weeks in evaluation")
    decision_weeks: float = Field(default=4.0, ge=1.0, le=52.0, description="mean weeks in the decision phase")
    research_abandon_share: float = Field(default=0.30, ge=0.0, lt=1.0, description="journeys dropped in research")
    evaluation_abandon_share: float = Field(default=0.35, ge=0.0, lt=1.0, description="dropped in evaluation")
    decision_win_share: float = Field(default=0.30, gt=0.0, lt=1.0, description="decisions won (average fit)")
    fit_strength: float = Field(
        default=1.0, ge=0.0, le=5.0, description="how strongly hidden fit drives journeys and wins (0 = not at all)"
    )
    disqualify_hazard_per_week: float = Field(
        default=0.03, ge=0.0, le=0.5, description="weekly chance sales disqualifies a dormant, poor-fit lead"
    )
    disqualify_after_weeks: int = Field(default=6, ge=0, le=104, description="no disqualification before this age")

    # -- campaigns -------------------------------------------------------------------------
    n_campaigns: int = Field(default=24, ge=0, le=500, description="campaigns and events over the span")
    campaign_effect_scale: float = Field(
        default=1.0, ge=0.0, le=20.0, description="multiplies every campaign's true effect (0 = placebo world)"
    )
    campaign_zero_effect_share: float = Field(
        default=0.3, ge=0.0, le=1.0, description="share of campaigns with no true effect"
    )

    # -- observed activity -----------------------------------------------------------------
    background_activities_per_week: float = Field(
        default=0.75, ge=0.0, le=50.0, description="newsletter opens and random visits, for every lead"
    )
    dormant_intent_per_week: float = Field(
        default=0.15, ge=0.0, le=50.0, description="intent-like activity of leads not in a journey (noise)"
    )
    journey_intent_per_week: float = Field(
        default=2.4, ge=0.0, le=100.0, description="intent activity per week in a journey (research phase)"
    )
    loudness_shape: float = Field(
        default=1.1, gt=0.05, le=100.0, description="gamma shape of per-lead activity level (small = unequal)"
    )
    burstiness_shape: float = Field(
        default=1.5, gt=0.05, le=100.0, description="gamma shape of week-to-week activity noise"
    )
    value_missing_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="share of missing activity values")

    # -- ground truth ----------------------------------------------------------------------
    horizon_days: int = Field(default=90, ge=1, le=365, description="horizon of the true propensity")

    # -- behaviour drift (for testing monitoring) ---------------------------------------------
    drift_after: dt.date | None = Field(
        default=None,
        description="from this day on (UTC midnight) prospects engage differently: see process.py 'Drift'",
    )
    drift_strength: float = Field(
        default=1.0, gt=0.0, le=1.0, description="scales every drift probability (1 = the full shift)"
    )

    @field_validator("start_date", "drift_after", mode="before")
    @classmethod
    def _date_only(cls, value: object) -> object:
        if isinstance(value, dt.datetime):
            raise ValueError("start_date is a date (the span starts at UTC midnight), not a datetime")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorConfig:
        if self.start_date.year < 1971:
            raise ValueError(f"start_date {self.start_date} is before 1971")
        if self.drift_after is not None and not (self.start_date < self.drift_after < self.end.date()):
            raise ValueError(
                f"drift_after {self.drift_after} must fall inside the simulated span "
                f"({self.start_date} .. {self.end.date()}, exclusive)"
            )
        return self

    @property
    def drift_start(self) -> dt.datetime | None:
        """First instant of the drifted behaviour (UTC midnight of ``drift_after``), or None."""
        if self.drift_after is None:
            return None
        return dt.datetime.combine(self.drift_after, dt.time(0, 0), tzinfo=dt.UTC)

    @property
    def start(self) -> dt.datetime:
        """First instant of the span (UTC)."""
        return dt.datetime.combine(self.start_date, dt.time(0, 0), tzinfo=dt.UTC)

    @property
    def end(self) -> dt.datetime:
        """End of the span (exclusive, UTC): no event happens at or after it."""
        return self.start + dt.timedelta(days=self.days)
