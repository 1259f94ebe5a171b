"""What the served scores were worth: matured labels from the score history and the prospect history.

Matured outcomes
----------------
Every stored score (one per batch and lead) is a prediction "this lead converts within ``horizon_days``
after the batch's ``as_of``" (the time its features describe; ``scored_at``, the decision time, is the same
or a little later). Its label is **matured** once the whole window ``(as_of, as_of + horizon]`` lies inside
the observed data, i.e. ``as_of + horizon <= observed_until`` (by default the end of the prospect history,
``history.span[1]``: a later conversion cannot be known yet). The label is ``converted`` = 1 if the lead's
first entry into the contract's conversion stage after ``as_of`` falls in that window, exactly the
training label of :mod:`features.build`. Scores whose window is still open are left out;
:func:`maturity_summary` counts them and says when the next batch matures.

Intervals
---------
Conversion rates per grade carry a 95 % **Wilson score interval** (``scipy.stats.norm`` for the quantile;
statsmodels is not a dependency): unlike the normal approximation it stays inside [0, 1] and is honest for
rare conversions and small grades. ROC AUC and PR AUC get a percentile bootstrap interval over *leads*
(a lead scored in many weekly batches is one unit; Poisson bootstrap, ``n_boot`` draws, seeded). The
per-grade Wilson intervals treat each matured score as independent, which is optimistic when the same lead
appears in many batches; the lead-level bootstrap of the AUCs is the honest one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from scipy.stats import norm

from features.history import ProspectHistory
from models.judge.evaluation import calibration_bins
from serving.stores.schema import batches_table, scores_table

if TYPE_CHECKING:
    from serving.stores import ScoreStore

GRADES = ("A", "B", "C", "D")
OUTCOME_COLUMNS = (
    "batch_id",
    "lead_id",
    "as_of",
    "scored_at",
    "model_version",
    "readiness",
    "score",
    "grade",
    "handed_off",
    "converted",
)
_SECOND = pd.Timedelta(seconds=1)


def _utc(value: Any) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


# -- reading the score history ---------------------------------------------------------------------


def score_history(
    store: ScoreStore, *, since: datetime | pd.Timestamp | str | None = None, until: Any = None
) -> pd.DataFrame:
    """Every stored score with its batch's times and model, oldest batch first.

    Columns: ``batch_id``, ``lead_id``, ``as_of``, ``scored_at`` (UTC), ``model_name``, ``model_version``,
    ``readiness``, ``score``, ``grade``, ``handed_off``. ``since`` / ``until`` bound the batches' ``as_of``
    (inclusive).
    """
    s, b = scores_table, batches_table
    batch_query = sa.select(b.c.batch_id, b.c.as_of, b.c.scored_at, b.c.model_name, b.c.model_version)
    if since is not None:
        batch_query = batch_query.where(b.c.as_of >= _utc(since).to_pydatetime())
    if until is not None:
        batch_query = batch_query.where(b.c.as_of <= _utc(until).to_pydatetime())
    batch_names = ["batch_id", "as_of", "scored_at", "model_name", "model_version"]
    score_names = ["batch_id", "lead_id", "readiness", "score", "grade", "handed_off"]
    with store.engine.connect() as conn:
        batch_rows = conn.execute(batch_query.order_by(b.c.batch_id)).all()
        ids = [int(r[0]) for r in batch_rows]
        # Only plain columns per score row (the batches' times are converted once per batch, not per row).
        score_rows: list[Any] = []
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            score_rows += conn.execute(
                sa.select(s.c.batch_id, s.c.lead_id, s.c.readiness, s.c.score, s.c.grade, s.c.handoff)
                .where(s.c.batch_id.in_(chunk))
                .order_by(s.c.batch_id, s.c.lead_id)
            ).all()
    batches = pd.DataFrame([tuple(r) for r in batch_rows], columns=batch_names)
    columns: list[list[Any]] = [list(c) for c in zip(*score_rows, strict=True)] if score_rows else [[]] * 6
    scores = pd.DataFrame(dict(zip(score_names, columns, strict=True)))
    batches["batch_id"] = batches["batch_id"].astype(np.int64)
    for col in ("as_of", "scored_at"):
        batches[col] = pd.to_datetime(batches[col], utc=True)
    for col in ("model_name", "model_version"):
        batches[col] = batches[col].astype(str)
    scores = scores.astype(
        {"batch_id": np.int64, "readiness": np.float64, "score": np.int64, "handed_off": bool, "grade": str}
    )
    scores["lead_id"] = scores["lead_id"].astype(str)
    frame = scores.merge(batches, on="batch_id", how="inner", validate="many_to_one")
    names = [
        "batch_id", "lead_id", "as_of", "scored_at", "model_name", "model_version",
        "readiness", "score", "grade", "handed_off",
    ]  # fmt: skip
    return frame[names]


# -- labels ----------------------------------------------------------------------------------------


def conversion_within(history: ProspectHistory, lead_ids: Any, as_of: Any, horizon_days: int) -> np.ndarray:
    """1 where the lead first enters the conversion stage after ``as_of`` within ``horizon_days``, else 0.

    ``lead_ids`` and ``as_of`` are aligned arrays (one as-of per row). Only the window
    ``(as_of, as_of + horizon]`` is read, as in :mod:`features.build`'s ``converted`` label.
    """
    ids = np.asarray(pd.Series(np.asarray(lead_ids, dtype=object)).astype(str), dtype=object)
    at = pd.DatetimeIndex(pd.to_datetime(as_of, utc=True))
    if len(ids) != len(at):
        raise ValueError(f"lead_ids ({len(ids)}) and as_of ({len(at)}) differ in length")
    if len(ids) == 0:
        return np.zeros(0, dtype=np.int8)
    stages = history.stage_history
    conv = stages.loc[stages["stage"] == history.contract.stages.converted, ["lead_id", "entered_at"]]
    if conv.empty:
        return np.zeros(len(ids), dtype=np.int8)
    rows = pd.DataFrame({"row": np.arange(len(ids)), "lead_id": ids, "as_of": at.as_unit("us")})
    conv = pd.DataFrame(
        {
            "lead_id": conv["lead_id"].astype(str).to_numpy(dtype=object),
            "entered_at": pd.DatetimeIndex(pd.to_datetime(conv["entered_at"], utc=True)).as_unit("us"),
        }
    )
    pairs = rows.merge(conv, on="lead_id", how="inner")
    horizon = pd.Timedelta(days=horizon_days)
    after = pairs["entered_at"] > pairs["as_of"]
    within = pairs["entered_at"] <= pairs["as_of"] + horizon
    hit = pairs.loc[after & within, "row"].unique()
    # "first entry after as_of": a later re-entry cannot matter, since the first one after as_of comes earlier
    # and is in the window whenever any later one is.
    out = np.zeros(len(ids), dtype=np.int8)
    out[hit] = 1
    return out


def observed_until(history: ProspectHistory) -> pd.Timestamp:
    """The end of the observed data: the latest timestamp in the prospect history."""
    return _utc(history.span[1])


def matured_outcomes(
    store: ScoreStore,
    history: ProspectHistory,
    horizon_days: int,
    since: datetime | pd.Timestamp | str | None = None,
    *,
    until: datetime | pd.Timestamp | str | None = None,
    now: datetime | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """One row per served score whose label has matured (see the module docstring), with that label.

    Args:
        store: the score store (all batches are read).
        history: the prospect history the labels come from.
        horizon_days: the champion's label horizon.
        since: only batches with ``as_of`` at or after this time.
        until: the end of the observed data (default :func:`observed_until` of ``history``).
        now: a label cannot be matured in the future either: ``min(until, now)`` is used (default: now).

    Returns:
        Columns :data:`OUTCOME_COLUMNS`: ``batch_id``, ``lead_id``, ``as_of``, ``scored_at``,
        ``model_version``, ``readiness``, ``score``, ``grade``, ``handed_off``, ``converted`` (0/1 int8),
        oldest batch first.
    """
    if horizon_days < 1:
        raise ValueError(f"horizon_days must be at least 1, got {horizon_days}")
    served = score_history(store, since=since)
    limit = _utc(until) if until is not None else observed_until(history)
    limit = min(limit, _utc(now if now is not None else pd.Timestamp.now(tz="UTC")))
    matured = served[served["as_of"] + pd.Timedelta(days=horizon_days) <= limit].reset_index(drop=True)
    matured["converted"] = conversion_within(history, matured["lead_id"], matured["as_of"], horizon_days)
    return matured[list(OUTCOME_COLUMNS)]


@dataclass(frozen=True)
class Maturity:
    """How much of the score history has matured labels."""

    n_batches: int
    n_matured_batches: int
    n_scores: int
    n_matured_scores: int
    observed_until: pd.Timestamp
    next_maturity: pd.Timestamp | None  # when the oldest immature batch matures (None: none waiting)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_batches": self.n_batches,
            "n_matured_batches": self.n_matured_batches,
            "n_scores": self.n_scores,
            "n_matured_scores": self.n_matured_scores,
            "observed_until": self.observed_until.isoformat(),
            "next_maturity": None if self.next_maturity is None else self.next_maturity.isoformat(),
        }


def maturity_summary(store: ScoreStore, history: ProspectHistory, horizon_days: int, *, until: Any = None) -> Maturity:
    """Counts of matured batches and scores, and when the next batch matures (for empty states)."""
    limit = _utc(until) if until is not None else observed_until(history)
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(batches_table.c.as_of, batches_table.c.n_scores)).all()
    horizon = pd.Timedelta(days=horizon_days)
    done = [(a, n) for a, n in rows if _utc(a) + horizon <= limit]
    waiting = sorted(_utc(a) + horizon for a, _ in rows if _utc(a) + horizon > limit)
    return Maturity(
        n_batches=len(rows),
        n_matured_batches=len(done),
        n_scores=int(sum(n for _, n in rows)),
        n_matured_scores=int(sum(n for _, n in done)),
        observed_until=limit,
        next_maturity=waiting[0] if waiting else None,
    )


# -- performance -----------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaN, NaN for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def conversion_by_grade(outcomes: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Matured conversion per grade: ``grade``, ``n``, ``converted``, ``rate``, ``ci_low``, ``ci_high``,
    ``mean_readiness``, ``handed_off`` (A-D, empty grades kept with n = 0)."""
    rows = []
    for g in GRADES:
        part = outcomes[outcomes["grade"] == g]
        n, k = len(part), int(part["converted"].sum())
        lo, hi = wilson_interval(k, n, confidence)
        rows.append(
            {
                "grade": g,
                "n": n,
                "converted": k,
                "rate": k / n if n else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
                "mean_readiness": float(part["readiness"].mean()) if n else float("nan"),
                "handed_off": int(part["handed_off"].sum()),
            }
        )
    return pd.DataFrame(rows)


