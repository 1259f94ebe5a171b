"""Benchmark: model quality on simulator data, measured against the simulator's own ground truth.

Generates (or reuses) a simulated data directory, validates it, builds point-in-time features for every
weekly snapshot, trains readiness + stage + baselines with the shipped default config
(:func:`models.fit.training.train_models`), then reports:

- readiness test metrics (ROC AUC, PR AUC, ECE, lift / recall at 10%, ...) of the calibrated LightGBM
  model, its uncalibrated margin and both baselines, with PASS/FAIL checks: LightGBM beats both baselines
  on ROC AUC and PR AUC; calibrated ECE at most 0.02;
- the **ceiling**: ROC AUC / PR AUC of the simulator's exact true propensity
  (``ground_truth/propensity.parquet``) on the same test rows. The propensity of a lead at week start
  ``ws`` is ``P(won in (ws, ws + horizon] | latent phase at ws, hidden traits)``, the Bayes-optimal score
  for any model of the observed data, and the snapshot grid is the simulator's weekly grid, so each test
  row ``(lead_id, as_of)`` is matched to the row with ``week_start == as_of`` (or, if the grids were
  ever offset, the latest ``week_start`` in the 7 days up to ``as_of``; a lead without a propensity row
  in that week is closed in the simulator and is counted as unmatched, never matched to an older week);
- conversion rate per grade (with the mean true propensity of each grade);
- stage accuracy / macro F1 / per-class recall of the stage model's argmax against the buckets of the
  simulator's **true** time to conversion (``ground_truth/leads.parquet`` ``converted_at``), next to the
  accuracy of always predicting the majority training class, and a cross-table of the predicted stage
  against the simulator's true latent phase at ``as_of``;
- wall-clock time of every phase.

Usage::

    .venv/bin/python benchmarks/bench_quality_sim.py                        # 50,000 leads, seed 7
    .venv/bin/python benchmarks/bench_quality_sim.py --leads 20000 --workdir /tmp/sim-20k
    .venv/bin/python benchmarks/bench_quality_sim.py --write-doc            # also docs/benchmarks-simulator.md

The data directory defaults to ``/tmp/leadscore-bench-quality-sim-<leads>-seed<seed>`` and is reused when
it already holds ``contract.yaml`` (its lead count is checked; the seed is checked when this script wrote
it). Nothing here tunes anything: the checks report what the default config achieves.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import lightgbm as lgb  # noqa: E402

from features.build import build_features  # noqa: E402
from features.config import FeatureConfig  # noqa: E402
from features.contract import CONTRACT_FILE  # noqa: E402
from features.io import atomic_write_text  # noqa: E402
from features.simulator import GROUND_TRUTH_DIR, SimulatorConfig, generate  # noqa: E402
from features.snapshots import snapshot_dates  # noqa: E402
from features.validation import load_history  # noqa: E402
from models.config import load_train_config  # noqa: E402
from models.fit.stage import stage_labels  # noqa: E402  (the bucketing rule of the training labels)
from models.fit.training import train_models  # noqa: E402
from models.judge.evaluation import readiness_metrics  # noqa: E402

DOC_PATH = REPO / "docs" / "benchmarks-simulator.md"
MARKER = "bench_quality_sim.json"
MAX_ECE = 0.02
MODEL = "leadscore"
UNCALIBRATED = "leadscore_uncalibrated"
BASELINES = ("logistic_regression", "hist_gradient_boosting")
READINESS_TARGET = "converted"
STAGE_TARGET = "stage_label"
SHOWN_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10", "recall_at_10", "lift_at_20")
WEEK = pd.Timedelta(days=7)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"


@dataclass
class Report:
    """Everything measured; rendered to the console and (optionally) to Markdown."""

    command: str
    machine: dict[str, Any]
    data: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    readiness: dict[str, dict[str, float]] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    bootstrap: dict[str, Any] = field(default_factory=dict)
    grades: list[dict[str, Any]] = field(default_factory=list)
    readiness_by_phase: list[dict[str, Any]] = field(default_factory=list)
    stage: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    train_timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "checks"}
        out["checks"] = [{"name": c.name, "verdict": c.verdict, "detail": c.detail} for c in self.checks]
        return out


# -- environment ----------------------------------------------------------------------------------


def _git_revision() -> str:
    """HEAD and whether the working tree has uncommitted changes (read-only git queries)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    mem_gb = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": usable,
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(mem_gb, 1),
        "python": platform.python_version(),
        "lightgbm": lgb.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "git": _git_revision(),
        "load_average_start": round(os.getloadavg()[0], 2),
    }


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -- data -----------------------------------------------------------------------------------------


def ensure_data(n_leads: int, seed: int, workdir: Path) -> tuple[str, float]:
    """Generate the data directory unless it already holds one; returns (how, seconds)."""
    truth = workdir / GROUND_TRUTH_DIR
    marker = workdir / MARKER
    if (workdir / CONTRACT_FILE).exists():
        for name in ("leads.parquet", "propensity.parquet"):
            if not (truth / name).exists():
                raise SystemExit(
                    f"{workdir} holds a data set without {GROUND_TRUTH_DIR}/{name}: this benchmark needs the "
                    "simulator's ground truth; use a --workdir written by the simulator (or an empty one)"
                )
        found = pq.ParquetFile(truth / "leads.parquet").metadata.num_rows
        if found != n_leads:
            raise SystemExit(
                f"{workdir} holds {found:,} simulated leads but --leads is {n_leads:,}; "
                "pass a matching --leads, another --workdir, or delete the directory"
            )
        if marker.exists():
            made = json.loads(marker.read_text())
            if made.get("seed") != seed:
                raise SystemExit(
                    f"{workdir} was generated with seed {made.get('seed')} but --seed is {seed}; "
                    "pass a matching --seed, another --workdir, or delete the directory"
                )
            return f"reused, generated earlier by this script with seed {seed}", 0.0
        return "reused, generated outside this script (seed not recorded)", 0.0
    t = time.perf_counter()
    print(f"generating {n_leads:,} leads (seed {seed}) in {workdir} ...", flush=True)
    summary = generate(n_leads, seed, workdir)
    seconds = time.perf_counter() - t
    atomic_write_text(marker, json.dumps({"leads": n_leads, "seed": seed}))
    print(str(summary), flush=True)
    return "generated by this run", seconds


