"""Benchmark: do smaller validation / test windows give a better model on the SAME final test period?

The old default temporal split (test_fraction 0.2, valid_fraction 0.15, gaps = the label horizon) leaves
only the oldest third of a 2-year history for training. This script builds the point-in-time features of a
data set once, trains readiness (+ calibration) with the data set's config under several split settings
(gap >= horizon always kept), and scores every model on one common final test period: the snapshot dates
of the smallest test window among the settings the data allows. A setting with a smaller test window
trains on more, and more recent, data; all of them are compared on exactly the same rows, with a paired
lead-bootstrap interval of each setting's PR AUC minus the old default's.

Data sets: ``sim:<seed>`` (the built-in simulator, ``--leads`` leads) and the public data sets with a
history (``olist_marketing_funnel``, ``maven_crm_sales_opportunities``, imported with their shipped
mapping and trained with their shipped recommended config). The single-snapshot public data sets
(``x_education_leads``, ``uci_bank_marketing``) have no time to split on (stratified by lead) and are
listed as not applicable.

Usage::

    .venv/bin/python benchmarks/bench_split.py --data-sets sim:101,sim:102,olist_marketing_funnel,\
maven_crm_sales_opportunities --markdown /tmp/split.md

Simulator seeds used by the tests are avoided (101, 102). Nothing here is tuned: the settings are fixed
below and every data set gets all of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (label, test_weeks, valid_weeks, test_fraction, valid_fraction); weeks None = the fractions
SETTINGS: list[tuple[str, int | None, int | None, float, float]] = [
    ("fractions 20% / 15% (old default)", None, None, 0.2, 0.15),
    ("fractions 10% / 10%", None, None, 0.1, 0.1),
    ("test 13w / valid 8w", 13, 8, 0.2, 0.15),
    ("test 8w / valid 8w", 8, 8, 0.2, 0.15),
    ("test 8w / valid 4w", 8, 4, 0.2, 0.15),
    ("test 4w / valid 4w", 4, 4, 0.2, 0.15),
]
REFERENCE = SETTINGS[0][0]
SINGLE_SNAPSHOT = ("x_education_leads", "uci_bank_marketing")


@dataclass
class Row:
    data_set: str
    setting: str
    dates: str
    train_rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    diff_interval: tuple[float, float] | None = None
    seconds: float = 0.0
    note: str = ""


def _features(name: str, leads: int, workdir: Path) -> tuple[pd.DataFrame, Any, Any]:
    """(features frame, spec, train config) of one data set, the way users get them."""
    from pipelines.config import load_config

    if name.startswith("sim:"):
        from features.simulator import generate

        data = workdir / name.replace(":", "-")
        if not (data / "contract.yaml").exists():
            generate(leads, int(name.split(":", 1)[1]), data)
        config = load_config(None)
    else:
        from features.mapping import import_export, recommended_config

        data = workdir / name
        if not (data / "contract.yaml").exists():
            import_export(name, Path(os.environ.get("LEADSCORE_SHARED_DATA", "../shared/data")) / name, data)
        config = load_config(recommended_config(name))
    from quality import build_feature_table

    frame, spec = build_feature_table(data, config.features)
    return frame, spec, config.train


def run_data_set(name: str, leads: int, workdir: Path, resamples: int) -> list[Row]:
    from bench_quality_sim import lead_bootstrap

    from models.fit.split import READINESS_TARGET, InsufficientDataError
    from models.fit.training import prepare_training, train_models
    from models.judge.evaluation import readiness_metrics

    t = time.perf_counter()
    frame, spec, base = _features(name, leads, workdir)
    print(f"{name}: features {len(frame):,} rows, {frame['as_of'].nunique()} dates, {time.perf_counter() - t:.0f} s")
    configs = {
        label: base.model_copy(
            update={
                "split": base.split.model_copy(
                    update={"test_weeks": tw, "valid_weeks": vw, "test_fraction": tf, "valid_fraction": vf}
                )
            }
        )
        for label, tw, vw, tf, vf in SETTINGS
    }
    feasible, rows = {}, []
    for label, config in configs.items():
        try:
            feasible[label] = prepare_training(frame, spec, config).split.readiness.test
        except InsufficientDataError as exc:
            rows.append(Row(name, label, "-", 0, note=f"not possible: {str(exc).split('.')[0]}"))
    common = min(feasible.values(), key=lambda test: test["as_of"].nunique())
    print(
        f"  common test period {common['as_of'].min().date()} .. {common['as_of'].max().date()} "
        f"({common['as_of'].nunique()} dates, {len(common):,} rows, {int(common[READINESS_TARGET].sum())} converted)"
    )
    y = common[READINESS_TARGET].to_numpy()
    scores: dict[str, np.ndarray] = {}
    for label in feasible:
        t = time.perf_counter()
        config = configs[label]
        result = train_models(frame, spec, config)
        s = result.split.summary()["readiness"]
        scores[label] = result.readiness_model.predict_readiness(common)
        row = Row(
            name,
            label,
            f"{s['train_dates']} / {s['valid_dates']} / {s['test_dates']}",
            int(s.get("train_rows", len(result.split.readiness.train))),
            metrics=readiness_metrics(y, scores[label], config.evaluation.ece_bins),
            seconds=time.perf_counter() - t,
        )
        rows.append(row)
        print(f"  {label}: {row.dates} dates, {row.metrics['pr_auc']:.4f} PR AUC, {row.seconds:.0f} s", flush=True)
    if REFERENCE in scores:
        draws = lead_bootstrap(common["lead_id"], y, scores, {}, resamples, seed=base.seed)
        for row in rows:
            if row.setting in scores and row.setting != REFERENCE:
                diff = draws[row.setting]["pr_auc"] - draws[REFERENCE]["pr_auc"]
                diff = diff[np.isfinite(diff)]
                low, high = np.quantile(diff, [0.025, 0.975])
                row.diff_interval = (float(low), float(high))
    rows.sort(key=lambda r: [s[0] for s in SETTINGS].index(r.setting))
    head = f"{common['as_of'].min().date()} .. {common['as_of'].max().date()}, {common['as_of'].nunique()} dates"
    for row in rows:
        row.note = row.note or f"common test {head}"
    return rows


def render(rows: list[Row]) -> str:
    from bench_quality_sim import markdown_table

    headers = [
        "data set",
        "split",
        "train / valid / test dates",
        "train rows",
        "ROC AUC",
        "PR AUC",
        "PR AUC - old default (95 % lead bootstrap)",
        "log loss",
        "ECE",
        "seconds",
    ]
    body: list[list[Any]] = []
    for r in rows:
        if not r.metrics:
            body.append([r.data_set, r.setting, "-", "-", "-", "-", r.note, "-", "-", "-"])
            continue
        m = r.metrics
        diff = (
            "reference"
            if r.setting == REFERENCE
            else (f"{m['pr_auc'] - _ref(rows, r):+.4f} ({r.diff_interval[0]:+.4f} .. {r.diff_interval[1]:+.4f})")
            if r.diff_interval
            else "-"
        )
        row: list[Any] = [r.data_set, r.setting, r.dates, r.train_rows, m["roc_auc"], m["pr_auc"], diff]
        row.extend([m["log_loss"], m["ece"], round(r.seconds)])
        body.append(row)
    return markdown_table(headers, body)


def _ref(rows: list[Row], row: Row) -> float:
    return next(r.metrics["pr_auc"] for r in rows if r.data_set == row.data_set and r.setting == REFERENCE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-sets", default="sim:101", help="comma-separated: sim:<seed> or a public data set")
    parser.add_argument("--leads", type=int, default=8000, help="simulated leads per sim:<seed> data set")
    parser.add_argument("--resamples", type=int, default=300)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()

    from bench_quality_sim import machine_info

    work = args.workdir or Path(tempfile.mkdtemp(prefix="leadscore-bench-split-"))
    rows: list[Row] = []
    for name in args.data_sets.split(","):
        if name in SINGLE_SNAPSHOT:
            rows.append(Row(name, "-", "-", 0, note="not applicable: single snapshot, stratified split by lead"))
            continue
        rows.extend(run_data_set(name, args.leads, work, args.resamples))
    table = render(rows)
    print()
    print(table)
    print(f"\nmachine: {machine_info()}; leads per simulated data set: {args.leads}")
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