def _ranking_curve(y: np.ndarray, p: np.ndarray, order: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted true- and false-positive totals at each distinct threshold (rows sorted by ``order``, best first)."""
    ys, ws, ps = y[order], w[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), len(ps) - 1]  # last row of each tied-score group
    return np.cumsum(ys * ws)[last], np.cumsum((1 - ys) * ws)[last]


def weighted_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray, order: np.ndarray | None = None) -> tuple[float, float]:
    """(ROC AUC, PR AUC = average precision) with row weights; ties handled as scikit-learn does.

    With unit weights this is ``roc_auc_score`` and ``average_precision_score`` exactly (trapezoids over the
    ROC curve; the step-wise sum of precision over recall increments). ``order`` (rows by descending score)
    can be passed to reuse one sort for many weightings (the bootstrap).
    """
    if order is None:
        order = np.argsort(-p, kind="stable")
    tps, fps = _ranking_curve(y, p, order, w)
    if len(tps) == 0 or tps[-1] <= 0 or fps[-1] <= 0:
        return float("nan"), float("nan")
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    roc = float(np.trapezoid(tpr, fpr))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 1.0)
    recall = tps / tps[-1]
    pr = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return roc, pr


def _bootstrap_auc(
    y: np.ndarray, p: np.ndarray, groups: np.ndarray, n_boot: int, seed: int, confidence: float
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of ROC AUC and PR AUC from a Poisson bootstrap over ``groups`` (leads).

    A lead scored in several weekly batches is one unit: every replicate weights all its rows by the same
    Poisson(1) draw, so the interval reflects how many independent leads there are, not how many rows.
    One sort serves every replicate (weighted cumulative sums), which keeps 200 replicates of 100,000+
    matured scores to about a second.
    """
    rng = np.random.default_rng(seed)
    codes, uniques = pd.factorize(pd.Series(groups))
    order = np.argsort(-p, kind="stable")
    roc, pr = [], []
    for _ in range(n_boot):
        w = rng.poisson(1.0, len(uniques)).astype(np.float64)[codes]
        r, a = weighted_auc(y, p, w, order)
        if math.isfinite(r):
            roc.append(r)
            pr.append(a)
    alpha = (1 - confidence) / 2
    out = {}
    for name, values in (("roc_auc", roc), ("pr_auc", pr)):
        if values:
            out[name] = (float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha)))
        else:
            out[name] = (float("nan"), float("nan"))
    return out


