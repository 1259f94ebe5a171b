"""Benchmark: the point-in-time feature build (features.build.build_features).

Loads a data directory (via :func:`features.validation.load_history`), then builds features for the
last ``--snapshots`` weekly snapshots of the data and prints the rows, the feature count, the build
time (median of ``--runs``), the load time and peak resident memory.

Without ``--data`` it uses the simulator's 100k-lead data set at /tmp/leadscore-sim-100k when present,
otherwise (or with ``--synthetic``) it writes random contract-valid Parquet tables (numpy: ``--leads``
leads, 50 activities per lead, 9 activity types, 5 topics) to /tmp/leadscore-bench-features-<N> once
and reuses them. Generation runs in a child process so it does not count towards the peak memory.

Targets (2-core machine, 100k leads / ~5M activities / 26 weekly snapshots): build under 20 s, never
over 60 s, peak memory under 3 GB.

Usage::

    .venv/bin/python benchmarks/bench_features.py
    .venv/bin/python benchmarks/bench_features.py --synthetic --leads 100000
    .venv/bin/python benchmarks/bench_features.py --data /tmp/leadscore-sim-100k --runs 3
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import build_features
from features.config import FeatureConfig
from features.contract import AttributeSpec, Contract, StageSpec
from features.history import ProspectHistory
from features.snapshots import snapshot_dates

SIMULATED = Path("/tmp/leadscore-sim-100k")
ACTIVITY_TYPES = [
    "email_open",
    "email_click",
    "web_visit",
    "content_download",
    "form_submit",
    "webinar_attended",
    "event_visit",
    "meeting",
    "trial_signup",
]
TOPICS = ["pricing", "integration", "security", "analytics", "support"]
CHANNELS = ["email", "web", "social", "paid_search", "events"]
INDUSTRIES = ["software", "retail", "finance", "health", "manufacturing", "education"]
REGIONS = ["emea", "amer", "apac"]
START = pd.Timestamp("2024-07-01T00:00Z")
END = pd.Timestamp("2025-06-30T00:00Z")
MARKER = "bench_features.json"


# -- memory --------------------------------------------------------------------------------------


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter for this process (Linux >= 4.0); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_mb() -> float:
    """Peak resident memory since the last reset (VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- synthetic data ------------------------------------------------------------------------------


def synthetic_contract() -> Contract:
    return Contract(
        name="bench-features",
        attributes=[
            AttributeSpec(name="industry", kind="categorical"),
            AttributeSpec(name="region", kind="categorical"),
            AttributeSpec(name="employees", kind="numeric"),
        ],
        activity_types=ACTIVITY_TYPES,
        topics=TOPICS,
        stages=StageSpec(),
    )


def _ts(seconds: np.ndarray) -> pa.Array:
    return pa.array(seconds * 1_000_000, type=pa.timestamp("us", tz="UTC"))


def _strings(vocab: list[str], codes: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=missing), pa.array(vocab))
    return arr.cast(pa.string())


