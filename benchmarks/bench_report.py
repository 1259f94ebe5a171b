"""Benchmark: time and peak memory to build the alignment report for 100,000 scored leads, 12 batches of history.

Goal (issue 11): under 30 s.

Setup (not timed): a simulated history large enough that ~100,000 leads are open at its end (generated
once into ``--data``), a model trained with a small config on a separate 10,000-lead simulation, a drift
reference rebuilt at 4 weekly dates, and a SQLite store with 12 batches two weeks apart (the older half
has matured 90-day labels) of every open lead (real point-in-time features and model outputs; some grade
A/B leads handed off) plus 2,000 feedback verdicts.

Timed, in a fresh child process (its peak RSS is the memory figure): what ``leadscore report --data`` does
after loading the champion: load the history, gather every input (store, matured outcomes, sources,
campaigns, drift), compute the sections, draw the charts, render and write the page.

Usage::

    python benchmarks/bench_report.py                 # /tmp/leadscore-report-bench-150k (generated if missing)
    python benchmarks/bench_report.py --leads 150000 --batches 12

Wall-clock on a shared machine: compare figures within one run.
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_DATA = Path("/tmp/leadscore-report-bench-150k")


class _Info:
    name = "bench"
    version = 1
    run_id = None
    trained_at = None
    model_uri = "benchmark"
    metrics: ClassVar[dict[str, float]] = {}


def _setup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from features.build import build_features
    from features.simulator import generate
    from features.snapshots import snapshot_dates
    from features.validation import load_history
    from models.config import parse_train_config
    from models.fit.training import train_models
    from models.package.promotion import feature_config_of
    from serving.monitoring.monitor import reference_from_history
    from serving.policy import load_policy
    from serving.stores import ScoreStore

    if not (args.data / "contract.yaml").exists():
        print(f"generating {args.leads:,} leads into {args.data} ...")
        generate(args.leads, 7, args.data)
    small = work / "train-data"
    generate(10_000, 3, small)
    small_history = load_history(small).history
    frame, spec = build_features(small_history, snapshot_dates(small_history, 28), feature_config_of_default())
    config = parse_train_config(
        {
            "readiness": {"num_boost_round": 80, "early_stopping_rounds": 10},
            "stage": {"num_boost_round": 40, "early_stopping_rounds": 10},
            "evaluation": {"plots": False, "shap_sample_rows": 200},
        },
        source="bench",
    )
    model = train_models(frame, spec, config).model
    del frame

    history = load_history(args.data).history
    end = history.span[1].floor("D")
    every = args.every_days
    dates = pd.DatetimeIndex([end - pd.Timedelta(days=every * k) for k in range(args.batches - 1, -1, -1)])
    reference = reference_from_history(history, model, dates[0] - pd.Timedelta(days=120), 4)
    policy = load_policy(None)
    store_url = f"sqlite:///{work / 'store.db'}"
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    n_current = 0
    with ScoreStore(store_url) as store:
        for as_of in dates:
            feats, _ = build_features(history, [as_of], feature_config_of(model))
            out = model.predict_arrays(feats)
            n = len(feats)
            labels = model.stage_labels
            scores = pd.DataFrame(
                {
                    "lead_id": feats["lead_id"].astype(str).to_numpy(),
                    "readiness": out["readiness"],
                    "score": out["score"],
                    "grade": out["grade"].astype(str),
                    "stage": out["stage"].astype(str),
                    "stage_probabilities": [dict(zip(labels, r.tolist(), strict=True)) for r in out["stage_proba"]],
                    "trend": "new",
                    "handoff": np.isin(out["grade"].astype(str), ["A", "B"]) & (rng.random(n) < 0.2),
                    "handoff_rule": "bench",
                }
            )
            when = as_of.to_pydatetime()
            store.write_batch(
                scores, model_name="bench", model_version="1", policy_version=policy.policy_version, as_of=when,
                scored_at=when,
            )  # fmt: skip
            n_current = n
        handoffs = pd.read_sql("SELECT handoff_id, lead_id, handed_off_at FROM handoffs", store.engine)
        for i, row in enumerate(handoffs.sample(n=min(2000, len(handoffs)), random_state=0).itertuples()):
            at = pd.Timestamp(row.handed_off_at, tz="UTC").to_pydatetime() + pd.Timedelta(hours=5 + i % 200)
            store.record_feedback(
                row.lead_id, row.handoff_id, "accepted" if i % 3 else "rejected",
                None if i % 3 else "not_ready", recorded_at=at,
            )  # fmt: skip
    print(f"store: {args.batches} batches, {n_current:,} leads in the current one ({time.perf_counter() - t:.0f} s)")
    with (work / "model.pkl").open("wb") as fh:
        pickle.dump(model, fh)
    reference.to_parquet(work / "reference.parquet")
    return {"store_url": store_url, "n_current": n_current, "leads": len(history.leads)}


def feature_config_of_default() -> Any:
    from features.config import FeatureConfig

    return FeatureConfig()


def _child(data: Path, work: Path, out: Path) -> None:
    """The timed part, in its own process."""
    from features.validation import load_history
    from serving.policy import load_policy
    from serving.report.build import gather_inputs
    from serving.report.render import build_report, write_report
    from serving.stores import ScoreStore

    with (work / "model.pkl").open("rb") as fh:
        model = pickle.load(fh)
    reference = pd.read_parquet(work / "reference.parquet")
    t0 = time.perf_counter()
    history = load_history(data).history
    t_history = time.perf_counter() - t0
    with ScoreStore(f"sqlite:///{work / 'store.db'}") as store:
        inputs = gather_inputs(store, model, _Info(), load_policy(None), history=history, reference=reference)
    t = time.perf_counter()
    html, sections = build_report(inputs)
    t_render = time.perf_counter() - t
    write_report(html, out)
    total = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "total_s": total,
                "load_history_s": t_history,
                "gather_s": inputs.timings,
                "render_s": t_render,
                "n_current": sections.n_current,
                "n_batches": sections.n_batches,
                "matured_scores": sections.grades.n_matured,
                "html_bytes": len(html.encode()),
                "drift_features": sections.drift.n_features,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--leads", type=int, default=150_000, help="leads to simulate (~2/3 are open at the end)")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument(
        "--every-days", type=int, default=14, help="batch spacing (14: the older half has matured 90-day labels)"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        _child(args.data, args.child, args.child / "report.html")
        return 0
    with tempfile.TemporaryDirectory(prefix="leadscore-bench-report-") as tmp:
        work = Path(tmp)
        facts = _setup(args, work)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        done = subprocess.run(
            [sys.executable, __file__, "--data", str(args.data), "--child", str(work)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\nreport for {facts['n_current']:,} scored leads ({figures['n_batches']} batches, {facts['leads']:,} leads):"
    )
    print(
        f"  total {figures['total_s']:.1f} s (goal < 30 s); peak RSS {peak_mib:,.0f} MiB "
        f"(setup children before: {before / 1024:,.0f} MiB)"
    )
    print(
        f"  load history {figures['load_history_s']:.1f} s; gather "
        + ", ".join(f"{k} {v:.1f}" for k, v in figures["gather_s"].items())
    )
    print(f"  sections + charts + page {figures['render_s']:.1f} s; {figures['html_bytes'] / 1024:,.0f} KiB of HTML")
    print(f"  matured scores {figures['matured_scores']:,}; drift over {figures['drift_features']} features")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