# -- ground truth ---------------------------------------------------------------------------------


def match_propensity(rows: pd.DataFrame, truth_dir: Path) -> pd.DataFrame:
    """The simulator's true propensity and latent phase for each ``(lead_id, as_of)`` of ``rows``.

    Returns a frame aligned with ``rows`` (same order, fresh index) with ``propensity`` (NaN when
    unmatched), ``phase`` and ``match`` in {``exact``, ``same_week``, ``none``}.
    """
    keys = pd.DataFrame(
        {"lead_id": rows["lead_id"].astype("str").to_numpy(), "as_of": pd.to_datetime(rows["as_of"], utc=True)}
    )
    keys["_row"] = np.arange(len(keys))
    lo, hi = keys["as_of"].min() - WEEK, keys["as_of"].max()
    table = pq.read_table(
        truth_dir / "propensity.parquet",
        columns=["lead_id", "week_start", "propensity", "phase"],
        filters=[("week_start", ">", lo.to_pydatetime()), ("week_start", "<=", hi.to_pydatetime())],
    )
    prop = table.to_pandas()
    prop["lead_id"] = prop["lead_id"].astype("str")
    prop["week_start"] = pd.to_datetime(prop["week_start"], utc=True).astype(keys["as_of"].dtype)
    prop = prop.loc[prop["lead_id"].isin(pd.Index(keys["lead_id"].unique()))]
    if prop.duplicated(["lead_id", "week_start"]).any():
        raise SystemExit(f"{truth_dir / 'propensity.parquet'}: duplicate (lead_id, week_start) rows")

    exact = keys.merge(
        prop.rename(columns={"week_start": "as_of"}), on=["lead_id", "as_of"], how="left", validate="one_to_one"
    )
    exact = exact.sort_values("_row", ignore_index=True)
    exact["match"] = np.where(exact["propensity"].notna(), "exact", "none")
    todo = exact["propensity"].isna().to_numpy()
    if todo.any():
        # Latest week start within the 7 days up to as_of (grids offset); never an older week, whose
        # absence at as_of means the simulator had already closed the lead.
        left = keys.loc[todo].sort_values("as_of")
        right = prop.sort_values("week_start")
        near = pd.merge_asof(
            left,
            right,
            left_on="as_of",
            right_on="week_start",
            by="lead_id",
            direction="backward",
            tolerance=WEEK - pd.Timedelta(seconds=1),
        ).set_index("_row")
        idx = np.flatnonzero(todo)
        hit = near.loc[idx, "propensity"].notna().to_numpy()
        exact.loc[idx[hit], "propensity"] = near.loc[idx[hit], "propensity"].to_numpy()
        exact.loc[idx[hit], "phase"] = near.loc[idx[hit], "phase"].to_numpy()
        exact.loc[idx[hit], "match"] = "same_week"
    return exact[["propensity", "phase", "match"]]


def true_stage_labels(rows: pd.DataFrame, truth_dir: Path, buckets: list[Any]) -> tuple[pd.Series, dict[str, int]]:
    """Stage bucket of each row from the simulator's true conversion time (``ground_truth/leads.parquet``).

    Returns the labels (object, NaN when undetermined) and counts of the rows that could not get one.
    """
    truth = pd.read_parquet(truth_dir / "leads.parquet", columns=["lead_id", "converted_at"])
    truth["lead_id"] = truth["lead_id"].astype("str")
    converted_at = pd.to_datetime(
        rows["lead_id"].astype("str").map(truth.set_index("lead_id")["converted_at"]), utc=True
    )
    delta = converted_at - pd.to_datetime(rows["as_of"], utc=True)
    days = (delta.dt.total_seconds() / 86_400).to_numpy(dtype=np.float64, na_value=np.nan)
    already = int(np.sum(days <= 0))  # converted at or before as_of but open in the features: would be a bug
    days = np.where(days > 0, days, np.nan)
    labels = stage_labels(days, rows["observed_days"].to_numpy(dtype=np.float64), buckets)
    out = pd.Series(np.asarray(labels.astype(object)), index=rows.index, dtype=object)
    undetermined = int(out.isna().sum())
    return out, {"converted_before_as_of": already, "undetermined": undetermined}


# -- evaluation -----------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


class RankedScores:
    """One score's rows sorted once (descending, ties grouped) for fast weighted ROC AUC and PR AUC.

    With unit weights the values equal scikit-learn's ``roc_auc_score`` and ``average_precision_score``
    (ties count half for ROC AUC and form one threshold for PR AUC); integer weights give the metrics of
    a bootstrap resample in O(rows) without re-sorting.
    """

    def __init__(self, y: np.ndarray, score: np.ndarray) -> None:
        order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
        ordered = np.asarray(score, dtype=np.float64)[order]
        self.order = order
        self.starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        self.y = np.asarray(y, dtype=np.float64)[order]

    def metrics(self, weights: np.ndarray) -> tuple[float, float]:
        """(ROC AUC, PR AUC) with per-row ``weights`` given in the original row order."""
        w = weights[self.order]
        pos = np.add.reduceat(w * self.y, self.starts)
        neg = np.add.reduceat(w, self.starts) - pos
        tp, fp = np.cumsum(pos), np.cumsum(neg)
        n_pos, n_neg = tp[-1], fp[-1]
        if n_pos <= 0 or n_neg <= 0:
            return float("nan"), float("nan")
        roc = float(np.sum(neg * (tp - pos + 0.5 * pos)) / (n_pos * n_neg))
        seen = tp + fp
        precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
        pr = float(np.sum(pos * precision) / n_pos)
        return roc, pr