def generate(out: Path, n_leads: int, n_activities: int, seed: int = 7) -> None:
    """Write random contract-valid leads/activities/stage_history Parquet tables and contract.yaml."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    start, end = int(START.timestamp()), int(END.timestamp())
    span = end - start

    created = np.sort(start + rng.integers(0, span - 86_400, n_leads))
    ids = np.char.add("L", np.char.zfill(np.arange(n_leads).astype(str), 7))
    pq.write_table(
        pa.table(
            {
                "lead_id": pa.array(ids),
                "created_at": _ts(created),
                "industry": _strings(INDUSTRIES, rng.integers(0, len(INDUSTRIES), n_leads), rng.random(n_leads) < 0.1),
                "region": _strings(REGIONS, rng.integers(0, len(REGIONS), n_leads)),
                "employees": pa.array(np.round(rng.lognormal(4, 1.5, n_leads)), mask=rng.random(n_leads) < 0.05),
            }
        ),
        out / "leads.parquet",
    )

    # Engagement is skewed (a few leads are very active) and decays after creation.
    weight = rng.pareto(1.5, n_leads) + 0.1
    lead = rng.choice(n_leads, n_activities, p=weight / weight.sum())
    lead.sort()
    life = end - created[lead]
    delay = np.minimum(rng.exponential(0.3, n_activities) * life, life).astype(np.int64)
    occurred = created[lead] + delay
    order = np.lexsort((occurred, lead))
    lead, occurred = lead[order], occurred[order]
    type_p = np.array([30, 10, 25, 8, 6, 5, 3, 8, 5], dtype=float)
    topic_missing = rng.random(n_activities) < 0.4
    pq.write_table(
        pa.table(
            {
                "lead_id": pa.array(ids[lead]),
                "occurred_at": _ts(occurred),
                "activity_type": _strings(
                    ACTIVITY_TYPES, rng.choice(len(ACTIVITY_TYPES), n_activities, p=type_p / type_p.sum())
                ),
                "channel": _strings(
                    CHANNELS, rng.integers(0, len(CHANNELS), n_activities), rng.random(n_activities) < 0.05
                ),
                "campaign_id": _strings(
                    [f"cmp{i:04d}" for i in range(400)],
                    rng.integers(0, 400, n_activities),
                    rng.random(n_activities) < 0.5,
                ),
                "topic": _strings(TOPICS, rng.integers(0, len(TOPICS), n_activities), topic_missing),
                "value": pa.array(np.round(rng.exponential(50, n_activities), 2), mask=rng.random(n_activities) < 0.9),
            }
        ),
        out / "activities.parquet",
    )

    # Funnel: new at creation; some advance; some close (won/lost/disqualified) at a later time.
    order_names = StageSpec().order
    s_lead, s_stage, s_time = [np.arange(n_leads)], [np.zeros(n_leads, dtype=np.int64)], [created]
    current = created.copy()
    alive = np.ones(n_leads, dtype=bool)
    for code, p_next in ((1, 0.6), (2, 0.5), (3, 0.5)):
        step = alive & (rng.random(n_leads) < p_next)
        current = np.where(step, current + rng.exponential(20 * 86_400, n_leads).astype(np.int64), current)
        step &= current < end
        s_lead.append(np.flatnonzero(step))
        s_stage.append(np.full(step.sum(), code))
        s_time.append(current[step])
        alive = step
    closing = rng.random(n_leads) < 0.45
    close_time = np.maximum(current, created) + rng.exponential(30 * 86_400, n_leads).astype(np.int64)
    closing &= close_time < end
    outcome = rng.choice([4, 5, 6], n_leads, p=[0.3, 0.5, 0.2])
    s_lead.append(np.flatnonzero(closing))
    s_stage.append(outcome[closing])
    s_time.append(close_time[closing])
    sl, ss, st = np.concatenate(s_lead), np.concatenate(s_stage), np.concatenate(s_time)
    order = np.lexsort((st, sl))
    pq.write_table(
        pa.table(
            {
                "lead_id": pa.array(ids[sl[order]]),
                "stage": _strings(order_names, ss[order]),
                "entered_at": _ts(st[order]),
            }
        ),
        out / "stage_history.parquet",
    )
    synthetic_contract().dump(out / "contract.yaml")
    (out / MARKER).write_text(json.dumps({"leads": n_leads, "activities": n_activities, "seed": seed}))


def _ensure_synthetic(n_leads: int, n_activities: int) -> Path:
    out = Path(f"/tmp/leadscore-bench-features-{n_leads}")
    marker = out / MARKER
    wanted = {"leads": n_leads, "activities": n_activities, "seed": 7}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return out
    print(f"generating {n_leads:,} leads / {n_activities:,} activities in {out} ...", flush=True)
    started = time.perf_counter()
    proc = multiprocessing.get_context("spawn").Process(target=generate, args=(out, n_leads, n_activities))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"data generation failed (exit code {proc.exitcode})")
    print(f"generated in {time.perf_counter() - started:.1f} s", flush=True)
    return out


# -- loading -------------------------------------------------------------------------------------


def load(data_dir: Path) -> ProspectHistory:
    """Load through features.validation when available, else read Parquet into canonical dtypes."""
    try:
        from features import validation
    except ImportError:
        validation = None  # type: ignore[assignment]
    if validation is not None:
        return validation.load_history(data_dir).history
    contract = Contract.load(data_dir)

    def read(name: str, time_col: str) -> pd.DataFrame:
        frame = pd.read_parquet(data_dir / f"{name}.parquet")
        frame[time_col] = pd.to_datetime(frame[time_col], utc=True)
        for column in frame.columns:
            if frame[column].dtype == object:
                frame[column] = frame[column].astype("str")
        return frame

    return ProspectHistory(
        contract,
        read("leads", "created_at"),
        read("activities", "occurred_at"),
        read("stage_history", "entered_at"),
    )


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="data directory (default: simulator output or synthetic data)")
    parser.add_argument("--synthetic", action="store_true", help="use generated random data even if simulated exists")
    parser.add_argument("--leads", type=int, default=100_000, help="leads to generate (synthetic data)")
    parser.add_argument("--activities-per-lead", type=int, default=50)
    parser.add_argument("--snapshots", type=int, default=26, help="weekly snapshots (the last N of the data)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.snapshots < 1:
        parser.error("--runs and --snapshots must be at least 1")

    if args.data is not None:
        data_dir = args.data
    elif SIMULATED.exists() and not args.synthetic:
        data_dir = SIMULATED
    else:
        data_dir = _ensure_synthetic(args.leads, args.leads * args.activities_per_lead)

    _reset_peak()
    started = time.perf_counter()
    history = load(data_dir)
    load_seconds = time.perf_counter() - started
    load_peak = _peak_mb()
    rss_loaded = _rss_mb()

    config = FeatureConfig()
    dates = snapshot_dates(history, 7)[-args.snapshots :]
    times: list[float] = []
    build_peak = 0.0
    frame: pd.DataFrame | None = None
    for _ in range(args.runs):
        frame = None  # free the previous result before measuring the next run
        _reset_peak()
        started = time.perf_counter()
        frame, spec = build_features(history, dates, config)
        times.append(time.perf_counter() - started)
        build_peak = max(build_peak, _peak_mb())
    assert frame is not None
    result_mb = frame.memory_usage(deep=True).sum() / 2**20

    median = statistics.median(times)
    print(f"data:               {data_dir}")
    print(
        f"input:              {len(history.leads):,} leads, {len(history.activities):,} activities, "
        f"{len(history.stage_history):,} stage entries"
    )
    print(f"snapshots:          {len(dates)} weekly, {dates[0].date()} .. {dates[-1].date()}")
    print(f"rows:               {len(frame):,}")
    print(
        f"features:           {len(spec.features)} ({len(spec.categorical)} categorical, {len(spec.numeric)} numeric)"
    )
    print(f"positive rate:      {frame['converted'].mean():.4f}")
    print(f"load:               {load_seconds:.2f} s (peak RSS {load_peak:,.0f} MB)")
    print(f"build:              {median:.2f} s median of {args.runs} (runs: {', '.join(f'{t:.2f}' for t in times)})")
    print(f"peak RSS (build):   {build_peak:,.0f} MB (RSS after load {rss_loaded:,.0f} MB; result {result_mb:,.0f} MB)")
    print(f"peak RSS (process): {max(load_peak, build_peak):,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
