"""A small seeded synthetic feature table with real signal, categoricals, many as_of dates and censoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.spec import FeatureSpec
from models.config import TrainConfig, parse_train_config

START = pd.Timestamp("2022-01-03", tz="UTC")
INDUSTRIES = ["software", "finance", "retail", "health", "manufacturing", "education"]
INDUSTRY_EFFECT = {
    "software": 0.8,
    "finance": 0.5,
    "retail": -0.3,
    "health": 0.0,
    "manufacturing": -0.5,
    "education": -0.8,
}
SIZES = ["small", "medium", "large"]
SIZE_EFFECT = {"small": -0.4, "medium": 0.0, "large": 0.5}


def make_feature_frame(
    n_leads: int = 400,
    n_dates: int = 40,
    every_days: int = 14,
    tail_days: int = 100,
    horizon: int = 90,
    seed: int = 0,
    interaction: bool = False,
    base_log_rate: float = -6.3,
) -> tuple[pd.DataFrame, FeatureSpec]:
    """Feature table shaped like ``features.build`` output, with a known conversion process.

    Each (lead, as_of) row has a latent intent ``z`` (lead-level plus per-snapshot noise); features are
    noisy views of it plus lead attributes. Time to conversion is exponential with log-rate
    ``base + 0.9 z + industry + size`` (and, with ``interaction``, ``+ 1.6 * sign(x1 * x2)`` that no
    additive model can represent). Labels follow the builder's definitions, including censoring:
    ``observed_days`` = days from as_of to the data end, ``days_to_conversion`` NaN unless the conversion
    falls inside the observed window, ``converted`` = conversion within the horizon *and* observed.
    """
    rng = np.random.default_rng(seed)
    dates = START + pd.to_timedelta(np.arange(n_dates) * every_days, unit="D")
    data_end = dates[-1] + pd.Timedelta(days=tail_days)
    lead_ids = np.array([f"L{i:05d}" for i in range(n_leads)], dtype=object)
    industry = rng.choice(INDUSTRIES, size=n_leads)
    size = rng.choice(SIZES, size=n_leads, p=[0.5, 0.3, 0.2])
    region = rng.choice(np.array(["emea", "amer", "apac", None], dtype=object), size=n_leads, p=[0.4, 0.35, 0.2, 0.05])
    employees = np.exp(rng.normal(4.0, 1.2, size=n_leads))
    intent = rng.normal(0.0, 1.0, size=n_leads)

    n = n_leads * n_dates
    lead_idx = np.tile(np.arange(n_leads), n_dates)
    date_idx = np.repeat(np.arange(n_dates), n_leads)
    z = intent[lead_idx] + rng.normal(0.0, 0.6, size=n)
    visits = rng.poisson(np.exp(0.3 + 0.7 * z))
    emails = rng.poisson(np.exp(1.0 + 0.3 * z))
    days_since = rng.exponential(20.0 * np.exp(-0.5 * z))
    days_since[rng.random(n) < 0.1] = np.nan
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    noise = rng.normal(size=(n, 3))

    log_rate = (
        base_log_rate
        + 0.9 * z
        + np.vectorize(INDUSTRY_EFFECT.get)(industry[lead_idx])
        + np.vectorize(SIZE_EFFECT.get)(size[lead_idx])
    )
    if interaction:
        log_rate = log_rate + 1.6 * np.sign(x1 * x2)
    time_to_conversion = rng.exponential(np.exp(-log_rate))

    as_of = dates[date_idx]
    observed = ((data_end - as_of) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
    seen = time_to_conversion <= observed
    df = pd.DataFrame(
        {
            "lead_id": lead_ids[lead_idx],
            "as_of": as_of,
            "industry": pd.array(industry[lead_idx], dtype="str"),
            "company_size": pd.Categorical(size[lead_idx], categories=SIZES),
            "region": pd.array(region[lead_idx], dtype="str"),
            "visits_30d": visits.astype(np.float32),
            "emails_90d": emails.astype(np.float32),
            "days_since_activity": days_since.astype(np.float32),
            "employees": employees[lead_idx].astype(np.float32),
            "x1": x1.astype(np.float32),
            "x2": x2.astype(np.float32),
            "noise_a": noise[:, 0].astype(np.float32),
            "noise_b": noise[:, 1].astype(np.float32),
            "noise_c": noise[:, 2].astype(np.float32),
            "converted": ((time_to_conversion <= horizon) & seen).astype(np.int8),
            "days_to_conversion": np.where(seen, time_to_conversion, np.nan),
            "observed_days": observed,
        }
    )
    spec = FeatureSpec(
        categorical=["industry", "company_size", "region"],
        numeric=[
            "visits_30d",
            "emails_90d",
            "days_since_activity",
            "employees",
            "x1",
            "x2",
            "noise_a",
            "noise_b",
            "noise_c",
        ],
        horizon_days=horizon,
    )
    return df, spec


def fast_config(**overrides: object) -> TrainConfig:
    """Defaults with few boosting rounds and small baselines, for fast tests."""
    # One thread: on a busy shared machine OpenMP spin-waiting makes 2 threads 20x slower on tiny data.
    params = {"min_data_in_leaf": 40, "num_threads": 1}
    raw: dict = {
        "readiness": {"num_boost_round": 80, "early_stopping_rounds": 10, "params": params},
        "stage": {"num_boost_round": 40, "early_stopping_rounds": 10, "params": params},
        "baselines": {"logistic": {"max_iter": 300}, "hist_gradient_boosting": {"max_iter": 60}},
        "evaluation": {"plots": False, "shap_sample_rows": 200},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_train_config(raw, source="fast test config")


@pytest.fixture(scope="session", autouse=True)
def _single_threaded_native_code():
    """scikit-learn's OpenMP/BLAS code on one thread (same reason as num_threads above)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session")
def feature_frame() -> tuple[pd.DataFrame, FeatureSpec]:
    return make_feature_frame()


@pytest.fixture(scope="session")
def long_feature_frame() -> tuple[pd.DataFrame, FeatureSpec]:
    """Long enough (60 dates every 14 days + 100 days) for a stage test set after a 365-day gap."""
    return make_feature_frame(n_leads=400, n_dates=60, seed=1)


@pytest.fixture(scope="session")
def trained(long_feature_frame):
    """One full training run (with plots) shared by the tests that only inspect its result."""
    from models.fit.training import train_models

    df, spec = long_feature_frame
    return train_models(df, spec, fast_config(evaluation={"plots": True, "shap_sample_rows": 200}))
