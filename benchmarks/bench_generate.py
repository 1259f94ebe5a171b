"""Benchmark the built-in simulator: throughput, peak memory and what was written.

Usage::

    .venv/bin/python benchmarks/bench_generate.py --leads 100000 --out /tmp/leadscore-sim-100k
    .venv/bin/python benchmarks/bench_generate.py --leads 1000000 --out /tmp/sim-1m --delete

Target: 1,000,000 leads in under 5 minutes on 2 cores, with peak RSS independent of ``--leads``
(leads are simulated and written in fixed-size chunks). Peak RSS is the process high-water mark
from ``resource.getrusage`` (Linux reports KiB).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.simulator import SimulatorConfig, generate


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _dir_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000, help="number of leads to simulate")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: a temporary one)")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    parser.add_argument("--chunk-size", type=int, default=None, help="override SimulatorConfig.chunk_size")
    parser.add_argument("--delete", action="store_true", help="delete the output afterwards")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="leadscore-bench-"))
    config = SimulatorConfig() if args.chunk_size is None else SimulatorConfig(chunk_size=args.chunk_size)
    rss_before = _rss_mib()
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 15 or done == total:
            print(f"  {done:>10,} / {total:,} leads  (peak RSS so far {_rss_mib():,.0f} MiB)", flush=True)
            last[0] = now

    started = time.perf_counter()
    summary = generate(args.leads, args.seed, out, config=config, fmt=args.format, progress=progress)
    seconds = time.perf_counter() - started
    print()
    print(summary)
    print()
    print(f"leads written        {summary.n_leads:,}")
    print(f"activities written   {summary.n_activities:,} ({summary.activities_per_lead:.1f} per lead)")
    print(f"stage changes        {summary.n_stage_changes:,}")
    print(f"propensity rows      {summary.n_propensity_rows:,}")
    print(f"seconds              {seconds:.1f}")
    print(f"leads/s              {summary.n_leads / seconds:,.0f}")
    print(f"activities/s         {summary.n_activities / seconds:,.0f}")
    print(f"peak RSS             {_rss_mib():,.0f} MiB (before generate: {rss_before:,.0f} MiB)")
    print(f"conversion rate      {summary.conversion_rate:.2%}")
    print(f"chunk size / chunks  {config.chunk_size:,} / {summary.chunks}")
    print(f"output size          {_dir_mib(out):,.0f} MiB in {out}")
    if args.delete:
        shutil.rmtree(out)
        print(f"deleted {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
