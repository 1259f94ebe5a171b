"""Benchmark: campaign effect estimates against the simulator's true effects, time and peak memory.

For each seed, simulates the default world and the placebo world (``campaign_effect_scale = 0``) with
50,000 leads and 24 campaigns (unless the data directories already exist under ``--work``), fits
:class:`models.explain.effects.EffectEstimator` with its defaults and the policy's actions, and prints:

- Spearman(estimate, true_effect) over the estimated campaigns, and the same for the naive
  exposed-vs-unexposed contrast (target: >= 0.6, far above the naive one);
- zero-effect campaigns whose 95 % interval includes 0 (target: >= 80 %);
- placebo world: campaigns flagged as having an effect (target: <= 2 of 24) and by the naive contrast;
- fit time and the process's peak RSS (goal: under 2 minutes per run).

Validation seeds are 201, 202, 203 (development used 101, 102, 103 and their placebo worlds; never tune on
the validation seeds). benchmarks/bench_effects_oracle.py refits with the true phase added (a diagnostic).

Usage::

    python benchmarks/bench_effects.py                          # seeds 201 202 203, 50,000 leads
    python benchmarks/bench_effects.py --seeds 101 --leads 20000 --work /tmp/eff

Figures are wall-clock on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.simulator import generate
from features.simulator.config import SimulatorConfig
from features.validation import load_history
from models.explain.effects import ActionSpec, EffectEstimator, compare_with_truth

POLICY_ACTIONS = [
    ActionSpec("invite_to_demo", "demo_request"),
    ActionSpec("schedule_call", "sales_call"),
    ActionSpec("send_pricing", "pricing_page_view"),
    ActionSpec("invite_to_webinar", "webinar"),
    ActionSpec("invite_to_event", "event_attendance"),
    ActionSpec("send_case_study", "content_download"),
    ActionSpec("email_follow_up", "email_click"),
]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _data(work: Path, world: str, seed: int, leads: int) -> Path:
    out = work / f"{world}{seed}"
    if not (out / "ground_truth" / "campaigns.parquet").exists():
        scale = 0.0 if world == "placebo" else 1.0
        generate(leads, seed, out, config=SimulatorConfig(campaign_effect_scale=scale))
    return out


def run(seed: int, world: str, work: Path, leads: int, show: bool) -> dict[str, float | str]:
    data = _data(work, "val" if world == "default" else "placebo", seed, leads)
    history = load_history(data).history
    started = time.perf_counter()
    est = EffectEstimator(POLICY_ACTIONS).fit(history)
    seconds = time.perf_counter() - started
    truth = pd.read_parquet(data / "ground_truth" / "campaigns.parquet")
    stats = compare_with_truth(est.table_, truth)
    if show:
        t = est.campaigns().merge(truth[["campaign_id", "kind", "true_effect"]], on="campaign_id", suffixes=("", "_c"))
        cols = ["campaign_id", "kind_c", "n_exposed", "estimate", "ci_low", "ci_high", "naive_estimate", "true_effect"]
        print(f"\n### seed {seed}, {world} world\n")
        print(t[cols].round(4).to_string(index=False))
    return {"seed": seed, "world": world, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), **stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[201, 202, 203])
    parser.add_argument("--leads", type=int, default=50_000)
    parser.add_argument("--work", type=Path, default=None, help="where the simulated data sets go (kept)")
    parser.add_argument("--show", action="store_true", help="print every campaign's row")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-effects-"))
    rows = [run(s, w, work, args.leads, args.show) for s in args.seeds for w in ("default", "placebo")]
    table = pd.DataFrame(rows)
    print("\n## summary\n")
    print(table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