@dataclass
class ServedPerformance:
    """How the served scores did on matured labels.

    Attributes:
        n: matured scores. n_batches: batches they come from. positives: of them converted.
        base_rate: positives / n.
        roc_auc, pr_auc: of the served readiness against the matured label (NaN with one class only);
            ``*_ci``: 95 % percentile bootstrap intervals over leads.
        calibration: equal-mass bins of the served readiness: ``rows``, ``p_min``, ``p_max``,
            ``mean_predicted``, ``observed_rate`` (:func:`models.judge.evaluation.calibration_bins`).
        by_grade: :func:`conversion_by_grade`.
        by_batch: per batch ``batch_id``, ``as_of``, ``n``, ``converted``, ``rate``.
    """

    n: int
    n_batches: int
    positives: int
    base_rate: float
    roc_auc: float
    pr_auc: float
    roc_auc_ci: tuple[float, float]
    pr_auc_ci: tuple[float, float]
    calibration: pd.DataFrame
    by_grade: pd.DataFrame
    by_batch: pd.DataFrame
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.n == 0

    def to_dict(self) -> dict[str, Any]:
        def clean(value: Any) -> Any:
            if isinstance(value, float) and not math.isfinite(value):
                return None
            if isinstance(value, pd.Timestamp):
                return value.isoformat()
            if isinstance(value, np.generic):
                return clean(value.item())
            return value

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            return [{str(k): clean(v) for k, v in r.items()} for r in frame.to_dict(orient="records")]

        return {
            "n": self.n,
            "n_batches": self.n_batches,
            "positives": self.positives,
            "base_rate": clean(self.base_rate),
            "roc_auc": clean(self.roc_auc),
            "pr_auc": clean(self.pr_auc),
            "roc_auc_ci": [clean(v) for v in self.roc_auc_ci],
            "pr_auc_ci": [clean(v) for v in self.pr_auc_ci],
            "calibration": records(self.calibration),
            "by_grade": records(self.by_grade),
            "by_batch": records(self.by_batch),
            "details": self.details,
        }


