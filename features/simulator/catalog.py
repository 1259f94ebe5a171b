"""Fixed vocabularies and coefficients of the simulated world.

Everything here is a constant of the generating process (not random, not configurable): the
attribute categories and their frequencies, how the hidden firmographic *fit* is made from them,
which needs (topics) each industry tends to have, the latent phases and how each phase shows up in
observed activity. Arrays are indexed by the position of a value in its tuple.
"""

from __future__ import annotations

import numpy as np

# -- static lead attributes ---------------------------------------------------------------------
SOURCES = ("organic", "paid_search", "social", "referral", "event", "partner", "outbound")
SOURCE_WEIGHTS = np.array([0.22, 0.15, 0.09, 0.06, 0.04, 0.07, 0.37])
SOURCE_FIT = np.array([0.10, 0.0, -0.20, 0.35, 0.05, 0.25, -0.25])
# Log-odds shift of arriving already in a buying journey, by source (inbound leads often are).
SOURCE_IN_MARKET = np.array([0.45, 0.25, -0.30, 0.95, -0.10, 0.75, -1.50])
SRC_ORGANIC, SRC_PAID, SRC_SOCIAL, SRC_REFERRAL, SRC_EVENT, SRC_PARTNER, SRC_OUTBOUND = range(7)

INDUSTRIES = (
    "software",
    "financial_services",
    "healthcare",
    "manufacturing",
    "retail",
    "education",
    "government",
    "media",
    "logistics",
    "energy",
)
INDUSTRY_WEIGHTS = np.array([0.18, 0.12, 0.11, 0.12, 0.10, 0.07, 0.06, 0.08, 0.08, 0.08])
INDUSTRY_FIT = np.array([0.50, 0.35, 0.20, 0.10, 0.0, -0.50, -0.30, -0.15, 0.05, 0.15])
# Positive: the industry has larger companies than average.
INDUSTRY_SIZE_TILT = np.array([-0.2, 0.3, 0.2, 0.2, 0.0, 0.0, 0.5, -0.3, 0.1, 0.4])
IND_SOFTWARE, IND_FINANCE, IND_HEALTH, IND_RETAIL, IND_EDUCATION, IND_GOVERNMENT, IND_MEDIA = 0, 1, 2, 4, 5, 6, 7
IND_ENERGY = 9

COMPANY_SIZES = ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+")
COMPANY_SIZE_WEIGHTS = np.array([0.20, 0.24, 0.21, 0.17, 0.10, 0.08])
COMPANY_SIZE_FIT = np.array([-0.6, -0.2, 0.15, 0.3, 0.2, 0.1])
_SIZE_TILT_DIRECTION = np.array([-1.0, -0.5, 0.0, 0.5, 1.0, 1.2])
# Median annual revenue (million USD) by company size; revenue is lognormal around it.
COMPANY_SIZE_REVENUE_MUSD = np.array([0.8, 5.0, 25.0, 120.0, 700.0, 4000.0])
REVENUE_SIGMA = 0.8

COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "CA", "AU", "IN", "BR", "JP")
COUNTRY_WEIGHTS = np.array([0.33, 0.10, 0.09, 0.06, 0.04, 0.04, 0.04, 0.06, 0.05, 0.08, 0.05, 0.06])
COUNTRY_FIT = np.array([0.15, 0.15, 0.15, 0.05, 0.10, -0.10, -0.10, 0.10, 0.05, -0.35, -0.30, -0.10])
# Trade shows are regional: which countries an event in each region draws from.
REGIONS = {
    "north_america": ("US", "CA"),
    "europe": ("GB", "DE", "FR", "NL", "ES", "IT"),
    "apac": ("AU", "IN", "JP"),
    "latam": ("BR",),
}

SENIORITIES = ("individual", "manager", "director", "vp", "c_level")
SENIORITY_WEIGHTS = np.array([0.36, 0.30, 0.17, 0.10, 0.07])
SENIORITY_FIT = np.array([-0.35, 0.0, 0.30, 0.40, 0.15])
# Small companies have more founders/executives filling in forms, large ones more individuals.
SENIORITY_SIZE_TILT = np.array(
    [  # individual, manager, director, vp, c_level
        [-0.4, -0.2, -0.2, 0.3, 1.4],  # 1-10
        [-0.2, -0.1, 0.0, 0.3, 0.9],  # 11-50
        [0.0, 0.0, 0.0, 0.0, 0.0],  # 51-200
        [0.1, 0.1, 0.0, -0.1, -0.5],  # 201-1000
        [0.2, 0.1, 0.0, -0.2, -0.8],  # 1001-5000
        [0.3, 0.1, 0.0, -0.3, -1.0],  # 5000+
    ]
)
SEN_INDIVIDUAL, SEN_MANAGER, SEN_DIRECTOR, SEN_VP, SEN_CLEVEL = range(5)
# Executives browse less themselves; individuals more.
SENIORITY_LOUDNESS = np.array([1.25, 1.1, 0.9, 0.8, 0.7])