def lead_bootstrap(
    lead_ids: pd.Series,
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    masks: dict[str, np.ndarray],
    resamples: int,
    seed: int,
) -> dict[str, dict[str, np.ndarray]]:
    """ROC AUC and PR AUC of every score over ``resamples`` bootstrap resamples of *leads*.

    Test rows of one lead (one per snapshot date) are correlated, so whole leads are resampled with
    replacement (a row's weight = how often its lead was drawn). ``masks`` restricts a score to some
    rows (e.g. the rows with a true propensity). Returns ``{score: {"roc_auc": array, "pr_auc": array}}``.
    """
    codes, uniques = pd.factorize(lead_ids.astype("str"))
    n_leads = len(uniques)
    ranked = {name: RankedScores(y, s) for name, s in scores.items()}
    out = {name: {"roc_auc": np.empty(resamples), "pr_auc": np.empty(resamples)} for name in scores}
    rng = np.random.default_rng(seed)
    for b in range(resamples):
        lead_weight = np.bincount(rng.integers(0, n_leads, n_leads), minlength=n_leads).astype(np.float64)
        w = lead_weight[codes]
        for name, r in ranked.items():
            mask = masks.get(name)
            out[name]["roc_auc"][b], out[name]["pr_auc"][b] = r.metrics(w if mask is None else w * mask)
    return out


