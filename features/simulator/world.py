"""The global part of a simulation: calendar, lead arrivals per day and the campaign plan.

These are drawn once per (seed, config, n_leads) from their own random streams, before any chunk of
leads is simulated, so every chunk sees the same world whichever chunks run and in which order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from features.simulator import catalog as cat
from features.simulator.config import SimulatorConfig

SECONDS_PER_HOUR = 3_600
SECONDS_PER_DAY = 86_400
SECONDS_PER_WEEK = 7 * SECONDS_PER_DAY

# Random streams (SeedSequence spawn keys): one for the calendar, one for campaigns, one per chunk.
STREAM_CALENDAR = 1
STREAM_CAMPAIGNS = 2
STREAM_CHUNK = 3
STREAM_DRIFT = 4  # the behaviour-drift rewrite of observed activity (process.py 'Drift')

# Activity and sign-up volume by hour of day (UTC): Europe in the morning, the Americas in the
# afternoon/evening, a little Asia-Pacific at night.
_HOURS_AM = [0.35, 0.3, 0.3, 0.35, 0.45, 0.6, 0.8, 1.0, 1.2, 1.3, 1.3, 1.25]
_HOURS_PM = [1.2, 1.35, 1.5, 1.55, 1.45, 1.3, 1.1, 0.95, 0.85, 0.75, 0.6, 0.45]
HOUR_WEIGHTS = np.array([*_HOURS_AM, *_HOURS_PM])
# Monday .. Sunday.
WEEKDAY_ACTIVITY = np.array([1.0, 1.1, 1.1, 1.05, 0.85, 0.3, 0.3])
WEEKDAY_SIGNUPS = np.array([1.0, 1.08, 1.08, 1.02, 0.85, 0.28, 0.22])
# Seasonality by month: summer and December dips, strong Q1 and autumn.
MONTH_SIGNUPS = np.array([1.05, 1.1, 1.15, 1.05, 1.05, 0.95, 0.78, 0.72, 1.1, 1.15, 1.1, 0.7])
MONTH_BUYING = np.array([1.15, 1.1, 1.15, 1.05, 1.05, 0.95, 0.75, 0.75, 1.1, 1.15, 1.1, 0.6])
SIGNUP_DAY_NOISE_SD = 0.25

CAMPAIGN_KINDS = ("email", "webinar", "event", "paid_search", "social", "content_syndication")
KIND_EMAIL, KIND_WEBINAR, KIND_EVENT, KIND_PAID, KIND_SOCIAL, KIND_SYNDICATION = range(6)
_KIND_SHARES = np.array([0.34, 0.2, 0.16, 0.12, 0.08, 0.10])
_KIND_ACTIVITY = np.array(
    [cat.EMAIL_OPEN, cat.WEBINAR, cat.EVENT_ATTENDANCE, cat.WEB_VISIT, cat.WEB_VISIT, cat.CONTENT_DOWNLOAD]
)
_KIND_CHANNEL = np.array([cat.CH_EMAIL, cat.CH_WEBINAR, cat.CH_EVENT, cat.CH_PAID, cat.CH_SOCIAL, cat.CH_SYNDICATION])
# One-shot campaigns reach a lead at most about once; continuous ones (ads, syndication) every week.
_KIND_ONE_SHOT = np.array([True, True, True, False, False, False])
# Reach: chance that a targeted dormant lead engages (total for one-shot kinds, per week otherwise).
_KIND_REACH = {
    KIND_EMAIL: (0.14, 0.26),
    KIND_WEBINAR: (0.02, 0.05),
    KIND_EVENT: (0.03, 0.07),
    KIND_PAID: (0.004, 0.010),
    KIND_SOCIAL: (0.003, 0.008),
    KIND_SYNDICATION: (0.006, 0.015),
}
# Median true effect of campaigns that have one: chance that engaging with the campaign moves a lead
# of average fit one step on (a dormant lead starts a buying journey, a researching one starts
# evaluating, an evaluating one enters the decision phase).
_KIND_EFFECT = np.array([0.02, 0.12, 0.18, 0.04, 0.025, 0.06])
_KIND_TOPIC_SHARE = np.array([0.7, 0.95, 0.3, 0.8, 0.6, 1.0])


@dataclass(frozen=True)
class Campaigns:
    """The campaign plan, one entry per campaign (sorted by start, ids ``CMP001`` ...)."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    kind: np.ndarray  # int, index into CAMPAIGN_KINDS
    activity_type: np.ndarray  # int, index into ACTIVITY_TYPES
    channel: np.ndarray  # int, index into CHANNELS
    topic: np.ndarray  # int, index into TOPICS, -1 = no topic
    start_s: np.ndarray  # int64 epoch seconds, first instant
    end_s: np.ndarray  # int64 epoch seconds, exclusive
    reach: np.ndarray  # float
    one_shot: np.ndarray  # bool
    effect: np.ndarray  # float, true trigger probability at average fit (0 = no effect)
    target_industry: np.ndarray  # bool (n_campaigns, n_industries)
    target_country: np.ndarray  # bool (n_campaigns, n_countries)
    region: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class WeekCampaign:
    """One campaign's activity inside one week: its index, time window and base touch chance."""

    campaign: int
    lo_s: int
    hi_s: int
    base_reach: float