ATTRIBUTES = ("source", "industry", "company_size", "country", "job_seniority", "annual_revenue_musd")
ATTRIBUTE_DESCRIPTIONS = {
    "source": "channel the lead came in through",
    "industry": "industry of the lead's company",
    "company_size": "employee-count bucket of the company",
    "country": "ISO 3166 country code of the company",
    "job_seniority": "seniority of the contact",
    "annual_revenue_musd": "annual revenue of the company in million USD (missing when unknown)",
}


def size_logits() -> np.ndarray:
    """Company-size log-weights per industry: shape (n_industries, n_sizes)."""
    return np.log(COMPANY_SIZE_WEIGHTS)[None, :] + INDUSTRY_SIZE_TILT[:, None] * _SIZE_TILT_DIRECTION[None, :]


def seniority_logits() -> np.ndarray:
    """Seniority log-weights per company size: shape (n_sizes, n_seniorities)."""
    return np.log(SENIORITY_WEIGHTS)[None, :] + SENIORITY_SIZE_TILT


def firmographic_fit(
    source: np.ndarray,
    industry: np.ndarray,
    size: np.ndarray,
    country: np.ndarray,
    seniority: np.ndarray,
    revenue_musd: np.ndarray,
) -> np.ndarray:
    """The systematic part of a lead's hidden fit (before lead-level noise).

    Modest main effects plus interactions that a linear model on one-hot attributes cannot
    represent: founders of small companies buy (c-level x small), executives of huge companies are
    rarely genuine leads (c-level x 5000+), enterprises only need the product in regulated or
    asset-heavy industries (industry x large), digital-native industries buy as small/mid-sized
    companies, small schools cannot afford it, software directors/VPs are champions, outbound works
    in the core markets only (source x country), and revenue has a sweet spot (log-quadratic).
    """
    fit = SOURCE_FIT[source] + INDUSTRY_FIT[industry] + COMPANY_SIZE_FIT[size] + COUNTRY_FIT[country]
    fit = fit + SENIORITY_FIT[seniority]
    small = size <= 1
    large = size >= 4
    regulated = (industry == IND_FINANCE) | (industry == IND_HEALTH) | (industry == IND_GOVERNMENT)
    regulated |= industry == IND_ENERGY
    digital = (industry == IND_SOFTWARE) | (industry == IND_MEDIA) | (industry == IND_RETAIL)
    fit = fit + 1.0 * ((seniority == SEN_CLEVEL) & small)
    fit = fit - 1.1 * ((seniority == SEN_CLEVEL) & (size == 5))
    fit = fit + np.where(large, np.where(regulated, 0.8, -0.6), 0.0)
    fit = fit + 0.5 * (digital & ((size == 1) | (size == 2)))
    fit = fit - 0.8 * ((industry == IND_EDUCATION) & (size <= 2))
    fit = fit + 0.6 * ((industry == IND_SOFTWARE) & ((seniority == SEN_DIRECTOR) | (seniority == SEN_VP)))
    core_market = (country == 0) | (country == 1)  # US, GB
    fit = fit + np.where(source == SRC_OUTBOUND, np.where(core_market, 0.35, -0.45), 0.0)
    fit = fit - 0.5 * ((source == SRC_OUTBOUND) & (seniority == SEN_INDIVIDUAL))
    log_rev = np.log(revenue_musd)
    fit = fit + 0.9 * np.exp(-(((log_rev - np.log(60.0)) / 1.1) ** 2)) - 0.4
    # Centre (measured once on a large sample) so that fit = 0 is an average lead.
    return fit - FIT_CENTRE


FIT_CENTRE = -0.07
FIT_NOISE_SD = 0.55

# -- needs (topics) -----------------------------------------------------------------------------
TOPICS = ("analytics", "security", "cloud", "integration", "automation")
TOPIC_BY_INDUSTRY = np.array(
    [
        [0.25, 0.15, 0.30, 0.20, 0.10],  # software
        [0.20, 0.45, 0.10, 0.15, 0.10],  # financial_services
        [0.20, 0.40, 0.15, 0.15, 0.10],  # healthcare
        [0.15, 0.10, 0.15, 0.25, 0.35],  # manufacturing
        [0.40, 0.10, 0.20, 0.15, 0.15],  # retail
        [0.25, 0.20, 0.30, 0.15, 0.10],  # education
        [0.15, 0.40, 0.20, 0.15, 0.10],  # government
        [0.40, 0.10, 0.25, 0.10, 0.15],  # media
        [0.20, 0.10, 0.15, 0.25, 0.30],  # logistics
        [0.20, 0.20, 0.15, 0.15, 0.30],  # energy
    ]
)