def _interval(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [float("nan"), float("nan")]
    lo, hi = np.quantile(finite, [0.025, 0.975])
    return [float(lo), float(hi)]


def evaluate_readiness(report: Report, result: Any, truth_dir: Path, bins: int, resamples: int, seed: int) -> None:
    test = result.split.readiness.test
    y = test[READINESS_TARGET].to_numpy()
    model = result.model
    p_model = model.predict_readiness(test)
    report.readiness = {name: dict(m) for name, m in result.readiness_metrics.items()}
    ours = readiness_metrics(y, p_model, bins)
    if not math.isclose(ours["roc_auc"], report.readiness[MODEL]["roc_auc"], abs_tol=1e-9):
        report.notes.append(
            f"ScoringModel.predict_readiness on the test rows gives ROC AUC {ours['roc_auc']:.6f}, the training "
            f"result reports {report.readiness[MODEL]['roc_auc']:.6f}: the served model differs from the evaluated one"
        )

    truth = match_propensity(test, truth_dir)
    counts = truth["match"].value_counts().to_dict()
    matched = truth["propensity"].notna().to_numpy()
    n_matched = int(matched.sum())
    ceiling: dict[str, Any] = {
        "test_rows": len(test),
        "matched_exact": int(counts.get("exact", 0)),
        "matched_same_week": int(counts.get("same_week", 0)),
        "unmatched": int(counts.get("none", 0)),
    }
    if n_matched:
        ym, prop = y[matched], truth["propensity"].to_numpy(dtype=np.float64)[matched]
        ceiling["truth"] = readiness_metrics(ym, np.clip(prop, 0.0, 1.0), bins)
        ceiling["model_on_matched"] = readiness_metrics(ym, p_model[matched], bins)
        for name in BASELINES:
            if name in result.baselines:
                pb = result.baselines[name].predict_readiness(test)
                ceiling[f"{name}_on_matched"] = readiness_metrics(ym, pb[matched], bins)
        roc_m, roc_c = ceiling["model_on_matched"]["roc_auc"], ceiling["truth"]["roc_auc"]
        ceiling["share_of_ceiling_gap_closed"] = (roc_m - 0.5) / (roc_c - 0.5) if roc_c > 0.5 else float("nan")
        ceiling["pr_auc_ratio"] = ceiling["model_on_matched"]["pr_auc"] / ceiling["truth"]["pr_auc"]
        ceiling["spearman_model_vs_truth"] = float(pd.Series(p_model[matched]).rank().corr(pd.Series(prop).rank()))
    report.ceiling = ceiling

    if resamples > 0:
        baselines = getattr(result, "baselines", None) or {}
        scores = {
            MODEL: p_model,
            **{name: baselines[name].predict_readiness(test) for name in BASELINES if name in baselines},
        }
        masks = {}
        if n_matched:
            scores["true_propensity"] = np.nan_to_num(truth["propensity"].to_numpy(dtype=np.float64), nan=0.0)
            masks["true_propensity"] = matched.astype(np.float64)
        for name, sc in scores.items():
            # The fast weighted metrics must reproduce scikit-learn's on the unweighted rows.
            unit = masks.get(name, np.ones(len(y)))
            roc, pr = RankedScores(y, sc).metrics(unit)
            keep = unit > 0
            ref = readiness_metrics(y[keep], np.clip(sc[keep], 0.0, 1.0), bins)
            if not (math.isclose(roc, ref["roc_auc"], abs_tol=1e-9) and math.isclose(pr, ref["pr_auc"], abs_tol=1e-9)):
                raise RuntimeError(
                    f"bootstrap metrics disagree with scikit-learn for {name}: ROC AUC {roc} vs {ref['roc_auc']}, "
                    f"PR AUC {pr} vs {ref['pr_auc']}"
                )
        t = time.perf_counter()
        draws = lead_bootstrap(test["lead_id"], y, scores, masks, resamples, seed)
        boot: dict[str, Any] = {
            "resamples": resamples,
            "leads": int(test["lead_id"].nunique()),
            "seconds": time.perf_counter() - t,
            "interval": {name: {k: _interval(v) for k, v in d.items()} for name, d in draws.items()},
            "diff": {},
        }
        for name in scores:
            if name == MODEL:
                continue
            boot["diff"][name] = {}
            for k in ("roc_auc", "pr_auc"):
                delta = draws[MODEL][k] - draws[name][k]
                finite = delta[np.isfinite(delta)]
                boot["diff"][name][k] = {
                    "interval": _interval(delta),
                    "share_model_ahead": float(np.mean(finite > 0)) if len(finite) else float("nan"),
                }
        report.bootstrap = boot

    # Conversion per grade, with the simulator's mean true propensity of each grade.
    grades = model.grades_of(p_model)
    prop_all = truth["propensity"].to_numpy(dtype=np.float64)
    rows = []
    for g in ("A", "B", "C", "D"):
        m = grades == g
        n = int(m.sum())
        known_prop = prop_all[m][np.isfinite(prop_all[m])]
        rows.append(
            {
                "grade": g,
                "min_probability": float(model.grade_cutoffs.get(g, 0.0)),
                "rows": n,
                "share": n / len(y),
                "conversions": int(y[m].sum()),
                "conversion_rate": float(y[m].mean()) if n else float("nan"),
                "mean_predicted": float(p_model[m].mean()) if n else float("nan"),
                "mean_true_propensity": float(known_prop.mean()) if len(known_prop) else float("nan"),
            }
        )
    report.grades = rows

    by_phase = []
    frame = pd.DataFrame({"phase": truth["phase"], "y": y, "p": p_model, "prop": prop_all}).loc[matched]
    for phase, part in frame.groupby("phase", sort=False, observed=True):
        by_phase.append(
            {
                "phase": str(phase),
                "rows": len(part),
                "share": len(part) / len(frame),
                "conversion_rate": float(part["y"].mean()),
                "mean_true_propensity": float(part["prop"].mean()),
                "mean_predicted": float(part["p"].mean()),
            }
        )
    order = ["dormant", "research", "evaluation", "decision", "no_decision"]
    by_phase.sort(key=lambda r: order.index(r["phase"]) if r["phase"] in order else len(order))
    report.readiness_by_phase = by_phase


def evaluate_stage(report: Report, result: Any, truth_dir: Path, config: Any) -> None:
    s = result.split.stage
    if s is None or not s.has_test or not result.model.has_stage:
        report.stage = {"skipped": "stage disabled or no stage test rows"}
        return
    labels = list(result.model.stage_labels)
    proba = result.model.predict_stage_proba(s.test)
    # the stage the model serves: argmax of the probabilities times its decision weights
    # (models.fit.stage.fit_decision_weights; all ones under the plain argmax rule)
    weights = np.asarray(getattr(result.model, "stage_weights", np.ones(len(labels))))
    predicted = np.array(labels, dtype=object)[(proba * weights).argmax(axis=1)]
    plain = np.array(labels, dtype=object)[proba.argmax(axis=1)]
    true, problems = true_stage_labels(s.test, truth_dir, config.stage.buckets)
    known = true.notna().to_numpy()
    yt, yp = true.to_numpy()[known].astype(str), predicted[known].astype(str)
    pk = proba[known]
    train_counts = s.train[STAGE_TARGET].astype(str).value_counts()
    majority = str(train_counts.idxmax())
    recorded = s.test[STAGE_TARGET].astype(str).to_numpy()[known]
    phase = match_propensity(s.test, truth_dir)
    cm = confusion_matrix(yt, yp, labels=labels)
    stage: dict[str, Any] = {
        "test_rows": len(s.test),
        "evaluated_rows": int(known.sum()),
        **problems,
        "test_strategy": s.test_strategy,
        "labels": labels,
        "accuracy": float(accuracy_score(yt, yp)),
        "correct_rows": int(np.sum(yt == yp)),
        "macro_f1": float(f1_score(yt, yp, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": float(balanced_accuracy_score(yt, yp)),
        "decision_weights": [float(w) for w in weights],
        "argmax_accuracy": float(accuracy_score(yt, plain[known].astype(str))),
        "argmax_macro_f1": float(
            f1_score(yt, plain[known].astype(str), labels=labels, average="macro", zero_division=0)
        ),
        "majority_class": majority,
        "majority_class_accuracy": float(np.mean(yt == majority)),
        "majority_class_correct_rows": int(np.sum(yt == majority)),
        "majority_class_macro_f1": float(
            f1_score(yt, np.full(len(yt), majority), labels=labels, average="macro", zero_division=0)
        ),
        "label_agreement_with_training_labels": float(np.mean(recorded == yt)),
        "per_class": [
            {
                "stage": lab,
                "support": int(sup),
                "true_share": float(sup / len(yt)),
                "predicted_share": float(np.mean(yp == lab)),
                "recall": float(rec),
                "precision": float(prec),
                "mean_probability": float(pk[:, j].mean()),
                "one_vs_rest_roc_auc": float(roc_auc_score(yt == lab, pk[:, j])) if 0 < sup < len(yt) else float("nan"),
            }
            for j, (lab, sup, rec, prec) in enumerate(
                zip(
                    labels,
                    cm.sum(axis=1),
                    recall_score(yt, yp, labels=labels, average=None, zero_division=0),
                    precision_score(yt, yp, labels=labels, average=None, zero_division=0),
                    strict=True,
                )
            )
        ],
        "confusion_matrix": cm.tolist(),
        "reported_by_training": {
            k: result.stage_metrics.get(k) for k in ("accuracy", "macro_f1", "majority_class_accuracy")
        }
        if result.stage_metrics
        else None,
    }
    have_phase = phase["phase"].notna().to_numpy()
    cross = pd.crosstab(
        pd.Series(phase["phase"].to_numpy()[have_phase], name="true_phase"),
        pd.Series(predicted[have_phase], name="predicted_stage"),
    ).reindex(columns=labels, fill_value=0)
    order = ["dormant", "research", "evaluation", "decision", "no_decision"]
    cross = cross.reindex([p for p in order if p in cross.index] + [p for p in cross.index if p not in order])
    stage["phase_rows_matched"] = int(have_phase.sum())
    stage["phase_crosstab"] = {str(ph): {lab: int(v) for lab, v in row.items()} for ph, row in cross.iterrows()}
    report.stage = stage


def run_checks(report: Report) -> None:
    r = report.readiness
    ours = r[MODEL]
    for metric in ("pr_auc", "roc_auc"):
        for name in BASELINES:
            if name not in r:
                report.checks.append(Check(f"LightGBM {metric} > {name} {metric}", False, f"{name} was not trained"))
                continue
            a, b = ours[metric], r[name][metric]
            detail = f"{a:.4f} vs {b:.4f} (diff {a - b:+.4f}"
            diff = report.bootstrap.get("diff", {}).get(name, {}).get(metric)
            if diff is not None:
                lo, hi = diff["interval"]
                detail += (
                    f"; 95% lead-bootstrap interval {lo:+.4f} .. {hi:+.4f}, LightGBM ahead in "
                    f"{diff['share_model_ahead']:.1%} of {report.bootstrap['resamples']} resamples"
                )
            report.checks.append(Check(f"LightGBM {metric} > {name} {metric}", bool(a > b), detail + ")"))
    ece = ours["ece"]
    report.checks.append(Check(f"calibrated ECE <= {MAX_ECE}", bool(ece <= MAX_ECE), f"ECE {ece:.4f}"))
    c = report.ceiling
    if "truth" in c:
        # The true propensity must be calibrated on the feature table's labels: a mismatch (wrong week,
        # different horizon or label definition) would show here first.
        e = c["truth"]["ece"]
        report.checks.append(
            Check(
                f"sanity: true propensity ECE <= {MAX_ECE} on the labels (ground truth matched correctly)",
                bool(e <= MAX_ECE),
                f"ECE {e:.4f}",
            )
        )
        # A model scoring above the Bayes-optimal propensity would mean leakage (or a ceiling bug).
        m, t = c["model_on_matched"]["roc_auc"], c["truth"]["roc_auc"]
        report.checks.append(
            Check(
                "sanity: LightGBM ROC AUC <= ceiling ROC AUC (no leakage)",
                bool(m <= t),
                f"{m:.4f} vs ceiling {t:.4f} on {c['matched_exact'] + c['matched_same_week']:,} matched rows",
            )
        )


# -- output ---------------------------------------------------------------------------------------


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table (floats with 4 decimals); also used by ``benchmarks/quality.py``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def render_console(report: Report) -> str:
    out = []
    d = report.data
    out.append(
        f"data: {d['leads']:,} leads, {d['activities']:,} activities ({d['data_dir']}, {d['data_origin']}); "
        f"quarantined rows {d['quarantined_rows']}"
    )
    out.append(
        f"features: {d['feature_rows']:,} snapshot rows x {d['features']} features over {d['snapshot_dates']} weekly "
        f"dates {d['first_as_of']} .. {d['last_as_of']}; base rate {d['base_rate']:.4f}"
    )
    sp = report.split
    out.append(
        f"readiness split: train {sp['train_rows']:,} / valid {sp['valid_rows']:,} / test {sp['test_rows']:,} rows; "
        f"test as_of {sp['test_dates']}"
    )
    out.append("\nreadiness test metrics:")
    head = f"  {'model':28s}" + "".join(f"{k:>13s}" for k in SHOWN_METRICS)
    out.append(head)
    for name, m in report.readiness.items():
        out.append(f"  {name:28s}" + "".join(f"{m[k]:13.4f}" for k in SHOWN_METRICS))
    c = report.ceiling
    out.append(
        f"\nceiling (simulator true propensity): test rows {c['test_rows']:,}, matched exactly {c['matched_exact']:,}, "
        f"same week {c['matched_same_week']:,}, unmatched {c['unmatched']:,}"
    )
    if "truth" in c:
        for label, key in (("true propensity (CEILING)", "truth"), ("leadscore", "model_on_matched")):
            m = c[key]
            out.append(
                f"  {label:28s} roc_auc {m['roc_auc']:.4f}  pr_auc {m['pr_auc']:.4f}  ece {m['ece']:.4f}  "
                f"lift@10 {m['lift_at_10']:.3f}"
            )
        out.append(
            f"  leadscore closes {c['share_of_ceiling_gap_closed']:.1%} of the ROC AUC gap from 0.5 to the ceiling; "
            f"PR AUC {c['pr_auc_ratio']:.1%} of the ceiling's; "
            f"Spearman(model, truth) {c['spearman_model_vs_truth']:.3f}"
        )
    b = report.bootstrap
    if b:
        out.append(f"95% intervals over {b['resamples']} lead-level bootstrap resamples ({b['leads']:,} leads):")
        for name, iv in b["interval"].items():
            out.append(
                f"  {name:28s} roc_auc {iv['roc_auc'][0]:.4f} .. {iv['roc_auc'][1]:.4f}  "
                f"pr_auc {iv['pr_auc'][0]:.4f} .. {iv['pr_auc'][1]:.4f}"
            )
    out.append("\nconversion per grade (test):")
    for g in report.grades:
        out.append(
            f"  {g['grade']}: {g['rows']:>8,} rows ({g['share']:.1%}), conversion {g['conversion_rate']:.4f}, "
            f"mean predicted {g['mean_predicted']:.4f}, mean true propensity {g['mean_true_propensity']:.4f}"
        )
    st = report.stage
    if "accuracy" in st:
        out.append(
            f"\nstage vs TRUE time to conversion ({st['evaluated_rows']:,} test rows, {st['test_strategy']}): "
            f"accuracy {st['accuracy']:.4f}, macro F1 {st['macro_f1']:.4f}; majority class '{st['majority_class']}' "
            f"accuracy {st['majority_class_accuracy']:.4f} (macro F1 {st['majority_class_macro_f1']:.4f}); "
            f"balanced accuracy {st['balanced_accuracy']:.4f}"
        )
        for pc in st["per_class"]:
            out.append(
                f"  {pc['stage']:15s} support {pc['support']:>8,} ({pc['true_share']:.1%}), predicted "
                f"{pc['predicted_share']:.1%}, recall {pc['recall']:.4f}, precision {pc['precision']:.4f}, "
                f"mean P {pc['mean_probability']:.4f}, one-vs-rest ROC AUC {pc['one_vs_rest_roc_auc']:.4f}"
            )
    out.append("\nchecks:")
    for chk in report.checks:
        out.append(f"  [{chk.verdict}] {chk.name}: {chk.detail}")
    out.append("\ntimings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()))
    out.append("train_models breakdown (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.train_timings.items()))
    for note in report.notes:
        out.append(f"note: {note}")
    return "\n".join(out)


def _span(interval: list[float], signed: bool = False) -> str:
    lo, hi = interval
    return f"{lo:+.4f} .. {hi:+.4f}" if signed else f"{lo:.4f} .. {hi:.4f}"


def _stage_verdict(st: dict[str, Any]) -> str:
    """Honest sentences comparing the stage model with always predicting the majority class."""
    acc, base = st["accuracy"], st["majority_class_accuracy"]
    right, base_right = st["correct_rows"], st["majority_class_correct_rows"]
    f1, base_f1 = st["macro_f1"], st["majority_class_macro_f1"]
    never = [p["stage"] for p in st["per_class"] if p["predicted_share"] == 0 and p["support"] > 0]
    parts = [
        f"Accuracy {acc:.4f} ({right:,} rows right) is {'above' if right > base_right else 'not above'} the "
        f"majority-class accuracy {base:.4f} ({base_right:,} rows right); macro F1 {f1:.4f} vs {base_f1:.4f} "
        f"({f1 - base_f1:+.4f})."
    ]
    if never:
        parts.append(f"The served stage is never {', '.join(never)} on these rows.")
    ranked = [
        f"{p['stage']} {p['one_vs_rest_roc_auc']:.3f}"
        for p in st["per_class"]
        if p["stage"] != st["majority_class"] and math.isfinite(p["one_vs_rest_roc_auc"])
    ]
    if ranked and acc <= base:
        parts.append(
            "With the majority class this dominant the named stage carries little information, but the stage "
            f"probabilities still rank the true stage (one-vs-rest ROC AUC: {', '.join(ranked)})."
        )
    return " ".join(parts)


def render_markdown(report: Report) -> str:
    d, sp, c, st, mi = report.data, report.split, report.ceiling, report.stage, report.machine
    n_pass = sum(ch.passed for ch in report.checks)
    md: list[str] = [
        "# Model quality on simulator data",
        "",
        "Written by `benchmarks/bench_quality_sim.py --write-doc`; every figure below is measured by that run "
        "(re-run the command to refresh it). Training uses the shipped default config "
        "(`models/default_config.yaml`) and the default feature config; nothing is tuned for this report.",
        "",
        "```",
        report.command,
        "```",
        "",
        f"Machine: {mi['nproc']} usable cores ({mi['cpu']}), {mi['memory_gb']} GB RAM, shared with other jobs "
        f"(load average {mi['load_average_start']} at start); Python {mi['python']}, LightGBM {mi['lightgbm']}, "
        f"pandas {mi['pandas']}, numpy {mi['numpy']}. Run {mi['date']}, code at {mi['git']}.",
        "",
        f"## Checks ({n_pass}/{len(report.checks)} pass)",
        "",
        markdown_table(
            ["check", "result", "figures"], [[ch.name, f"**{ch.verdict}**", ch.detail] for ch in report.checks]
        ),
        "",
        "## Data",
        "",
        f"- Simulator: {d['leads']:,} leads, seed {d['seed']}, {d['activities']:,} activities, "
        f"{d['stage_changes']:,} stage entries ({d['data_origin']}); validation quarantined "
        f"{d['quarantined_rows']} rows.",
        f"- Features: {d['feature_rows']:,} snapshot rows (lead open at `as_of`) x {d['features']} features "
        f"({d['categorical']} categorical) over {d['snapshot_dates']} weekly snapshot dates "
        f"{d['first_as_of']} .. {d['last_as_of']}; {d['horizon_days']}-day conversion base rate {d['base_rate']:.4f}.",
        f"- Readiness split (temporal, gap {sp['gap_days']} days): train {sp['train_rows']:,} rows "
        f"({sp['train_dates']}), valid {sp['valid_rows']:,} ({sp['valid_dates']}), test {sp['test_rows']:,} "
        f"({sp['test_dates']}); {sp['censored_rows']:,} rows with less than the horizon observed are unusable.",
        f"- Readiness model: best iteration {sp['best_iteration']}, calibration `{sp['calibration']}`.",
        "",
        "## Readiness (test snapshots)",
        "",
        markdown_table(
            ["model", *SHOWN_METRICS, "base_rate"],
            [[name, *(m[k] for k in SHOWN_METRICS), m["base_rate"]] for name, m in report.readiness.items()],
        ),
        "",
        "`leadscore` is the calibrated LightGBM model that is served; `leadscore_uncalibrated` is its raw margin "
        "through the logistic function (same ranking, so the same AUCs). ECE is over 10 equal-mass bins; lift and "
        "recall are for the top 10% / 20% of test snapshots by score.",
        "",
        "### Ceiling: the simulator's own true propensity",
        "",
        f"The simulator records, for every open lead and week start, `P(won within {d['horizon_days']} days | latent "
        "phase, hidden traits)`, computed exactly from its Markov chain (`ground_truth/propensity.parquet`). "
        "Observed activity is conditionally independent of the future given that state, so no model of the "
        "observed data can rank better on average: this is the ceiling. The snapshot grid is the simulator's "
        "weekly grid, so test rows are matched on `week_start == as_of`.",
        "",
        f"Test rows: {c['test_rows']:,}; matched exactly {c['matched_exact']:,}, in the same week "
        f"{c['matched_same_week']:,}, unmatched {c['unmatched']:,}.",
        "",
    ]
    if "truth" in c:
        rows = [["true propensity (ceiling)", *(c["truth"][k] for k in ("roc_auc", "pr_auc", "ece", "lift_at_10"))]]
        rows.append(["leadscore", *(c["model_on_matched"][k] for k in ("roc_auc", "pr_auc", "ece", "lift_at_10"))])
        for name in BASELINES:
            if f"{name}_on_matched" in c:
                rows.append([name, *(c[f"{name}_on_matched"][k] for k in ("roc_auc", "pr_auc", "ece", "lift_at_10"))])
        md += [
            markdown_table(["score (matched test rows)", "roc_auc", "pr_auc", "ece", "lift_at_10"], rows),
            "",
            f"LightGBM closes {c['share_of_ceiling_gap_closed']:.1%} of the ROC AUC distance from random (0.5) to "
            f"the ceiling and reaches {c['pr_auc_ratio']:.1%} of the ceiling's PR AUC; the Spearman rank correlation "
            f"of its score with the true propensity is {c['spearman_model_vs_truth']:.3f}. The remaining gap is the "
            "latent state (buying phase, hidden fit) that the observed activity only hints at; the simulator keeps "
            "it hidden on purpose.",
            "",
        ]
    b = report.bootstrap
    if b:
        md += [
            f"Sampling uncertainty: 95% intervals over {b['resamples']} bootstrap resamples of the {b['leads']:,} "
            "test *leads* (a lead's snapshots are correlated, so whole leads are resampled; every score is "
            "evaluated on the same resample, so differences are paired).",
            "",
            markdown_table(
                ["score", "roc_auc 95% interval", "pr_auc 95% interval"],
                [[name, _span(iv["roc_auc"]), _span(iv["pr_auc"])] for name, iv in b["interval"].items()],
            ),
            "",
            markdown_table(
                ["leadscore minus", "roc_auc diff 95% interval", "ahead in", "pr_auc diff 95% interval", "ahead in"],
                [
                    [
                        name,
                        _span(d["roc_auc"]["interval"], signed=True),
                        f"{d['roc_auc']['share_model_ahead']:.1%}",
                        _span(d["pr_auc"]["interval"], signed=True),
                        f"{d['pr_auc']['share_model_ahead']:.1%}",
                    ]
                    for name, d in b["diff"].items()
                ],
            ),
            "",
        ]
    md += [
        "### Conversion per grade (test)",
        "",
        "Grade cut-offs are set on the calibration snapshots (top 10% A, next 20% B, next 30% C, rest D).",
        "",
        markdown_table(
            [
                "grade",
                "min probability",
                "rows",
                "share",
                "conversions",
                "conversion rate",
                "mean predicted",
                "mean true propensity",
            ],
            [
                [
                    g["grade"],
                    g["min_probability"],
                    f"{g['rows']:,}",
                    f"{g['share']:.1%}",
                    f"{g['conversions']:,}",
                    g["conversion_rate"],
                    g["mean_predicted"],
                    g["mean_true_propensity"],
                ]
                for g in report.grades
            ],
        ),
        "",
    ]
    if report.readiness_by_phase:
        md += [
            "### Readiness by the simulator's true latent phase at `as_of` (test)",
            "",
            markdown_table(
                ["true phase", "rows", "share", "conversion rate", "mean true propensity", "mean predicted"],
                [
                    [
                        r["phase"],
                        f"{r['rows']:,}",
                        f"{r['share']:.1%}",
                        r["conversion_rate"],
                        r["mean_true_propensity"],
                        r["mean_predicted"],
                    ]
                    for r in report.readiness_by_phase
                ],
            ),
            "",
        ]
    md += ["## Stage (buying cycle)", ""]
    if "accuracy" in st:
        md += [
            f"The stage the model serves (argmax of its probabilities times per-stage weights fitted on validation "
            f"leads for macro F1; weights {', '.join(f'{w:.3g}' for w in st['decision_weights'])}) against the "
            f"bucket of the simulator's **true** time to conversion "
            f"(`ground_truth/leads.parquet` `converted_at`; buckets {', '.join(st['labels'])} = within 30 / 31-90 / "
            f"91-365 days / later or never). Stage test: {st['evaluated_rows']:,} rows (`{st['test_strategy']}`; "
            "stage labels need 365 days observed after `as_of`, so only older snapshots qualify). "
            f"Rows converted before `as_of` but open in the features: {st['converted_before_as_of']}; "
            f"undetermined: {st['undetermined']}. The true bucket equals the training label on "
            f"{st['label_agreement_with_training_labels']:.2%} of rows.",
            "",
            markdown_table(
                ["score", "accuracy", "macro F1"],
                [
                    ["stage model (served decision rule)", st["accuracy"], st["macro_f1"]],
                    ["stage model (plain argmax of the probabilities)", st["argmax_accuracy"], st["argmax_macro_f1"]],
                    [
                        f"always '{st['majority_class']}' (majority training class)",
                        st["majority_class_accuracy"],
                        st["majority_class_macro_f1"],
                    ],
                ],
            ),
            "",
            f"Balanced accuracy (mean per-class recall) of the stage model: {st['balanced_accuracy']:.4f}.",
            "",
            markdown_table(
                [
                    "true stage",
                    "support",
                    "true share",
                    "predicted share",
                    "recall",
                    "precision",
                    "mean P(stage)",
                    "one-vs-rest ROC AUC of P(stage)",
                ],
                [
                    [
                        p["stage"],
                        f"{p['support']:,}",
                        f"{p['true_share']:.1%}",
                        f"{p['predicted_share']:.1%}",
                        p["recall"],
                        p["precision"],
                        p["mean_probability"],
                        p["one_vs_rest_roc_auc"],
                    ]
                    for p in st["per_class"]
                ],
            ),
            "",
            _stage_verdict(st),
            "",
            "Confusion matrix (rows = true stage, columns = predicted):",
            "",
            markdown_table(
                ["true \\ predicted", *st["labels"]],
                [
                    [lab, *(f"{v:,}" for v in cm_row)]
                    for lab, cm_row in zip(st["labels"], st["confusion_matrix"], strict=True)
                ],
            ),
            "",
            f"Predicted stage against the simulator's true latent phase at `as_of` ({st['phase_rows_matched']:,} "
            "stage test rows with a phase):",
            "",
            markdown_table(
                ["true phase \\ predicted", *st["labels"]],
                [[ph, *(f"{row[lab]:,}" for lab in st["labels"])] for ph, row in st["phase_crosstab"].items()],
            ),
            "",
        ]
    else:
        md += [f"Skipped: {st.get('skipped', 'no stage results')}.", ""]
    md += [
        "## Time",
        "",
        "Wall-clock seconds on the shared machine (noisy; compare ratios within one run).",
        "",
        markdown_table(["phase", "seconds"], [[k, f"{v:.1f}"] for k, v in report.timings.items()]),
        "",
        "`train_models` breakdown: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in report.train_timings.items())
        + f". Peak resident memory of the run: {report.data.get('peak_rss_gb', float('nan')):.1f} GB.",
        "",
    ]
    if report.notes:
        md += ["## Notes", "", *(f"- {n}" for n in report.notes), ""]
    return "\n".join(md)


# -- main -----------------------------------------------------------------------------------------


def _dates(index: pd.DatetimeIndex) -> str:
    if not len(index):
        return "none"
    return f"{index.min().date()} .. {index.max().date()}, {len(index)} dates"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=50_000, help="simulated leads")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed")
    parser.add_argument("--workdir", type=Path, help="data directory (default /tmp/leadscore-bench-quality-sim-...)")
    parser.add_argument("--write-doc", action="store_true", help=f"write {DOC_PATH.relative_to(REPO)}")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON here")
    parser.add_argument(
        "--bootstrap", type=int, default=500, help="lead-level bootstrap resamples for the AUC intervals (0: none)"
    )
    args = parser.parse_args(argv)
    if args.leads < 1 or args.seed < 0 or args.bootstrap < 0:
        parser.error("--leads must be positive, --seed and --bootstrap non-negative")
    workdir = args.workdir or Path(f"/tmp/leadscore-bench-quality-sim-{args.leads}-seed{args.seed}")
    shown = ["benchmarks/bench_quality_sim.py", *(sys.argv[1:] if argv is None else argv)]
    report = Report(command=".venv/bin/python " + shlex.join(shown), machine=machine_info())
    t_all = time.perf_counter()

    origin, gen_s = ensure_data(args.leads, args.seed, workdir)
    if gen_s:
        report.timings["generate"] = gen_s
    truth_dir = workdir / GROUND_TRUTH_DIR

    t = time.perf_counter()
    loaded = load_history(workdir)
    history = loaded.history
    report.timings["load_validate"] = time.perf_counter() - t
    quarantined = sum(len(q) for q in loaded.quarantine.values())

    t = time.perf_counter()
    fconfig = FeatureConfig()
    sim_horizon = SimulatorConfig().horizon_days
    if fconfig.horizon_days != sim_horizon:
        raise SystemExit(
            f"feature horizon {fconfig.horizon_days} days differs from the simulator's true-propensity horizon "
            f"{sim_horizon} days: the ceiling would answer a different question"
        )
    dates = snapshot_dates(history, fconfig.snapshot_every_days)
    features, spec = build_features(history, dates, fconfig)
    report.timings["features"] = time.perf_counter() - t
    print(f"features: {len(features):,} rows x {len(spec.features)} in {report.timings['features']:.1f} s", flush=True)

    config = load_train_config(None)
    t = time.perf_counter()
    result = train_models(features, spec, config)
    report.timings["train_models"] = time.perf_counter() - t
    report.train_timings = dict(result.timings)
    report.notes.extend(result.notes)
    print(f"trained in {report.timings['train_models']:.1f} s", flush=True)

    r = result.split.readiness
    report.data = {
        "data_dir": str(workdir),
        "data_origin": origin,
        "leads": len(history.leads),
        "seed": args.seed,
        "activities": len(history.activities),
        "stage_changes": len(history.stage_history),
        "quarantined_rows": quarantined,
        "feature_rows": len(features),
        "features": len(spec.features),
        "categorical": len(spec.categorical),
        "snapshot_dates": len(dates),
        "horizon_days": spec.horizon_days,
        "first_as_of": str(dates.min().date()),
        "last_as_of": str(dates.max().date()),
        "base_rate": float(features.loc[features["observed_days"] >= spec.horizon_days, READINESS_TARGET].mean()),
    }
    report.split = {
        "gap_days": r.gap_days,
        "train_rows": len(r.train),
        "valid_rows": len(r.valid),
        "test_rows": len(r.test),
        "train_dates": _dates(r.train_dates),
        "valid_dates": _dates(r.valid_dates),
        "test_dates": _dates(r.test_dates),
        "censored_rows": r.n_censored,
        "best_iteration": getattr(result.readiness_model, "best_iteration_", None),
        "calibration": getattr(result.readiness_model, "calibration_method_", None),
    }
    del features

    t = time.perf_counter()
    evaluate_readiness(report, result, truth_dir, config.evaluation.ece_bins, args.bootstrap, args.seed)
    evaluate_stage(report, result, truth_dir, config)
    report.timings["ground_truth_evaluation"] = time.perf_counter() - t
    run_checks(report)
    report.timings["total"] = time.perf_counter() - t_all
    report.data["peak_rss_gb"] = _peak_rss_gb()

    print(render_console(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(report.to_json(), indent=2, default=str))
    if args.write_doc:
        atomic_write_text(DOC_PATH, render_markdown(report))
        print(f"wrote {DOC_PATH}")
    # Exit status reflects the checks so CI can run this script; the figures are printed either way.
    return 0 if all(ch.passed for ch in report.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
