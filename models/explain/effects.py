"""Estimated effects of campaigns and actions on conversion: doubly robust (AIPW) with cross-fitting.

What is estimated
-----------------
For each **campaign** (the ``campaign_id`` of activities) and each **action** (a policy action whose
``activity_type`` campaigns deliver, e.g. ``webinar`` for "invite to the next webinar"), the effect of
*exposure* on *conversion within the horizon*, on the leads that were exposed (ATT): the conversion rate
of the exposed minus what it would have been had they not been exposed, in percentage points / 100.

Design (point in time)
----------------------
A *unit* is a (lead, as_of) pair: the lead is open at ``as_of`` (the rows of
:func:`features.build.build_features`) and, for a campaign, has not been touched by it before ``as_of``.

- ``as_of``: for a campaign whose touches all fall within 7 days of its first one (an e-mail, a webinar,
  an event), its launch (the first touch, whole seconds); for longer campaigns and for actions, each week
  ``[g, g + 7 days)`` of the weekly grid of :func:`features.snapshots.snapshot_dates` that has an exposure
  (at most ``max_weeks`` per campaign);
- exposure ``T``: the lead has an activity of the campaign (for an action: an activity with a
  ``campaign_id`` and the action's ``activity_type``) in ``[as_of, as_of + 7 days)``;
- features ``X``: the point-in-time features at ``as_of`` (strictly before it, so nothing the exposure
  caused can leak in);
- outcome ``Y``: converted within ``(as_of, as_of + horizon]`` (the build's ``converted`` label). Units
  whose outcome window is not over at the end of the data are left out (``n_censored``), so campaigns of
  the last ``horizon`` days are "not estimable" yet.

Lead-initiated activity (a demo request, a pricing-page view) is not something the company can trigger,
and it follows the lead's own buying journey: its "effect" is not identified by this design, so actions
whose activity type no campaign delivers get no estimate (``evidence = "not estimable"``).

Estimator
---------
AIPW for the ATT with K-fold cross-fitting (folds by lead, shared by all nuisance models). The outcome
model ``m0(x) = P(Y = 1 | x, unexposed)`` is one LightGBM model per fold pooled over every as_of (trained
on units exposed to nothing that week), so it sees far more leads than any one campaign has; the
propensity ``e(x) = P(T = 1 | x)`` is a LightGBM model per exposure and fold. With ``r = Y - m0``:

    tau = mean_exposed(r) - sum_unexposed(w e/(1-e) r) / sum_unexposed(w e/(1-e))

Units with ``e > trim`` (no comparable unexposed leads) are dropped (``share_trimmed``); fewer than
``min_exposed`` exposed units is "not estimable". The 95 % interval comes from the influence function,
summed per lead (a lead can be a unit in several weeks, so the interval is cluster-robust by lead). To
bound the cost, unexposed units are subsampled per exposure to at most ``max_controls`` with weights
``w = 1 / rate`` (exposed units all kept, ``w = 1``). The **naive** contrast (exposed minus unexposed
conversion rate on the same units) is reported next to it.

EconML (0.17.0) installs with the pinned stack, but its DR learners' final-stage inference is
heteroskedasticity-robust only (``cov_type`` nonrobust / HC0 / HC1): no intervals clustered by lead, which
the stacked weekly units need. Hence the estimator here, on scikit-learn conventions and LightGBM.

Segments: the same influence-function terms within each CRM stage at ``as_of`` give the effect for
"leads like this one" (rows with ``segment = <stage>``); next-best actions use them, with intervals
adjusted for the number of (action, stage) cells (Bonferroni), so that picking the best of many never
reads noise as evidence.

Table columns
-------------
``kind`` (campaign / action), ``campaign_id`` (empty for actions), ``action`` (the action name, or the
campaign's activity type for campaigns), ``activity_type``, ``segment`` ("all" or a stage),
``n_exposed``, ``n_unexposed`` (units, before subsampling), ``n_comparable_unexposed`` (unexposed units
whose propensity lies within the exposed units' range), ``weeks``, ``n_censored``, ``estimate``,
``std_error``, ``ci_low``, ``ci_high``, ``naive_estimate``, ``naive_ci_low``, ``naive_ci_high``,
``propensity_min``, ``propensity_max`` (over exposed units), ``share_trimmed``, ``horizon_days``,
``evidence`` ("effect", "no evidence of effect" or "not estimable").
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.build import build_features
from features.config import FeatureConfig
from features.history import ProspectHistory
from features.snapshots import snapshot_dates

WEEK = pd.Timedelta(days=7)
WEEK_US = 7 * 86_400 * 1_000_000
Z95 = 1.959963984540054
EVIDENCE_EFFECT = "effect"
EVIDENCE_NONE = "no evidence of effect"
EVIDENCE_NOT_ESTIMABLE = "not estimable"
TABLE_COLUMNS = [
    "kind",
    "campaign_id",
    "action",
    "activity_type",
    "segment",
    "n_exposed",
    "n_unexposed",
    "n_comparable_unexposed",
    "weeks",
    "n_censored",
    "estimate",
    "std_error",
    "ci_low",
    "ci_high",
    "naive_estimate",
    "naive_ci_low",
    "naive_ci_high",
    "propensity_min",
    "propensity_max",
    "share_trimmed",
    "horizon_days",
    "evidence",
]
_LABEL_COLUMNS = ("lead_id", "as_of", "converted", "days_to_conversion", "observed_days")


@dataclass(frozen=True)
class ActionSpec:
    """A policy action whose effect is estimated: its name and the activity type campaigns deliver for it."""

    name: str
    activity_type: str


def _z(alpha: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


@dataclass
class _Units:
    """The stacked (lead, week) units of one exposure, with features already encoded."""

    idx: np.ndarray  # rows of the feature frame
    X: np.ndarray
    T: np.ndarray
    Y: np.ndarray
    w: np.ndarray
    lead: np.ndarray
    stage: np.ndarray
    n_exposed: int
    n_unexposed: int
    n_censored: int
    weeks: int


def _lgbm(seed: int, n_estimators: int) -> Any:
    from lightgbm import LGBMClassifier

    return LGBMClassifier(
        n_estimators=n_estimators,
        learning_rate=0.1,
        max_bin=63,
        num_leaves=15,
        min_child_samples=40,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        reg_lambda=1.0,
        random_state=seed,
        n_jobs=1,
        verbose=-1,
    )


def _fit_predict(
    X: np.ndarray, y: np.ndarray, w: np.ndarray, train: np.ndarray, test: np.ndarray, seed: int, n_est: int
) -> np.ndarray:
    """P(y = 1 | x) on ``test`` from a model fitted on ``train`` (a constant when ``train`` has one class)."""
    yt = y[train]
    if yt.min() == yt.max():
        return np.full(len(test), float(yt[0]))
    model = _lgbm(seed, n_est).fit(X[train], yt, sample_weight=w[train])
    return np.asarray(model.predict_proba(X[test])[:, 1], dtype=np.float64)


def _cluster_se(phi: np.ndarray, lead: np.ndarray) -> float:
    """Standard error of a sum of influence terms, summed per lead first (cluster-robust)."""
    if len(phi) == 0:
        return math.nan
    per_lead = np.bincount(lead, weights=phi)
    return float(math.sqrt(float(np.sum(per_lead**2))))


def _att(
    T: np.ndarray, Y: np.ndarray, w: np.ndarray, e: np.ndarray, m0: np.ndarray, lead: np.ndarray, z: float
) -> tuple[float, float, float, float]:
    """AIPW ATT (control weights normalised), its cluster-robust standard error and interval."""
    wt = w * T
    wc = w * (1 - T) * e / (1.0 - e)
    n_t, n_c = float(wt.sum()), float(wc.sum())
    if n_t <= 0 or n_c <= 0:
        return math.nan, math.nan, math.nan, math.nan
    resid = Y - m0
    a = float(np.sum(wt * resid) / n_t)
    b = float(np.sum(wc * resid) / n_c)
    tau = a - b
    phi = wt * (resid - a) / n_t - wc * (resid - b) / n_c
    se = _cluster_se(phi, lead)
    return tau, se, tau - z * se, tau + z * se


def _naive(T: np.ndarray, Y: np.ndarray, w: np.ndarray, lead: np.ndarray, z: float) -> tuple[float, float, float]:
    """Exposed minus unexposed conversion rate (weighted), with a cluster-robust interval."""
    wt, wc = w * T, w * (1 - T)
    st, sc = float(wt.sum()), float(wc.sum())
    if st <= 0 or sc <= 0:
        return math.nan, math.nan, math.nan
    pt, pc = float(np.sum(wt * Y) / st), float(np.sum(wc * Y) / sc)
    phi = wt * (Y - pt) / st - wc * (Y - pc) / sc
    se = _cluster_se(phi, lead)
    d = pt - pc
    return d, d - z * se, d + z * se


class EffectEstimator:
    """Doubly robust (AIPW, cross-fitted) effects of campaigns and actions on conversion (module docstring).

    Args:
        actions: the policy actions to estimate (name and activity type).
        horizon_days: outcome horizon; ``None`` = the feature config's horizon.
        feature_config: windows and trend window of the point-in-time features.
        n_folds: cross-fitting folds (by lead).
        max_weeks: weeks of exposure used per campaign (the first ones).
        max_controls: unexposed units kept per exposure (subsampled with weights beyond that).
        trim: units with a propensity above this are dropped (no comparable unexposed leads).
        alpha: 1 - the interval's coverage.
        n_estimators: boosting rounds of each propensity model (twice that for the outcome model).
        min_exposed: fewer exposed units than this: not estimable (the interval would not be reliable).
        max_outcome_rows: training rows of the pooled outcome model per fold.
        launch_as_of: look at campaigns that last under a week from their launch (else from the grid week).
        random_state: seed of the subsampling, the folds and the nuisance models.

    Attributes (after :meth:`fit`):
        table_: one row per campaign and action (``segment = "all"``) followed by the per-stage rows of
            the actions, columns :data:`TABLE_COLUMNS`.
        segment_alpha_: the Bonferroni-adjusted alpha of the per-stage intervals.
    """

    def __init__(
        self,
        actions: Sequence[ActionSpec] = (),
        *,
        horizon_days: int | None = None,
        feature_config: FeatureConfig | None = None,
        n_folds: int = 3,
        max_weeks: int = 8,
        max_controls: int = 15_000,
        trim: float = 0.95,
        alpha: float = 0.05,
        n_estimators: int = 60,
        min_exposed: int = 50,
        max_outcome_rows: int = 150_000,
        launch_as_of: bool = True,
        random_state: int = 0,
    ) -> None:
        self.actions = actions
        self.horizon_days = horizon_days
        self.feature_config = feature_config
        self.n_folds = n_folds
        self.max_weeks = max_weeks
        self.max_controls = max_controls
        self.trim = trim
        self.alpha = alpha
        self.n_estimators = n_estimators
        self.min_exposed = min_exposed
        self.max_outcome_rows = max_outcome_rows
        self.launch_as_of = launch_as_of
        self.random_state = random_state

    # -- data -------------------------------------------------------------------------------------
    def _exposures(self, history: ProspectHistory) -> pd.DataFrame:
        acts = history.activities
        if "campaign_id" not in acts.columns:
            return pd.DataFrame({"lead_id": [], "occurred_at": [], "campaign_id": [], "activity_type": []})
        touched = acts.loc[acts["campaign_id"].notna(), ["lead_id", "occurred_at", "campaign_id", "activity_type"]]
        return touched.reset_index(drop=True)

    def fit(self, history: ProspectHistory, y: Any = None) -> EffectEstimator:
        """Estimate every campaign's and action's effect on ``history`` (see the module docstring)."""
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.5 < self.trim < 1:
            raise ValueError(f"trim must be in (0.5, 1), got {self.trim}")
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        cfg = self.feature_config or FeatureConfig()
        horizon = int(self.horizon_days or cfg.horizon_days)
        cfg = cfg.model_copy(update={"horizon_days": horizon, "snapshot_every_days": 7})
        rng = np.random.default_rng(self.random_state)
        exposures = self._exposures(history)
        grid = snapshot_dates(history, 7)
        # the grid week [g, g + 7d) each touch falls in (touches before the first grid date have no week)
        t_us = pd.DatetimeIndex(exposures["occurred_at"]).as_unit("us").asi8
        g_us = grid.as_unit("us").asi8
        pos = np.searchsorted(g_us, t_us, side="right") - 1
        exposures = exposures.assign(period=np.where(pos >= 0, g_us[np.maximum(pos, 0)], -1), t_us=t_us)
        exposures = exposures[exposures["period"] >= 0]

        # A campaign whose touches all fall within 7 days of its first one is looked at from its launch
        # (as_of = the first touch, whole seconds): the features then hold everything up to the launch.
        # Longer campaigns use the weekly grid, at most max_weeks weeks.
        plans: list[tuple[dict[str, Any], pd.DataFrame, bool]] = []
        for cid, rows in exposures.groupby("campaign_id", sort=True):
            atype = str(rows["activity_type"].mode().iloc[0])
            meta = {"kind": "campaign", "campaign_id": str(cid), "action": atype, "activity_type": atype}
            first = int(rows["t_us"].min())
            if self.launch_as_of and int(rows["t_us"].max()) < first + WEEK_US:
                rows = rows.assign(period=first - first % 1_000_000)
            plans.append((meta, rows, True))
        for action in self.actions:
            rows = exposures[exposures["activity_type"] == action.activity_type]
            meta = {"kind": "action", "campaign_id": "", "action": action.name, "activity_type": action.activity_type}
            plans.append((meta, rows, False))

        periods_needed: set[int] = set()
        chosen: list[np.ndarray] = []
        for _, rows, is_campaign in plans:
            weeks = np.unique(rows["period"].to_numpy())
            if is_campaign:
                weeks = weeks[: self.max_weeks]
            chosen.append(weeks)
            periods_needed.update(int(x) for x in weeks)
        dates = (
            pd.DatetimeIndex(pd.to_datetime(sorted(periods_needed), unit="us", utc=True))
            if periods_needed
            else grid[:1]
        )
        frame, spec = build_features(history, dates, cfg)
        features = list(spec.features)
        X_all, stage_all = _encode(frame, features, list(spec.categorical))
        lead_codes, lead_index = pd.factorize(frame["lead_id"])
        week_of_row = pd.DatetimeIndex(frame["as_of"]).as_unit("us").asi8
        censored_all = frame["observed_days"].to_numpy() < horizon
        y_all = frame["converted"].to_numpy().astype(np.float64)
        row_key = pd.MultiIndex.from_arrays([lead_codes, week_of_row])
        lead_pos = pd.Index(lead_index)

        # folds by lead, shared by every nuisance model (cross-fitting)
        fold_all = rng.integers(0, self.n_folds, len(lead_index))[lead_codes]
        all_rows = pd.concat([rows[["lead_id", "period"]] for _, rows, _ in plans]) if plans else exposures
        exposed_any = row_key.isin(
            pd.MultiIndex.from_arrays(
                [lead_pos.get_indexer(pd.Index(all_rows["lead_id"])), all_rows["period"].to_numpy()]
            )
        )
        m0_all = self._pooled_outcome(X_all, y_all, fold_all, ~exposed_any & ~censored_all, rng)
        z = Z95 if self.alpha == 0.05 else _z(self.alpha)
        records: list[dict[str, Any]] = []
        segment_parts: list[tuple[dict[str, Any], _Units, np.ndarray, np.ndarray]] = []
        for (meta, rows, is_campaign), weeks in zip(plans, chosen, strict=True):
            if not len(weeks):
                records.append(_empty(meta, horizon, 0, 0))
                continue
            units = self._units(
                rows,
                weeks,
                is_campaign,
                lead_pos,
                lead_codes,
                week_of_row,
                row_key,
                X_all,
                y_all,
                stage_all,
                censored_all,
                rng,
            )
            if units.n_exposed == 0 or units.n_unexposed == 0:
                records.append(_empty(meta, horizon, units.n_censored, units.weeks, units.n_exposed))
                continue
            if units.n_exposed < self.min_exposed:
                records.append(_empty(meta, horizon, units.n_censored, units.weeks, units.n_exposed))
                continue
            e = self._propensity(units, fold_all[units.idx], rng)
            m0 = m0_all[units.idx]
            rec = _summarise(meta, units, e, m0, self.trim, z, horizon)
            records.append(rec)
            if not is_campaign:
                segment_parts.append((meta, units, e, m0))

        # per-stage rows of the actions, intervals Bonferroni-adjusted over all (action, stage) cells
        cells = sum(len(np.unique(u.stage)) for _, u, _, _ in segment_parts)
        seg_alpha = self.alpha / max(cells, 1)
        z_seg = _z(seg_alpha)
        seg_records: list[dict[str, Any]] = []
        for meta, units, e, m0 in segment_parts:
            for stage in sorted(set(units.stage.tolist())):
                mask = units.stage == stage
                sub = _Units(
                    units.idx[mask],
                    units.X[mask],
                    units.T[mask],
                    units.Y[mask],
                    units.w[mask],
                    units.lead[mask],
                    units.stage[mask],
                    int(units.T[mask].sum()),
                    int((1 - units.T[mask]).sum()),
                    0,
                    units.weeks,
                )
                if sub.n_exposed < self.min_exposed or sub.n_unexposed == 0:
                    rec = _empty({**meta}, horizon, 0, units.weeks, sub.n_exposed)
                else:
                    rec = _summarise(meta, sub, e[mask], m0[mask], self.trim, z_seg, horizon)
                rec["segment"] = str(stage)
                seg_records.append(rec)
        self.segment_alpha_ = seg_alpha
        self.table_ = pd.DataFrame(records + seg_records, columns=TABLE_COLUMNS)
        self.horizon_days_ = horizon
        return self

    def _units(
        self,
        rows: pd.DataFrame,
        weeks: np.ndarray,
        is_campaign: bool,
        lead_pos: pd.Index,
        lead_codes: np.ndarray,
        week_of_row: np.ndarray,
        row_key: pd.MultiIndex,
        X_all: np.ndarray,
        y_all: np.ndarray,
        stage_all: np.ndarray,
        censored_all: np.ndarray,
        rng: np.random.Generator,
    ) -> _Units:
        in_week = np.isin(week_of_row, weeks)
        idx = np.flatnonzero(in_week)
        exp_lead = lead_pos.get_indexer(pd.Index(rows["lead_id"]))
        ok = exp_lead >= 0
        exp_lead, exp_week = exp_lead[ok], rows["period"].to_numpy()[ok]
        # exposed (lead, week) pairs, and for campaigns the first exposure week of each lead
        exposed = pd.MultiIndex.from_arrays([exp_lead, exp_week]).unique()
        T = row_key[idx].isin(exposed).astype(np.float64)
        if is_campaign and len(exp_lead):
            first = pd.Series(exp_week).groupby(exp_lead).min()
            first_week = np.full(len(lead_pos), np.iinfo(np.int64).max)
            first_week[first.index.to_numpy()] = first.to_numpy()
            keep = week_of_row[idx] <= first_week[lead_codes[idx]]
            idx, T = idx[keep], T[keep]
        cens = censored_all[idx]
        n_censored = int(cens.sum())
        idx, T = idx[~cens], T[~cens]
        n_exposed, n_unexposed = int(T.sum()), int(len(T) - T.sum())
        w = np.ones(len(idx))
        if n_unexposed > self.max_controls:
            rate = self.max_controls / n_unexposed
            draw = rng.random(len(idx)) < rate
            keep = (T == 1) | draw
            idx, T, w = idx[keep], T[keep], np.where(T[keep] == 1, 1.0, 1.0 / rate)
        return _Units(
            idx=idx,
            X=X_all[idx],
            T=T,
            Y=y_all[idx],
            w=w,
            lead=lead_codes[idx],
            stage=stage_all[idx],
            n_exposed=n_exposed,
            n_unexposed=n_unexposed,
            n_censored=n_censored,
            weeks=len(weeks),
        )

    def _propensity(self, units: _Units, fold: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Cross-fitted propensity ``P(T = 1 | x)`` of one exposure's units."""
        e = np.zeros(len(units.T))
        seed = int(rng.integers(0, 2**31 - 1))
        for k in range(self.n_folds):
            test = np.flatnonzero(fold == k)
            train = np.flatnonzero(fold != k)
            if len(test):
                e[test] = _fit_predict(units.X, units.T, units.w, train, test, seed + k, self.n_estimators)
        return np.clip(e, 1e-4, 1 - 1e-4)

    def _pooled_outcome(
        self, X: np.ndarray, y: np.ndarray, fold: np.ndarray, usable: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Cross-fitted ``P(Y = 1 | x, unexposed)`` for every row, one model per fold over all weeks.

        Trained on unexposed, uncensored rows (at most ``max_outcome_rows`` per fold, a uniform sample), so
        every exposure's outcome model sees far more leads than that exposure has.
        """
        m0 = np.zeros(len(y))
        seed = int(rng.integers(0, 2**31 - 1))
        w = np.ones(len(y))
        for k in range(self.n_folds):
            test = np.flatnonzero(fold == k)
            train = np.flatnonzero((fold != k) & usable)
            if len(train) > self.max_outcome_rows:
                train = np.sort(rng.choice(train, self.max_outcome_rows, replace=False))
            if len(test):
                m0[test] = _fit_predict(X, y, w, train, test, seed + k, 2 * self.n_estimators)
        return m0

    # -- results ----------------------------------------------------------------------------------
    def campaigns(self) -> pd.DataFrame:
        """The overall rows of the campaigns."""
        t = self.table_
        return t[(t["kind"] == "campaign") & (t["segment"] == "all")].reset_index(drop=True)

    def overall(self) -> pd.DataFrame:
        """One row per campaign and action (``segment = "all"``)."""
        t = self.table_
        return t[t["segment"] == "all"].reset_index(drop=True)


def _encode(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Float32 matrix of the features (categoricals as integer codes, NaN when missing) and the stage."""
    X = np.empty((len(frame), len(features)), dtype=np.float32)
    for j, name in enumerate(features):
        col = frame[name]
        if name in categorical:
            codes, _ = pd.factorize(col.astype("string"), sort=True)
            X[:, j] = np.where(codes < 0, np.nan, codes).astype(np.float32)
        else:
            X[:, j] = col.to_numpy(dtype=np.float32, na_value=np.nan)
    stage = frame["stage"].astype("string").fillna("unknown").to_numpy(dtype=object) if "stage" in frame else None
    if stage is None:
        stage = np.full(len(frame), "all", dtype=object)
    return X, stage


def _empty(meta: dict[str, Any], horizon: int, n_censored: int, weeks: int, n_exposed: int = 0) -> dict[str, Any]:
    rec: dict[str, Any] = {c: math.nan for c in TABLE_COLUMNS}
    rec.update(meta)
    rec.update(
        segment="all",
        n_exposed=n_exposed,
        n_unexposed=0,
        n_comparable_unexposed=0,
        weeks=weeks,
        n_censored=n_censored,
        share_trimmed=0.0,
        horizon_days=horizon,
        evidence=EVIDENCE_NOT_ESTIMABLE,
    )
    return rec


def _summarise(
    meta: dict[str, Any], units: _Units, e: np.ndarray, m0: np.ndarray, trim: float, z: float, horizon: int
) -> dict[str, Any]:
    keep = e <= trim
    treated = units.T == 1
    share_trimmed = float(1 - keep[treated].mean()) if treated.any() else 0.0
    T, Y, w, lead = units.T[keep], units.Y[keep], units.w[keep], units.lead[keep]
    tau, se, lo, hi = _att(T, Y, w, e[keep], m0[keep], lead, z)
    naive, nlo, nhi = _naive(units.T, units.Y, units.w, units.lead, z)
    e_t = e[treated]
    p_min, p_max = (float(e_t.min()), float(e_t.max())) if len(e_t) else (math.nan, math.nan)
    comparable = (~treated) & (e >= p_min) & (e <= p_max) & keep
    evidence = EVIDENCE_NOT_ESTIMABLE if math.isnan(tau) else (EVIDENCE_NONE if lo <= 0.0 <= hi else EVIDENCE_EFFECT)
    rec = dict(meta)
    rec.update(
        segment="all",
        n_exposed=units.n_exposed,
        n_unexposed=units.n_unexposed,
        n_comparable_unexposed=int(np.round(np.sum(units.w[comparable]))),
        weeks=units.weeks,
        n_censored=units.n_censored,
        estimate=tau,
        std_error=se,
        ci_low=lo,
        ci_high=hi,
        naive_estimate=naive,
        naive_ci_low=nlo,
        naive_ci_high=nhi,
        propensity_min=p_min,
        propensity_max=p_max,
        share_trimmed=share_trimmed,
        horizon_days=horizon,
        evidence=evidence,
    )
    return rec


def estimate_effects(
    history: ProspectHistory,
    actions: Sequence[ActionSpec] = (),
    *,
    feature_config: FeatureConfig | None = None,
    **kwargs: Any,
) -> pd.DataFrame:
    """The effect table of :class:`EffectEstimator` fitted on ``history``."""
    return EffectEstimator(actions, feature_config=feature_config, **kwargs).fit(history).table_


def compare_with_truth(table: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """How the campaign estimates agree with known true effects (e.g. a simulator's ``campaigns.parquet``).

    Args:
        table: the effect table (its ``kind = "campaign"``, ``segment = "all"`` rows are used).
        truth: ``campaign_id`` and ``true_effect`` per campaign.

    Returns:
        ``n_campaigns`` (with a true effect), ``n_estimated``; ``spearman`` and ``naive_spearman`` (rank
        correlation of the estimate / the naive contrast with the true effect, over estimated campaigns);
        ``n_zero`` (estimated campaigns without effect), ``zero_covered`` (share of those whose interval
        includes 0); ``n_flagged`` / ``naive_flagged`` (campaigns whose interval excludes 0).
    """
    from scipy.stats import spearmanr

    rows = table[(table["kind"] == "campaign") & (table["segment"] == "all")]
    merged = rows.merge(truth[["campaign_id", "true_effect"]], on="campaign_id", how="inner")
    est = merged[merged["estimate"].notna()]
    zero = est[est["true_effect"] == 0]
    covered = (zero["ci_low"] <= 0) & (zero["ci_high"] >= 0)
    naive_flag = (est["naive_ci_low"] > 0) | (est["naive_ci_high"] < 0)

    def rho(col: str) -> float:
        if len(est) < 3 or est["true_effect"].nunique() < 2:
            return math.nan
        return float(spearmanr(est[col], est["true_effect"]).statistic)

    return {
        "n_campaigns": float(len(merged)),
        "n_estimated": float(len(est)),
        "spearman": rho("estimate"),
        "naive_spearman": rho("naive_estimate"),
        "n_zero": float(len(zero)),
        "zero_covered": float(covered.mean()) if len(zero) else math.nan,
        "n_flagged": float((est["evidence"] == EVIDENCE_EFFECT).sum()),
        "naive_flagged": float(naive_flag.sum()),
    }


def write_effects(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the effect table atomically, as Parquet (``.parquet``) or CSV (``.csv``) by the suffix.

    Raises:
        ValueError: for another suffix.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: the effect table is written as .csv or .parquet, not '{path.suffix}'")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            table.to_csv(tmp, index=False)
        else:
            table.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_effects(path: str | Path) -> pd.DataFrame:
    """Read an effect table written by :func:`write_effects` (``campaign_id`` empty, not NaN, for actions).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if a column of :data:`TABLE_COLUMNS` is missing.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no effect table")
    if path.suffix.lower() == ".csv":
        table = pd.read_csv(
            path, dtype={"campaign_id": "string", "segment": "string"}, keep_default_na=False, na_values=[""]
        )
    else:
        table = pd.read_parquet(path)
    missing = [c for c in ("campaign_id", "action", "n_exposed", "estimate", "ci_low", "ci_high") if c not in table]
    if missing:
        raise ValueError(f"{path}: not an effect table, missing columns {missing}")
    table["campaign_id"] = table["campaign_id"].astype("string").fillna("")
    return table


NO_EVIDENCE_LABEL = "no action with evidence of effect"


def estimate_training_effects(
    history: ProspectHistory,
    actions: Sequence[ActionSpec],
    feature_config: FeatureConfig,
    *,
    max_controls: int = 8_000,
    random_state: int = 0,
) -> pd.DataFrame | None:
    """The effect table the ``train`` flow attaches to the scoring model (``None`` for single-snapshot data).

    Bounded for the flow: at most ``max_controls`` unexposed units per exposure (weighted subsample).
    """
    if history.contract.mode == "single_snapshot":
        return None
    est = EffectEstimator(actions, feature_config=feature_config, max_controls=max_controls, random_state=random_state)
    return est.fit(history).table_


class ActionEffects:
    """Per-stage action effects of an effect table, for next-best actions (see :func:`recommend`).

    Only the per-stage rows of actions are used (``kind = "action"``, ``segment`` a stage), with their
    multiplicity-adjusted intervals. An action qualifies for a lead when it is a candidate, has a row for
    the lead's stage and its interval lies above 0.
    """

    def __init__(self, table: pd.DataFrame, horizon_days: int | None = None) -> None:
        rows = table[(table["kind"] == "action") & (table["segment"] != "all") & table["estimate"].notna()]
        self.horizon_days = horizon_days
        self.cells: dict[tuple[str, str], tuple[float, float, float]] = {
            (str(a), str(g)): (float(e), float(lo), float(hi))
            for a, g, e, lo, hi in zip(
                rows["activity_type"], rows["segment"], rows["estimate"], rows["ci_low"], rows["ci_high"], strict=True
            )
        }

    def recommend(self, stage: str | None, candidates: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
        """The candidate ``(name, label, activity_type)`` with the largest estimated effect at ``stage``.

        Estimates are looked up by activity type (what campaigns deliver), so a policy that names its
        actions differently uses the same estimates.

        Returns ``{"action", "label", "readiness_gain", "ci_low", "ci_high", "segment", "estimated"}``;
        ``action`` is ``None`` (label :data:`NO_EVIDENCE_LABEL`) when no candidate's interval lies above 0.
        """
        best: tuple[float, float, float, str, str] | None = None
        for name, label, activity_type in candidates:
            cell = self.cells.get((activity_type, str(stage)))
            if cell is None or not cell[1] > 0.0:
                continue
            if best is None or cell[0] > best[0]:
                best = (*cell, name, label)
        if best is None:
            return {
                "action": None,
                "label": NO_EVIDENCE_LABEL,
                "readiness_gain": 0.0,
                "ci_low": None,
                "ci_high": None,
                "segment": stage,
                "estimated": True,
            }
        est, lo, hi, name, label = best
        return {
            "action": name,
            "label": f"{label} (estimated effect for leads at stage {stage})",
            "readiness_gain": min(max(est, -1.0), 1.0),
            "ci_low": lo,
            "ci_high": hi,
            "segment": stage,
            "estimated": True,
        }