@dataclass(frozen=True)
class World:
    """Calendar, arrivals and campaigns shared by all chunks of one simulation."""

    config: SimulatorConfig
    seed: int
    n_leads: int
    start_s: int
    end_s: int
    n_weeks: int  # weeks whose start lies inside the span
    horizon_weeks: int  # weekly steps that cover the propensity horizon
    horizon_last_weight: float  # share of the last step's conversions that fall inside the horizon
    week_start_s: np.ndarray  # int64, n_weeks + horizon_weeks entries
    buying_season: np.ndarray  # float, same length
    week_cdf_knots_s: np.ndarray  # hour knots of one week (seconds from a week start)
    week_cdf: np.ndarray  # cumulative activity share at each knot (0 .. 1)
    day_cdf_knots_s: np.ndarray
    signup_day_cdf: np.ndarray
    leads_per_day: np.ndarray  # int64, n_days
    first_lead_of_day: np.ndarray  # int64, n_days (global lead index)
    event_on_day: np.ndarray  # int, campaign index or -1
    paid_on_day: np.ndarray
    social_on_day: np.ndarray
    campaigns: Campaigns
    week_campaigns: tuple[tuple[WeekCampaign, ...], ...]  # per week in the span

    @property
    def n_days(self) -> int:
        return self.config.days

    # -- time sampling -------------------------------------------------------------------
    def week_mass(self, lo_off: np.ndarray, hi_off: np.ndarray) -> np.ndarray:
        """Share of a week's activity that falls in [lo_off, hi_off) seconds after its start."""
        return np.interp(hi_off, self.week_cdf_knots_s, self.week_cdf) - np.interp(
            lo_off, self.week_cdf_knots_s, self.week_cdf
        )

    def sample_in_week(self, lo_off: np.ndarray, hi_off: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Offsets (float seconds from the week start) in [lo_off, hi_off), following the weekly profile."""
        c_lo = np.interp(lo_off, self.week_cdf_knots_s, self.week_cdf)
        c_hi = np.interp(hi_off, self.week_cdf_knots_s, self.week_cdf)
        off = np.interp(c_lo + u * (c_hi - c_lo), self.week_cdf, self.week_cdf_knots_s)
        # Guard the half-open interval against rounding at the top.
        return np.minimum(np.maximum(off, lo_off), np.nextafter(hi_off, -np.inf))


def _week_profile(start_weekday: int) -> tuple[np.ndarray, np.ndarray]:
    hours = np.arange(7 * 24)
    weekday = (start_weekday + hours // 24) % 7
    weights = WEEKDAY_ACTIVITY[weekday] * HOUR_WEIGHTS[hours % 24]
    cdf = np.concatenate([[0.0], np.cumsum(weights)])
    cdf /= cdf[-1]
    knots = np.arange(7 * 24 + 1, dtype=np.float64) * SECONDS_PER_HOUR
    return knots, cdf


def _day_profile() -> tuple[np.ndarray, np.ndarray]:
    cdf = np.concatenate([[0.0], np.cumsum(HOUR_WEIGHTS)])
    cdf /= cdf[-1]
    return np.arange(25, dtype=np.float64) * SECONDS_PER_HOUR, cdf


def _month_of(epoch_s: np.ndarray) -> np.ndarray:
    return (epoch_s.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64) % 12).astype(np.int64)


def _allocate(total: int, shares: np.ndarray) -> np.ndarray:
    """Split ``total`` into integer counts proportional to ``shares`` (largest remainders)."""
    raw = shares / shares.sum() * total
    counts = np.floor(raw).astype(np.int64)
    rest = total - counts.sum()
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[:rest]] += 1
    return counts


def _plan_campaigns(config: SimulatorConfig, rng: np.random.Generator, start_s: int) -> Campaigns:
    n = config.n_campaigns
    n_ind, n_cty = len(cat.INDUSTRIES), len(cat.COUNTRIES)
    kinds = np.repeat(np.arange(len(CAMPAIGN_KINDS)), _allocate(n, _KIND_SHARES))
    rng.shuffle(kinds)
    duration_days = np.empty(n, dtype=np.float64)
    for i, k in enumerate(kinds):
        duration_days[i] = {
            KIND_EMAIL: 4.0,
            KIND_WEBINAR: 75 / (24 * 60),
            KIND_EVENT: float(rng.integers(2, 4)),
            KIND_PAID: float(rng.integers(4, 9) * 7),
            KIND_SOCIAL: float(rng.integers(2, 7) * 7),
            KIND_SYNDICATION: float(rng.integers(3, 6) * 7),
        }[int(k)]
    # Start on a day inside the span, leaving room for the campaign and a first month of leads.
    first_day = min(28, config.days // 4)
    last_day = np.maximum(first_day + 1, config.days - np.ceil(duration_days).astype(np.int64) - 1)
    start_day = rng.integers(first_day, last_day)
    # Webinars start 15:00-17:00 UTC, emails go out 08:00-14:00 UTC, everything else at midnight.
    start_hour = np.where(
        kinds == KIND_WEBINAR,
        rng.integers(15, 18, n),
        np.where(kinds == KIND_EMAIL, rng.integers(8, 15, n), 0),
    )
    starts = start_s + start_day * SECONDS_PER_DAY + start_hour * SECONDS_PER_HOUR
    ends = starts + np.round(duration_days * SECONDS_PER_DAY).astype(np.int64)
    order = np.argsort(starts, kind="stable")

    topics = np.where(rng.random(n) < _KIND_TOPIC_SHARE[kinds], rng.integers(0, len(cat.TOPICS), n), -1)
    reach = np.array([rng.uniform(*_KIND_REACH[int(k)]) for k in kinds])
    effect = _KIND_EFFECT[kinds] * rng.lognormal(0.0, 0.45, n)
    n_zero = round(config.campaign_zero_effect_share * n)
    effect[rng.permutation(n)[:n_zero]] = 0.0
    effect = np.minimum(effect * config.campaign_effect_scale, 0.9)

    target_ind = np.ones((n, n_ind), dtype=bool)
    target_cty = np.ones((n, n_cty), dtype=bool)
    regions: list[str] = []
    region_names = list(cat.REGIONS)
    for i in range(n):
        if rng.random() < 0.4:
            chosen = rng.choice(n_ind, size=int(rng.integers(2, 5)), replace=False)
            target_ind[i] = False
            target_ind[i, chosen] = True
        region = "global"
        if kinds[i] == KIND_EVENT or rng.random() < 0.15:
            region = region_names[int(rng.choice(len(region_names), p=[0.45, 0.35, 0.15, 0.05]))]
            target_cty[i] = np.isin(np.array(cat.COUNTRIES), cat.REGIONS[region])
        regions.append(region)

    def name(i: int) -> str:
        when = np.datetime64(int(starts[i]), "s").astype("datetime64[D]")
        what = cat.TOPICS[topics[i]] if topics[i] >= 0 else "general"
        where = "" if regions[i] == "global" else f" ({regions[i]})"
        return f"{when} {what} {CAMPAIGN_KINDS[kinds[i]]}{where}"

    return Campaigns(
        ids=tuple(f"CMP{j + 1:03d}" for j in range(n)),
        names=tuple(name(int(i)) for i in order),
        kind=kinds[order],
        activity_type=_KIND_ACTIVITY[kinds][order],
        channel=_KIND_CHANNEL[kinds][order],
        topic=topics[order],
        start_s=starts[order].astype(np.int64),
        end_s=ends[order].astype(np.int64),
        reach=reach[order],
        one_shot=_KIND_ONE_SHOT[kinds][order],
        effect=effect[order],
        target_industry=target_ind[order],
        target_country=target_cty[order],
        region=tuple(regions[int(i)] for i in order),
    )


def _week_campaigns(campaigns: Campaigns, week_start_s: np.ndarray, n_weeks: int, end_s: int) -> tuple:
    per_week: list[list[WeekCampaign]] = [[] for _ in range(n_weeks)]
    for c in range(len(campaigns)):
        c_lo, c_hi = int(campaigns.start_s[c]), min(int(campaigns.end_s[c]), end_s)
        length = c_hi - c_lo
        if length <= 0:
            continue
        for t in range(n_weeks):
            ws = int(week_start_s[t])
            lo, hi = max(c_lo, ws), min(c_hi, ws + SECONDS_PER_WEEK)
            if hi <= lo:
                continue
            share = (hi - lo) / (int(campaigns.end_s[c]) - c_lo if campaigns.one_shot[c] else SECONDS_PER_WEEK)
            per_week[t].append(WeekCampaign(c, lo, hi, float(campaigns.reach[c] * share)))
    return tuple(tuple(w) for w in per_week)


def _campaign_on_day(campaigns: Campaigns, kind: int, start_s: int, n_days: int) -> np.ndarray:
    on_day = np.full(n_days, -1, dtype=np.int64)
    for c in np.flatnonzero(campaigns.kind == kind)[::-1]:  # earlier campaigns win overlaps
        first = max(0, (int(campaigns.start_s[c]) - start_s) // SECONDS_PER_DAY)
        last = min(n_days, -(-(int(campaigns.end_s[c]) - start_s) // SECONDS_PER_DAY))
        on_day[first:last] = c
    return on_day


def build_world(config: SimulatorConfig, seed: int, n_leads: int) -> World:
    """Draw the calendar, arrivals and campaigns for a simulation of ``n_leads`` leads."""
    start_s = int(config.start.timestamp())
    end_s = int(config.end.timestamp())
    n_days = config.days
    n_weeks = math.ceil(n_days / 7)
    horizon_weeks = math.ceil(config.horizon_days / 7)
    last_weight = (config.horizon_days - 7 * (horizon_weeks - 1)) / 7
    week_start_s = start_s + np.arange(n_weeks + horizon_weeks, dtype=np.int64) * SECONDS_PER_WEEK
    mid_week = week_start_s + SECONDS_PER_WEEK // 2
    buying_season = MONTH_BUYING[_month_of(mid_week)]

    campaigns = _plan_campaigns(
        config, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STREAM_CAMPAIGNS,))), start_s
    )
    event_on_day = _campaign_on_day(campaigns, KIND_EVENT, start_s, n_days)

    # Lead arrivals per day: weekday and monthly seasonality, growth, trade-show spikes, noise.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STREAM_CALENDAR,)))
    day_s = start_s + np.arange(n_days, dtype=np.int64) * SECONDS_PER_DAY
    weekday = ((day_s // SECONDS_PER_DAY) + 3) % 7  # 1970-01-01 was a Thursday
    weights = WEEKDAY_SIGNUPS[weekday] * MONTH_SIGNUPS[_month_of(day_s)]
    weights = weights * (1.0 + config.lead_growth_per_year) ** (np.arange(n_days) / 365.0)
    day_of_month = day_s.astype("datetime64[s]").astype("datetime64[D]")
    md = (day_of_month - day_of_month.astype("datetime64[M]")).astype(np.int64) + 1
    month = _month_of(day_s)
    holiday = ((month == 11) & (md >= 24)) | ((month == 0) & (md <= 1))
    weights = np.where(holiday, weights * 0.25, weights)
    weights = np.where(event_on_day >= 0, weights * 1.6, weights)
    weights = weights * rng.lognormal(0.0, SIGNUP_DAY_NOISE_SD, n_days)
    leads_per_day = rng.multinomial(n_leads, weights / weights.sum()).astype(np.int64)
    first_lead = np.concatenate([[0], np.cumsum(leads_per_day)[:-1]]).astype(np.int64)

    knots, cdf = _week_profile(int((start_s // SECONDS_PER_DAY + 3) % 7))
    day_knots, day_cdf = _day_profile()
    return World(
        config=config,
        seed=seed,
        n_leads=n_leads,
        start_s=start_s,
        end_s=end_s,
        n_weeks=n_weeks,
        horizon_weeks=horizon_weeks,
        horizon_last_weight=last_weight,
        week_start_s=week_start_s,
        buying_season=buying_season,
        week_cdf_knots_s=knots,
        week_cdf=cdf,
        day_cdf_knots_s=day_knots,
        signup_day_cdf=day_cdf,
        leads_per_day=leads_per_day,
        first_lead_of_day=first_lead,
        event_on_day=event_on_day,
        paid_on_day=_campaign_on_day(campaigns, KIND_PAID, start_s, n_days),
        social_on_day=_campaign_on_day(campaigns, KIND_SOCIAL, start_s, n_days),
        campaigns=campaigns,
        week_campaigns=_week_campaigns(campaigns, week_start_s, n_weeks, end_s),
    )
