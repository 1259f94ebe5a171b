"""``generate``: write a simulated prospect-history data directory with its ground truth."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from features.contract import CONTRACT_FILE, AttributeSpec, Contract, StageSpec
from features.simulator import catalog as cat
from features.simulator.chunk_data import NO_TIME, STAGE_ORDER
from features.simulator.config import SimulatorConfig
from features.simulator.output import (
    ACTIVITIES_SCHEMA,
    CAMPAIGNS_SCHEMA,
    LEADS_SCHEMA,
    PROPENSITY_SCHEMA,
    STAGES_SCHEMA,
    TRUTH_LEADS_SCHEMA,
    AtomicTableWriter,
    campaigns_table,
    chunk_tables,
)
from features.simulator.process import simulate_chunk
from features.simulator.world import build_world

GROUND_TRUTH_DIR = "ground_truth"
TABLE_NAMES = ("leads", "activities", "stage_history")
_FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class GenerationSummary:
    """What :func:`generate` wrote.

    ``paths`` maps ``leads``, ``activities``, ``stage_history``, ``contract`` and the ground truth
    ``truth_leads``, ``propensity`` and ``campaigns`` to their files. ``first_event`` /
    ``last_event`` are the earliest and latest timestamps in the three tables.
    """

    out_dir: Path
    fmt: str
    seed: int
    n_leads: int
    n_activities: int
    n_stage_changes: int
    n_propensity_rows: int
    n_campaigns: int
    n_won: int
    stage_counts: dict[str, int]
    span_start: dt.datetime
    span_end: dt.datetime
    first_event: dt.datetime
    last_event: dt.datetime
    paths: dict[str, Path]
    seconds: float
    chunks: int = field(default=0)

    @property
    def conversion_rate(self) -> float:
        """Share of leads that reached the conversion stage (``won``) within the span."""
        return self.n_won / self.n_leads if self.n_leads else 0.0

    @property
    def activities_per_lead(self) -> float:
        return self.n_activities / self.n_leads if self.n_leads else 0.0

    def __str__(self) -> str:
        stages = ", ".join(f"{k} {v:,}" for k, v in self.stage_counts.items())
        return "\n".join(
            [
                f"{self.n_leads:,} leads, {self.n_activities:,} activities ({self.activities_per_lead:.1f} per lead), "
                f"{self.n_stage_changes:,} stage changes, {self.n_campaigns} campaigns",
                f"conversion rate {self.conversion_rate:.2%} ({self.n_won:,} won); stages reached: {stages}",
                f"span {self.span_start:%Y-%m-%d} .. {self.span_end:%Y-%m-%d} (events "
                f"{self.first_event:%Y-%m-%d %H:%M} .. {self.last_event:%Y-%m-%d %H:%M} UTC)",
                f"{self.fmt} in {self.out_dir} (ground truth in {self.out_dir / GROUND_TRUTH_DIR}), "
                f"seed {self.seed}, {self.seconds:.1f} s",
            ]
        )


def simulated_contract() -> Contract:
    """The data contract of every simulated data set."""
    kinds = {"annual_revenue_musd": "numeric"}
    return Contract(
        name="leadscore-simulated",
        attributes=[
            AttributeSpec(name=a, kind=kinds.get(a, "categorical"), description=cat.ATTRIBUTE_DESCRIPTIONS[a])  # type: ignore[arg-type]
            for a in cat.ATTRIBUTES
        ],
        activity_types=list(cat.ACTIVITY_TYPES),
        topics=list(cat.TOPICS),
        stages=StageSpec(order=list(STAGE_ORDER), converted="won", closed_negative=["lost", "disqualified"]),
        timezone="UTC",
    )


def _check_arguments(n_leads: int, seed: int, out_dir: Path, fmt: str, config: SimulatorConfig) -> None:
    if isinstance(n_leads, bool) or not isinstance(n_leads, int | np.integer) or n_leads < 1:
        raise ValueError(f"n_leads must be a positive integer, got {n_leads!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if fmt not in _FORMATS:
        raise ValueError(f"fmt must be one of {_FORMATS}, got {fmt!r}")
    now = dt.datetime.now(dt.UTC)
    if config.end > now:
        raise ValueError(
            f"the simulated span ends {config.end:%Y-%m-%d}, after now ({now:%Y-%m-%d}): the data contract "
            "rejects future timestamps; choose an earlier start_date or fewer days"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir}: exists and is not a directory")
    other = next(f for f in _FORMATS if f != fmt)
    clash = [out_dir / f"{t}.{other}" for t in TABLE_NAMES if (out_dir / f"{t}.{other}").exists()]
    if clash:
        raise ValueError(
            f"{out_dir} already holds {', '.join(p.name for p in clash)}; writing {fmt} next to them would make "
            "the data directory ambiguous. Remove them or write to another directory."
        )


def generate(
    n_leads: int,
    seed: int,
    out_dir: str | Path,
    *,
    config: SimulatorConfig | None = None,
    fmt: Literal["parquet", "csv"] = "parquet",
    progress: Callable[[int, int], None] | None = None,
) -> GenerationSummary:
    """Simulate ``n_leads`` leads and write a complete data directory.

    Writes ``leads.<fmt>``, ``activities.<fmt>``, ``stage_history.<fmt>``, ``contract.yaml`` and
    ``ground_truth/{leads,propensity,campaigns}.parquet`` into ``out_dir`` (created if needed). Each
    file is written to a temporary file in the same directory and renamed into place when complete;
    nothing is replaced if generation fails. Leads are simulated in chunks of
    ``config.chunk_size`` with one random stream per chunk, so memory does not grow with
    ``n_leads`` and the same (seed, config) gives byte-identical files.

    Args:
        n_leads: number of leads (ids ``L0000001`` ...; wider when ``n_leads`` needs it).
        seed: non-negative random seed.
        out_dir: data directory to write.
        config: simulator knobs (defaults: :class:`SimulatorConfig`).
        fmt: format of the three contract tables (ground truth is always Parquet).
        progress: called as ``progress(done_leads, total_leads)`` after each chunk.

    Raises:
        ValueError: bad arguments, a span that reaches into the future, or ``out_dir`` already
            holding the contract tables in the other format.
    """
    started = time.perf_counter()
    config = config or SimulatorConfig()
    out_dir = Path(out_dir)
    _check_arguments(n_leads, seed, out_dir, fmt, config)
    n_leads, seed = int(n_leads), int(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    truth_dir = out_dir / GROUND_TRUTH_DIR

    world = build_world(config, seed, n_leads)
    n_chunks = math.ceil(n_leads / config.chunk_size)
    outputs: dict[str, tuple[Path, pa.Schema, Literal["parquet", "csv"]]] = {
        "leads": (out_dir / f"leads.{fmt}", LEADS_SCHEMA, fmt),
        "activities": (out_dir / f"activities.{fmt}", ACTIVITIES_SCHEMA, fmt),
        "stage_history": (out_dir / f"stage_history.{fmt}", STAGES_SCHEMA, fmt),
        "truth_leads": (truth_dir / "leads.parquet", TRUTH_LEADS_SCHEMA, "parquet"),
        "propensity": (truth_dir / "propensity.parquet", PROPENSITY_SCHEMA, "parquet"),
    }
    writers: dict[str, AtomicTableWriter] = {}
    n_campaigns = len(world.campaigns)
    touches = np.zeros(n_campaigns, dtype=np.int64)
    touched_leads = np.zeros(n_campaigns, dtype=np.int64)
    stage_counts = np.zeros(len(STAGE_ORDER), dtype=np.int64)
    first_event, last_event = NO_TIME, 0
    try:
        for name, (path, schema, table_fmt) in outputs.items():
            writers[name] = AtomicTableWriter(path, schema, table_fmt)
        done = 0
        for k in range(n_chunks):
            data = simulate_chunk(world, k)
            for name, table in chunk_tables(world, data).items():
                writers[name].write(table)
            stage_counts += np.bincount(data.stage_code, minlength=len(STAGE_ORDER))
            has = data.act_campaign >= 0
            if n_campaigns and has.any():
                touches += np.bincount(data.act_campaign[has], minlength=n_campaigns)
                pairs = np.unique(data.act_lead[has] * n_campaigns + data.act_campaign[has])
                touched_leads += np.bincount(pairs % n_campaigns, minlength=n_campaigns)
            first_event = min(first_event, int(data.created_s.min()))
            last_event = max(last_event, int(data.stage_time_s.max()))
            if len(data.act_time_s):
                last_event = max(last_event, int(data.act_time_s.max()))
            done += data.n
            del data
            if progress is not None:
                progress(done, n_leads)
        paths: dict[str, Path] = {}
        campaigns = campaigns_table(world, touches, touched_leads)
        writers["campaigns"] = AtomicTableWriter(truth_dir / "campaigns.parquet", CAMPAIGNS_SCHEMA, "parquet")
        writers["campaigns"].write(campaigns)
        for name, writer in writers.items():
            paths[name] = writer.commit()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    paths["contract"] = simulated_contract().dump(out_dir / CONTRACT_FILE)

    def _dt(seconds: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)

    return GenerationSummary(
        out_dir=out_dir,
        fmt=fmt,
        seed=seed,
        n_leads=n_leads,
        n_activities=writers["activities"].rows,
        n_stage_changes=writers["stage_history"].rows,
        n_propensity_rows=writers["propensity"].rows,
        n_campaigns=n_campaigns,
        n_won=int(stage_counts[STAGE_ORDER.index("won")]),
        stage_counts={s: int(c) for s, c in zip(STAGE_ORDER, stage_counts, strict=True)},
        span_start=config.start,
        span_end=config.end,
        first_event=_dt(first_event),
        last_event=_dt(last_event),
        paths=paths,
        seconds=time.perf_counter() - started,
        chunks=n_chunks,
    )