def served_performance(
    outcomes: pd.DataFrame,
    *,
    n_bins: int = 10,
    n_boot: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> ServedPerformance:
    """ROC AUC, PR AUC (with bootstrap intervals), calibration and conversion per grade of matured scores.

    ``outcomes`` is :func:`matured_outcomes` (or any frame with ``readiness``, ``grade``, ``handed_off``,
    ``converted``, ``batch_id``, ``as_of``). No rows gives an empty result (``n = 0``, NaN metrics, empty
    tables with their columns), never an error: before the first batch matures that is the real state.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    n = len(outcomes)
    y = outcomes["converted"].to_numpy(dtype=np.int64) if n else np.zeros(0, dtype=np.int64)
    p = outcomes["readiness"].to_numpy(dtype=np.float64) if n else np.zeros(0)
    positives = int(y.sum())
    both = 0 < positives < n
    roc = float(roc_auc_score(y, p)) if both else float("nan")
    pr = float(average_precision_score(y, p)) if both else float("nan")
    nan2 = (float("nan"), float("nan"))
    groups = outcomes["lead_id"].to_numpy() if n and "lead_id" in outcomes.columns else np.arange(n)
    if both and n_boot > 0:
        cis = _bootstrap_auc(y, p, groups, n_boot, seed, confidence)
    else:
        cis = {"roc_auc": nan2, "pr_auc": nan2}
    calibration = (
        calibration_bins(y, p, n_bins)
        if n
        else pd.DataFrame(columns=["rows", "p_min", "p_max", "mean_predicted", "observed_rate"])
    )
    if n:
        by_batch = (
            outcomes.groupby(["batch_id", "as_of"], sort=True)["converted"].agg(n="size", converted="sum").reset_index()
        )
        by_batch["rate"] = by_batch["converted"] / by_batch["n"]
    else:
        by_batch = pd.DataFrame(columns=["batch_id", "as_of", "n", "converted", "rate"])
    return ServedPerformance(
        n=n,
        n_batches=int(outcomes["batch_id"].nunique()) if n else 0,
        positives=positives,
        base_rate=positives / n if n else float("nan"),
        roc_auc=roc,
        pr_auc=pr,
        roc_auc_ci=cis["roc_auc"],
        pr_auc_ci=cis["pr_auc"],
        calibration=calibration,
        by_grade=conversion_by_grade(outcomes, confidence),
        by_batch=by_batch,
        details={"n_bins": n_bins, "n_boot": n_boot, "confidence": confidence},
    )
