"""Evaluation plots as matplotlib Figures (for MLflow artifacts or files).

Figures are built with :class:`matplotlib.figure.Figure` directly, not ``pyplot``: nothing is shown,
no global figure registry grows, and it works headless and in threads (the Agg canvas renders them on
``savefig``). Every function takes labels and predictions and returns one Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from models.judge.evaluation import calibration_bins, gains_curve

_FIGSIZE = (6.4, 4.8)


def _figure(figsize: tuple[float, float] = _FIGSIZE) -> Figure:
    return Figure(figsize=figsize, layout="constrained")


def roc_figure(y_true: Any, probas: Mapping[str, Any]) -> Figure:
    """ROC curves of one or more models on the same rows (legend shows the AUC)."""
    fig = _figure()
    ax = fig.subplots()
    y = np.asarray(y_true)
    for name, p in probas.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    ax.set(
        xlabel="False positive rate", ylabel="True positive rate", title="ROC curve (test)", xlim=(0, 1), ylim=(0, 1)
    )
    ax.legend(loc="lower right")
    return fig


def pr_figure(y_true: Any, probas: Mapping[str, Any]) -> Figure:
    """Precision-recall curves (legend shows average precision); the dashed line is the base rate."""
    from sklearn.metrics import average_precision_score

    fig = _figure()
    ax = fig.subplots()
    y = np.asarray(y_true)
    for name, p in probas.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision_score(y, p):.3f})")
    ax.axhline(y.mean(), linestyle="--", color="grey", linewidth=1, label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="Recall", ylabel="Precision", title="Precision-recall curve (test)", xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="upper right")
    return fig


def calibration_figure(y_true: Any, probas: Mapping[str, Any], n_bins: int = 10) -> Figure:
    """Reliability diagram over equal-mass bins, with the distribution of predictions below."""
    fig = _figure((6.4, 6.4))
    ax, hist = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top = 0.0
    for name, p in probas.items():
        bins = calibration_bins(y_true, p, n_bins)
        ax.plot(bins["mean_predicted"], bins["observed_rate"], marker="o", label=name)
        hist.hist(np.asarray(p), bins=50, histtype="step", label=name)
        top = max(top, float(bins["mean_predicted"].max()), float(bins["observed_rate"].max()))
    limit = min(1.0, top * 1.1 + 0.01)
    ax.plot([0, limit], [0, limit], linestyle="--", color="grey", linewidth=1, label="perfect")
    ax.set(ylabel="Observed conversion rate", title=f"Calibration ({n_bins} equal-mass bins, test)")
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    ax.legend(loc="upper left")
    hist.set(xlabel="Predicted probability", ylabel="Rows")
    hist.set_yscale("log")
    return fig


def gains_figure(y_true: Any, probas: Mapping[str, Any]) -> Figure:
    """Cumulative gains (share of conversions captured) and lift against the share of leads contacted."""
    fig = _figure((10, 4.4))
    gains_ax, lift_ax = fig.subplots(1, 2)
    for name, p in probas.items():
        contacted, captured = gains_curve(y_true, p)
        gains_ax.plot(contacted, captured, label=name)
        with np.errstate(divide="ignore", invalid="ignore"):
            lift = np.where(contacted > 0, captured / contacted, np.nan)
        start = max(1, len(contacted) // 100)  # skip the noisy first percent
        lift_ax.plot(contacted[start:], lift[start:], label=name)
    gains_ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="random")
    gains_ax.set(xlabel="Share of snapshots (best first)", ylabel="Share of conversions", title="Cumulative gains")
    gains_ax.legend(loc="lower right")
    lift_ax.axhline(1.0, linestyle="--", color="grey", linewidth=1)
    lift_ax.set(xlabel="Share of snapshots (best first)", ylabel="Lift", title="Cumulative lift")
    lift_ax.legend(loc="upper right")
    return fig


def feature_importance_figure(importance: pd.Series, top_n: int = 20, kind: str = "gain") -> Figure:
    """Horizontal bars of the ``top_n`` most important features (``importance`` indexed by feature)."""
    top = importance.sort_values(ascending=False).head(top_n)[::-1]
    fig = _figure((7, max(3.0, 0.3 * len(top) + 1)))
    ax = fig.subplots()
    ax.barh(top.index.astype(str), top.to_numpy())
    ax.set(xlabel=f"Total {kind}", title=f"Feature importance ({kind}, top {len(top)})")
    return fig


def shap_summary_figure(
    contributions: pd.DataFrame,
    feature_values: pd.DataFrame | None = None,
    categorical: Sequence[str] = (),
    top_n: int = 15,
    seed: int = 0,
) -> Figure:
    """SHAP summary from TreeSHAP contributions: mean |contribution| bars and a beeswarm-like scatter.

    Args:
        contributions: one column per feature (a ``bias`` column is ignored), raw log-odds.
        feature_values: the same rows' feature values, used to colour the points (low = blue, high = red,
            by within-feature rank); categorical features and missing values are grey.
        categorical: categorical feature names (not coloured by value).
        top_n: features shown, by mean |contribution|.
    """
    contrib = contributions.drop(columns=["bias"], errors="ignore")
    mean_abs = contrib.abs().mean().sort_values(ascending=False).head(top_n)
    names = list(mean_abs.index)[::-1]
    fig = _figure((12, max(3.5, 0.35 * len(names) + 1.2)))
    bar_ax, swarm_ax = fig.subplots(1, 2, sharey=True, width_ratios=[1, 2])
    bar_ax.barh(names, mean_abs[names].to_numpy())
    bar_ax.set(xlabel="mean |contribution| (log-odds)", title="Feature impact")
    rng = np.random.default_rng(seed)
    cat = set(categorical)
    scatter = None
    for i, name in enumerate(names):
        x = contrib[name].to_numpy(dtype=np.float64)
        jitter = rng.uniform(-0.35, 0.35, size=len(x))
        colour = np.full(len(x), np.nan)
        if feature_values is not None and name in feature_values.columns and name not in cat:
            vals = pd.to_numeric(feature_values[name], errors="coerce")
            colour = vals.rank(pct=True).to_numpy(dtype=np.float64, na_value=np.nan)
        grey = np.isnan(colour)
        swarm_ax.scatter(x[grey], i + jitter[grey], s=4, color="lightgrey", alpha=0.6, linewidths=0)
        scatter = swarm_ax.scatter(
            x[~grey], i + jitter[~grey], s=4, c=colour[~grey], cmap="coolwarm", vmin=0, vmax=1, alpha=0.7, linewidths=0
        )
    swarm_ax.axvline(0, color="grey", linewidth=0.8)
    swarm_ax.set(xlabel="contribution to the raw margin (log-odds)", title="Per-snapshot contributions")
    if scatter is not None:
        bar = fig.colorbar(scatter, ax=swarm_ax, pad=0.01)
        bar.set_label("feature value (rank: low to high)")
    return fig


def confusion_matrix_figure(matrix: Sequence[Sequence[int]], labels: Sequence[str], normalize: bool = True) -> Figure:
    """Confusion matrix heat map (rows = true stage, columns = predicted); row-normalised by default."""
    cm = np.asarray(matrix, dtype=np.float64)
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    fig = _figure((6.4, 5.6))
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels=list(labels))
    for i in range(len(labels)):
        for j in range(len(labels)):
            text = f"{shown[i, j]:.2f}\n({int(cm[i, j])})" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if shown[i, j] > 0.6 else "black")
    ax.set(xlabel="Predicted stage", ylabel="True stage", title="Stage confusion matrix (test)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def effects_forest_figure(table: pd.DataFrame, title: str = "Estimated effect on conversion (95 % interval)") -> Figure:
    """Forest plot of an effect table (:mod:`models.explain.effects`): one line per campaign and action.

    Rows without an estimate are listed with "not estimable"; the dashed line is "no effect".
    """
    rows = table[table["segment"] == "all"].reset_index(drop=True)
    labels = [
        f"{c} ({a})" if isinstance(c, str) and c else f"action {a}"
        for c, a in zip(rows["campaign_id"], rows["action"], strict=True)
    ]
    fig = _figure((6.4, max(2.4, 0.28 * len(rows) + 1.2)))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    est = rows["estimate"].to_numpy(dtype=float)
    lo, hi = rows["ci_low"].to_numpy(dtype=float), rows["ci_high"].to_numpy(dtype=float)
    ok = np.isfinite(est)
    flagged = ok & ((lo > 0) | (hi < 0))
    ax.errorbar(
        est[ok & ~flagged],
        y[ok & ~flagged],
        xerr=[est[ok & ~flagged] - lo[ok & ~flagged], hi[ok & ~flagged] - est[ok & ~flagged]],
        fmt="o",
        color="grey",
        label="no evidence of effect",
    )
    ax.errorbar(
        est[flagged],
        y[flagged],
        xerr=[est[flagged] - lo[flagged], hi[flagged] - est[flagged]],
        fmt="o",
        color="tab:blue",
        label="effect",
    )
    for yy in y[~ok]:
        ax.text(0, yy, "not estimable", va="center", ha="center", fontsize=7, color="grey")
    ax.axvline(0, linestyle="--", color="black", linewidth=1)
    ax.set_yticks(y, labels, fontsize=7)
    ax.set(xlabel="Change in the chance to convert within the horizon", title=title)
    if ok.any():
        ax.legend(loc="lower right", fontsize=7)
    return fig
