"""Benchmark: do smaller validation / test windows give a better model on the SAME final test period?

The default temporal split (test_fraction 0.2, valid_fraction 0.15, gaps = the label horizon) leaves only
the oldest third of a 2-year history for training. This script builds the point-in-time features once,
trains readiness (+ calibration) with the shipped default config under several split settings (gap >=
horizon always kept), and scores every model on one common final test period: the snapshot dates of the
smallest test window measured. A setting with a smaller test window trains on more recent data, and
all of them are compared on exactly the same rows.

Usage::

    .venv/bin/python benchmarks/bench_split.py --leads 8000 --seed 101

Seeds used by the tests are avoided (101 by default). The public data sets are not covered yet.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

# (label, test_weeks, valid_weeks); None = the shipped fractions
SETTINGS: list[tuple[str, int | None, int | None]] = [
    ("default (20% / 15%)", None, None),
    ("test 13w / valid 8w", 13, 8),
    ("test 8w / valid 8w", 8, 8),
    ("test 8w / valid 4w", 8, 4),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    from bench_quality_sim import markdown_table

    from features.build import build_features
    from features.config import FeatureConfig
    from features.simulator import generate
    from features.snapshots import configured_snapshot_dates
    from features.validation import load_history
    from models.config import load_train_config
    from models.fit.split import READINESS_TARGET
    from models.fit.training import prepare_training, train_models
    from models.judge.evaluation import readiness_metrics

    work = args.workdir or Path(tempfile.mkdtemp(prefix="leadscore-bench-split-"))
    data = work / "data"
    if not (data / "contract.yaml").exists():
        generate(args.leads, args.seed, data)
    history = load_history(data).history
    fconfig = FeatureConfig()
    t = time.perf_counter()
    frame, spec = build_features(history, configured_snapshot_dates(history, fconfig), fconfig)
    print(f"features: {len(frame):,} rows, {frame['as_of'].nunique()} dates in {time.perf_counter() - t:.0f} s")

    base = load_train_config()
    configs = {}
    for label, test_weeks, valid_weeks in SETTINGS:
        configs[label] = base.model_copy(
            update={"split": base.split.model_copy(update={"test_weeks": test_weeks, "valid_weeks": valid_weeks})}
        )
    # The common final test period: the newest test dates among all settings (the smallest window).
    common: pd.DataFrame | None = None
    for config in configs.values():
        test = prepare_training(frame, spec, config).split.readiness.test
        if common is None or test["as_of"].nunique() < common["as_of"].nunique():
            common = test
    assert common is not None
    print(
        f"common test period: {common['as_of'].min().date()} .. {common['as_of'].max().date()} "
        f"({common['as_of'].nunique()} dates, {len(common):,} rows, {int(common[READINESS_TARGET].sum())} converted)"
    )

    rows: list[list[Any]] = []
    for label, config in configs.items():
        t = time.perf_counter()
        result = train_models(frame, spec, config)
        summary = result.split.summary()["readiness"]
        y = common[READINESS_TARGET].to_numpy()
        m = readiness_metrics(y, result.readiness_model.predict_readiness(common), config.evaluation.ece_bins)
        dates = f"{summary['train_dates']} / {summary['valid_dates']} / {summary['test_dates']}"
        rows.append([label, dates, m["roc_auc"], m["pr_auc"], m["log_loss"], m["ece"], time.perf_counter() - t])
        print(rows[-1], flush=True)
    headers = ["split", "train / valid / test dates", "ROC AUC", "PR AUC", "log loss", "ECE", "seconds"]
    print()
    print(markdown_table(headers, rows))
    print(pd.Series({"leads": args.leads, "seed": args.seed}).to_string())


if __name__ == "__main__":
    main()
