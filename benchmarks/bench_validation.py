"""Benchmark: load and validate a prospect-history data directory (features.validation).

Generates random contract-valid tables with numpy (plus a known number of injected bad rows),
or reuses an existing data directory, then times :func:`features.validation.load_history` and
prints rows/s and seconds per table.

Target: 100k leads / 5M activities from Parquet in well under 10 s.

Usage::

    .venv/bin/python benchmarks/bench_validation.py                       # 100k leads, 5M activities, Parquet
    .venv/bin/python benchmarks/bench_validation.py --format csv --activities 1000000
    .venv/bin/python benchmarks/bench_validation.py --data /tmp/leadscore-sim-100k
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.contract import AttributeSpec, Contract
from features.validation import load_history

ACTIVITY_TYPES = ["email_open", "email_click", "web_visit", "form_submit", "webinar_attended", "meeting"]
TOPICS = ["pricing", "product", "integration", "security", "case_study", "support", "careers", "events"]
CHANNELS = ["email", "web", "social", "paid_search"]
INDUSTRIES = ["software", "retail", "finance", "health", "manufacturing", "education", "public"]
REGIONS = ["emea", "amer", "apac"]
GENERATED_END = pd.Timestamp("2025-06-30T00:00Z")
GENERATED_NOW = pd.Timestamp("2025-07-01T00:00Z")
MARKER = "bench_validation.json"
US_PER_DAY = 86_400 * 1_000_000

# Injected bad rows per kind; every injected row is quarantined for exactly that reason.
N_BAD = 10


def _ts(values_us: np.ndarray) -> pa.Array:
    return pa.array(values_us, type=pa.timestamp("us", tz="UTC"))


def _with_nulls(rng: np.random.Generator, values: pa.Array, share: float) -> pa.Array:
    mask = pa.array(rng.random(len(values)) < share)
    return pa.compute.if_else(mask, pa.scalar(None, values.type), values)


def generate(out: Path, n_leads: int, n_activities: int, fmt: str, seed: int) -> dict[str, int]:
    """Write a contract-valid data directory with injected bad rows; return expected quarantine counts."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    start_us = pd.Timestamp("2023-01-01T00:00Z").value // 1000
    end_us = GENERATED_END.value // 1000

    # -- leads ----------------------------------------------------------------------------
    lead_ids = np.char.add("L", np.char.zfill(np.arange(n_leads).astype(str), 7))
    created = start_us + rng.integers(0, (end_us - start_us) // 2, n_leads)
    leads = pa.table(
        {
            "lead_id": pa.array(lead_ids),
            "created_at": _ts(created),
            "industry": _with_nulls(
                rng, pa.array(np.array(INDUSTRIES)[rng.integers(0, len(INDUSTRIES), n_leads)]), 0.1
            ),
            "region": pa.array(np.array(REGIONS)[rng.integers(0, len(REGIONS), n_leads)]),
            "employees": pa.array(np.round(rng.lognormal(4, 1.5, n_leads))),
            "annual_revenue": _with_nulls(rng, pa.array(np.round(rng.lognormal(14, 2, n_leads), 2)), 0.2),
        }
    )
    # Duplicate lead ids: copies of existing leads appended at the end (the first is kept).
    leads = pa.concat_tables([leads, leads.take(rng.choice(n_leads, N_BAD, replace=False))])

    # -- activities -----------------------------------------------------------------------
    # Skewed activity per lead, times after creation and before the end of the data.
    weights = rng.pareto(1.5, n_leads) + 0.1
    owner = rng.choice(n_leads, n_activities, p=weights / weights.sum())
    offset = (rng.exponential(60, n_activities) * US_PER_DAY).astype(np.int64)
    occurred = np.minimum(created[owner] + offset, end_us - rng.integers(0, US_PER_DAY, n_activities))
    value = np.where(rng.random(n_activities) < 0.2, rng.lognormal(3, 1, n_activities), np.nan)
    acts = {
        "lead_id": pa.array(lead_ids).take(pa.array(owner)),
        "occurred_at": occurred,
        "activity_type": pa.array(np.array(ACTIVITY_TYPES)[rng.integers(0, len(ACTIVITY_TYPES), n_activities)]),
        "channel": pa.array(np.array(CHANNELS)[rng.integers(0, len(CHANNELS), n_activities)]),
        "campaign_id": _with_nulls(
            rng, pa.array(np.char.add("C", rng.integers(0, 200, n_activities).astype(str))), 0.3
        ),
        "topic": _with_nulls(rng, pa.array(np.array(TOPICS)[rng.integers(0, len(TOPICS), n_activities)]), 0.4),
        "value": value,
    }
    # Bad rows: distinct random rows, each broken in exactly one way.
    bad = rng.choice(n_activities, 5 * N_BAD, replace=False)
    unknown, negative, future, early, bad_type = np.split(bad, 5)
    lead_col = acts["lead_id"].to_numpy(zero_copy_only=False).astype(object)
    lead_col[unknown] = "X-unknown"
    acts["lead_id"] = pa.array(lead_col, type=pa.string())
    acts["value"][negative] = -1.0
    acts["occurred_at"][future] = GENERATED_NOW.value // 1000 + US_PER_DAY
    acts["occurred_at"][early] = created[owner[early]] - US_PER_DAY
    type_col = acts["activity_type"].to_numpy(zero_copy_only=False).astype(object)
    type_col[bad_type] = "fax"
    acts["activity_type"] = pa.array(type_col, type=pa.string())
    acts["occurred_at"] = _ts(acts["occurred_at"])
    acts["value"] = pa.array(acts["value"], from_pandas=True)  # NaN -> null (an empty CSV field)
    activities = pa.table(acts)
    clean = np.setdiff1d(np.arange(n_activities), bad)
    activities = pa.concat_tables([activities, activities.take(rng.choice(clean, N_BAD, replace=False))])

    # -- stage history ----------------------------------------------------------------------
    rows_lead, rows_stage, rows_time = [], [], []
    reached = np.ones(n_leads, dtype=bool)
    at = created.copy()
    for stage, p_next in (("new", 0.7), ("mql", 0.5), ("sql", 0.6), ("opportunity", 1.0)):
        idx = np.flatnonzero(reached)
        rows_lead.append(idx)
        rows_stage.append(np.full(idx.size, stage))
        rows_time.append(at[idx])
        at = at + (rng.exponential(20, n_leads) * US_PER_DAY).astype(np.int64)
        reached &= (rng.random(n_leads) < p_next) & (at < end_us)
    closed = np.flatnonzero(reached)
    rows_lead.append(closed)
    rows_stage.append(np.array(["won", "lost", "disqualified"])[rng.integers(0, 3, closed.size)])
    rows_time.append(at[closed])
    lead_idx = np.concatenate(rows_lead)
    stage_col = np.concatenate(rows_stage).astype(object)
    stage_col[rng.choice(stage_col.size, N_BAD, replace=False)] = "negotiation"
    stages = pa.table(
        {
            "lead_id": pa.array(lead_ids).take(pa.array(lead_idx)),
            "stage": pa.array(stage_col, type=pa.string()),
            "entered_at": _ts(np.concatenate(rows_time)),
        }
    )

    for name, table in (("leads", leads), ("activities", activities), ("stage_history", stages)):
        for suffix in (".csv", ".parquet"):
            (out / f"{name}{suffix}").unlink(missing_ok=True)
        if fmt == "parquet":
            pq.write_table(table, out / f"{name}.parquet")
        else:
            pacsv.write_csv(table, out / f"{name}.csv")
    Contract(
        attributes=[
            AttributeSpec(name="industry", kind="categorical"),
            AttributeSpec(name="region", kind="categorical"),
            AttributeSpec(name="employees", kind="numeric"),
            AttributeSpec(name="annual_revenue", kind="numeric"),
        ],
        activity_types=ACTIVITY_TYPES,
        topics=TOPICS,
    ).dump(out)
    expected = {"leads": N_BAD, "activities": 6 * N_BAD, "stage_history": N_BAD}
    (out / MARKER).write_text(
        json.dumps({"leads": n_leads, "activities": n_activities, "format": fmt, "seed": seed, "expected": expected})
    )
    return expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="validate this existing data directory instead of generating one")
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--activities", type=int, default=5_000_000)
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="where to generate (default /tmp/leadscore-bench-validation-...)")
    parser.add_argument("--regenerate", action="store_true", help="regenerate even if a matching directory exists")
    parser.add_argument("--repeat", type=int, default=1, help="time this many runs and report the fastest")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    expected: dict[str, int] | None = None
    if args.data is not None:
        data_dir, now = args.data, None
    else:
        data_dir = args.out or Path(f"/tmp/leadscore-bench-validation-{args.leads}-{args.activities}-{args.format}")
        now = GENERATED_NOW
        marker = data_dir / MARKER
        wanted = {"leads": args.leads, "activities": args.activities, "format": args.format, "seed": args.seed}
        meta = json.loads(marker.read_text()) if marker.exists() else {}
        if args.regenerate or {k: meta.get(k) for k in wanted} != wanted:
            if data_dir.exists() and marker.exists():
                shutil.rmtree(data_dir)
            started = time.perf_counter()
            expected = generate(data_dir, args.leads, args.activities, args.format, args.seed)
            print(f"generated {data_dir} in {time.perf_counter() - started:.1f} s")
        else:
            expected = meta["expected"]
            print(f"reusing {data_dir}")

    best = None
    for _ in range(max(args.repeat, 1)):
        started = time.perf_counter()
        result = load_history(data_dir, now=now)
        total = time.perf_counter() - started
        if best is None or total < best[0]:
            best = (total, result)
    assert best is not None
    total, result = best

    print(f"\nload_history({data_dir}) — best of {max(args.repeat, 1)}")
    print(f"{'table':<14} {'rows':>11} {'seconds':>8} {'rows/s':>12} {'quarantined':>12}  reasons")
    for report in result.report.tables.values():
        rate = report.rows_read / report.seconds if report.seconds else float("inf")
        print(
            f"{report.table:<14} {report.rows_read:>11,} {report.seconds:>8.2f} {rate:>12,.0f} "
            f"{report.rows_quarantined:>12,}  {report.reasons}"
        )
    rows = result.report.rows_read
    print(f"{'total':<14} {rows:>11,} {total:>8.2f} {rows / total:>12,.0f} {result.report.rows_quarantined:>12,}")
    if expected is not None:
        got = {name: t.rows_quarantined for name, t in result.report.tables.items()}
        status = "ok" if got == expected else "MISMATCH"
        print(f"injected bad rows: expected {expected}, quarantined {got}: {status}")
        if got != expected:
            sys.exit(1)


if __name__ == "__main__":
    main()
