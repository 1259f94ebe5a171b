"""Diagnostic: how much of the effect estimator's bias is the lead's unrecorded buying phase?

Fits :class:`models.explain.effects.EffectEstimator` twice on simulated data: as it is, and with the
simulator's *true* phase of each lead at each unit's ``as_of`` (from ``ground_truth/propensity.parquet``,
the phase at the latest simulated week start at or before ``as_of``) added to its features as one-hot
columns. The second fit is an oracle no real data allows; it shows what the design would give if the
confounder the features miss were recorded. The estimator itself never reads ``ground_truth/``: this
script patches the feature encoding in its own process only.

On the development seeds' placebo worlds (101, 102, 103) the oracle brings the inverse-variance weighted
mean estimate from 0.0027 / 0.0041 / 0.0044 to -0.0016 / 0.0006 / 0.0008 and the campaigns flagged from
4 / 4 / 4 to 3 / 2 / 0 (docs/effects.md).

Usage::

    python benchmarks/bench_effects_oracle.py --data /tmp/eff/placebo101 [--data ...]

``--data`` directories are simulator outputs (``leadscore generate``, or ``bench_effects.py --work``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models.explain.effects as effects_module
from features.validation import load_history
from models.explain.effects import EffectEstimator, compare_with_truth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_effects import POLICY_ACTIONS


def _with_true_phase(data: Path) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """An ``_encode`` that appends the true phase at each row's ``as_of`` as one-hot columns."""
    truth = pd.read_parquet(data / "ground_truth" / "propensity.parquet", columns=["lead_id", "week_start", "phase"])
    phases = sorted(truth["phase"].unique())
    week_us = np.sort(pd.DatetimeIndex(truth["week_start"].unique()).as_unit("us").asi8)
    encode = effects_module._encode

    def patched(frame: pd.DataFrame, features: list[str], categorical: list[str]) -> tuple[np.ndarray, np.ndarray]:
        X, stage = encode(frame, features, categorical)
        as_of = pd.DatetimeIndex(frame["as_of"]).as_unit("us").asi8
        start = week_us[np.maximum(np.searchsorted(week_us, as_of, side="right") - 1, 0)]
        when = pd.to_datetime(start, unit="us", utc=True)
        key = pd.DataFrame({"lead_id": frame["lead_id"].to_numpy(), "week_start": when})
        key["week_start"] = key["week_start"].astype(truth["week_start"].dtype)
        phase = key.merge(truth, on=["lead_id", "week_start"], how="left")["phase"].to_numpy()
        onehot = np.column_stack([(phase == p).astype(np.float32) for p in phases])
        return np.hstack([X, onehot]), stage

    return patched


def run(data: Path, oracle: bool) -> dict[str, Any]:
    history = load_history(data).history
    original = effects_module._encode
    if oracle:
        effects_module._encode = _with_true_phase(data)  # type: ignore[assignment]
    try:
        table = EffectEstimator(POLICY_ACTIONS).fit(history).table_
    finally:
        effects_module._encode = original  # type: ignore[assignment]
    truth = pd.read_parquet(data / "ground_truth" / "campaigns.parquet")
    stats = compare_with_truth(table, truth)
    rows = table[(table["kind"] == "campaign") & (table["segment"] == "all") & table["estimate"].notna()]
    se = (rows["ci_high"] - rows["ci_low"]) / (2 * 1.959963984540054)
    weighted = float(np.average(rows["estimate"], weights=1 / se**2)) if len(rows) else float("nan")
    return {"data": data.name, "oracle": oracle, "weighted_mean_estimate": round(weighted, 4), **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--oracle-only", action="store_true", help="skip the fit without the true phase")
    args = parser.parse_args()
    for data in args.data:
        for oracle in (True,) if args.oracle_only else (False, True):
            print(json.dumps(run(data, oracle)), flush=True)


if __name__ == "__main__":
    main()