# -- latent phases ------------------------------------------------------------------------------
# The hidden state of a lead at the start of each week. DORMANT leads are not buying; a buying
# journey runs RESEARCH -> EVALUATION -> DECISION and ends WON or LOST, or fizzles out into
# NO_DECISION (absorbing within the span: the need went away or was met elsewhere; the lead stays
# open in the CRM). DISQUALIFIED is sales closing a dormant poor-fit lead.
PHASES = ("dormant", "research", "evaluation", "decision", "no_decision", "won", "lost", "disqualified")
DORMANT, RESEARCH, EVALUATION, DECISION, NO_DECISION, WON, LOST, DISQUALIFIED = range(8)
N_PHASES = len(PHASES)
CLOSED_PHASES = (WON, LOST, DISQUALIFIED)

# -- activities ---------------------------------------------------------------------------------
ACTIVITY_TYPES = (
    "web_visit",
    "pricing_page_view",
    "content_download",
    "email_open",
    "email_click",
    "webinar",
    "event_attendance",
    "demo_request",
    "sales_call",
)
(
    WEB_VISIT,
    PRICING_VIEW,
    CONTENT_DOWNLOAD,
    EMAIL_OPEN,
    EMAIL_CLICK,
    WEBINAR,
    EVENT_ATTENDANCE,
    DEMO_REQUEST,
    SALES_CALL,
) = range(9)
N_TYPES = len(ACTIVITY_TYPES)

CHANNELS = (
    "organic",
    "direct",
    "paid_search",
    "social",
    "referral",
    "email",
    "webinar",
    "event",
    "content_syndication",
    "sales",
    "partner",
)
CH_ORGANIC, CH_DIRECT, CH_PAID, CH_SOCIAL, CH_REFERRAL, CH_EMAIL, CH_WEBINAR, CH_EVENT, CH_SYNDICATION = range(9)
CH_SALES, CH_PARTNER = 9, 10
# Traffic source of self-directed web activity (web visits, pricing views, downloads, demo forms).
WEB_CHANNEL_WEIGHTS = np.array([0.42, 0.28, 0.12, 0.08, 0.10])  # organic, direct, paid, social, referral

# Intent activity mix by phase at the start of the week (rows: PHASES; closed phases emit none).
# Columns follow ACTIVITY_TYPES. Dormant/no-decision leads still click around a little.
_INTENT_MIX = {
    DORMANT: [0.52, 0.06, 0.14, 0.06, 0.12, 0.02, 0.0, 0.006, 0.074],
    RESEARCH: [0.50, 0.08, 0.20, 0.05, 0.11, 0.03, 0.0, 0.01, 0.02],
    EVALUATION: [0.38, 0.15, 0.13, 0.05, 0.09, 0.04, 0.0, 0.06, 0.10],
    DECISION: [0.30, 0.14, 0.05, 0.07, 0.07, 0.02, 0.0, 0.03, 0.32],
    NO_DECISION: [0.52, 0.06, 0.14, 0.06, 0.12, 0.02, 0.0, 0.006, 0.074],
}
INTENT_TYPE_CUM = np.zeros((N_PHASES, N_TYPES))
for _phase, _mix in _INTENT_MIX.items():
    _p = np.asarray(_mix, dtype=float)
    INTENT_TYPE_CUM[_phase] = np.cumsum(_p / _p.sum())
INTENT_TYPE_CUM[:, -1] = 1.0
# Relative intent intensity by phase (multiplies journey_intent_per_week; dormant uses its own rate).
PHASE_INTENSITY = np.array([0.0, 1.0, 1.5, 1.6, 0.0, 0.0, 0.0, 0.0])
# Within a journey, activity builds up week by week (capped): the ramp towards a purchase.
RAMP_PER_WEEK = 0.08
RAMP_CAP = 1.6

# How likely a contacted lead engages with a campaign, relative to a dormant lead, by phase.
CAMPAIGN_ENGAGEMENT = np.array([1.0, 2.6, 3.2, 2.2, 1.0, 0.5, 0.4, 0.3])
CAMPAIGN_TOPIC_MATCH_BOOST = 1.8

# Share of topic-tagged activities that carry the lead's true need, by phase (else another topic).
TOPIC_FIDELITY = np.array([0.6, 0.75, 0.8, 0.85, 0.6, 0.6, 0.6, 0.6])
# Casual (background) reading is only loosely related to the need.
BACKGROUND_TOPIC_FIDELITY = 0.5
# Share of activities of each type that carry a topic at all (campaign touches use their own).
TOPIC_TAGGED = np.array([0.45, 0.85, 1.0, 0.0, 0.3, 1.0, 0.0, 0.9, 0.0])

# Marketing-automation scoring: points per activity type; a lead becomes an MQL when its points
# within one calendar week reach MQL_THRESHOLD.
MQL_POINTS = np.array([1, 3, 4, 0, 1, 6, 6, 12, 0], dtype=np.int16)
MQL_THRESHOLD = 10
