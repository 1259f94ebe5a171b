"""What one simulated chunk of leads produced (numpy arrays), and the stage order it uses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NO_TIME = np.iinfo(np.int64).max  # "never" for int64 second times


@dataclass
class ChunkData:
    """Everything one chunk produced, as numpy arrays (local lead index ``0 .. n-1``)."""

    first_lead: int  # global index of local lead 0
    n: int
    # leads
    created_s: np.ndarray
    source: np.ndarray
    industry: np.ndarray
    company_size: np.ndarray
    country: np.ndarray
    seniority: np.ndarray
    revenue_observed: np.ndarray
    # ground truth per lead
    true_topic: np.ndarray
    fit: np.ndarray
    loudness: np.ndarray
    initial_phase: np.ndarray
    journey_start_s: np.ndarray
    journey_outcome: np.ndarray  # phase code of the journey's end, -1 none, RESEARCH = still going
    converted_s: np.ndarray
    lost_s: np.ndarray
    no_decision_s: np.ndarray
    disqualified_s: np.ndarray
    # activities (sorted by lead, time, type)
    act_lead: np.ndarray
    act_time_s: np.ndarray
    act_type: np.ndarray
    act_channel: np.ndarray
    act_campaign: np.ndarray  # -1 none
    act_topic: np.ndarray  # -1 none
    act_value: np.ndarray  # NaN missing
    # stage history (sorted by lead, funnel order)
    stage_lead: np.ndarray
    stage_code: np.ndarray  # index into the contract's stage order
    stage_time_s: np.ndarray
    # true propensity rows (sorted by lead, week)
    prop_lead: np.ndarray
    prop_week: np.ndarray
    prop_value: np.ndarray
    prop_phase: np.ndarray


STAGE_ORDER = ("new", "mql", "sql", "opportunity", "won", "lost", "disqualified")
ST_NEW, ST_MQL, ST_SQL, ST_OPP, ST_WON, ST_LOST, ST_DQ = range(7)
