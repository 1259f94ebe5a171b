"""Batch scoring: every open lead, scored, graded, handed off and written atomically.

:func:`score_batch` is the work of the ``score-batch`` flow:

1. point-in-time features for every lead open at ``as_of`` (default :func:`serving.service.default_as_of`:
   now, but never later than the data end + 1 day);
2. readiness, score, grade and stage for all of them (one call per booster);
3. trends against each lead's previous stored score, handoff decisions with the policy's cool-down (and
   weekly capacity) from the store's handoff log;
4. reasons and the next-best action only where someone will read them: grades A and B and every handoff
   (needs are cheap and computed for all);
5. :meth:`serving.stores.ScoreStore.write_batch`: one transaction, so readers see the previous batch or
   this one, never a mix; the handoffs it records start the cool-downs of the next runs;
6. optionally, the batch exported to Parquet/CSV for CRM import (atomic file write).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.build import build_features
from features.history import ProspectHistory
from models.fit.scoring import ScoringModel
from serving.policy import GRADES, HandoffPolicy, policy_summary
from serving.scored import ScoredLeads
from serving.service import DEFAULT_EXPLAIN_GRADES, EXPLAIN_TOP, ScoringService, batch_as_of, default_as_of

if TYPE_CHECKING:
    from serving.stores import BatchInfo, ScoreRecord, ScoreStore

Progress = Callable[[str], None]


@dataclass
class BatchSummary:
    """What one batch did (for the CLI, the flow's return value and logs)."""

    batch: BatchInfo
    as_of: datetime
    n_leads: int
    grades: dict[str, int]
    trends: dict[str, int]
    n_handoffs: int
    n_explained: int
    queue: list[ScoreRecord]
    export: Path | None
    timings: dict[str, float] = field(default_factory=dict)
    #: the past batches written first by ``leadscore score --backfill N`` (None without a backfill)
    backfilled: BackfillSummary | None = None


def score_batch(
    history: ProspectHistory,
    model: ScoringModel,
    model_info: Any,
    policy: HandoffPolicy,
    store: ScoreStore,
    as_of: pd.Timestamp | datetime | str | None = None,
    out: str | Path | None = None,
    *,
    scored_at: datetime | None = None,
    explain_grades: tuple[str, ...] = DEFAULT_EXPLAIN_GRADES,
    queue_size: int = 10,
    progress: Progress | None = None,
    features: pd.DataFrame | None = None,
    explain: bool = True,
    backfilled: bool = False,
) -> BatchSummary:
    """Score every lead open at ``as_of`` and write the batch atomically (see the module docstring).

    Args:
        history: validated prospect history.
        model: the scoring model (the registry's champion in production).
        model_info: its load info (name and version are stored with the batch).
        policy: the handoff policy (its version is stored with the batch).
        store: where the batch, its handoffs and history go.
        as_of: feature time (whole seconds); default now, capped at the data end + 1 day.
        out: optional ``.parquet``/``.csv`` export of the written batch.
        scored_at: the batch's decision time (default now): handoffs and cool-downs are measured from it.
        explain_grades: grades that get reasons and a next-best action (handoffs always do).
        queue_size: how many of the best handoffs the summary lists.
        progress: called with a short description as each step starts.
        features: the point-in-time feature rows of ``as_of`` when already built (``build_features`` over
            several dates returns the same rows as over one: :func:`backfill` builds its dates at once);
            default: built here from ``history``.
        explain: ``False`` stores no reasons or next-best actions at all (backfilled history; needs are
            still computed).
        backfilled: the batch is scored after the fact (``leadscore score --backfill``); its details say so.

    Raises:
        ValueError: no lead is open at ``as_of``, or the inputs do not fit together.
        serving.stores.BatchValidationError: the scores failed validation (nothing written).
    """
    if out is not None and Path(out).suffix not in (".parquet", ".csv"):
        raise ValueError(f"{out}: unsupported export format (use .parquet or .csv)")
    step = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    now = (scored_at or datetime.now(UTC)).astimezone(UTC)
    service = ScoringService(model, model_info, policy, store, explain_grades=explain_grades)
    policy.check_against_contract(history.contract)
    ts = batch_as_of(as_of, history.span[1] if len(history.leads) else None, now)

    step(f"building features as of {ts.isoformat()}")
    t = time.perf_counter()
    if features is None:
        frame, _ = build_features(history, [ts], service.feature_config)
    else:
        frame = features
        if len(frame) and not (pd.to_datetime(frame["as_of"], utc=True) == ts).all():
            raise ValueError(f"the features passed for as_of {ts.isoformat()} hold rows of other as-of times")
    timings["features"] = time.perf_counter() - t
    if len(frame) == 0:
        raise ValueError(f"no lead is open at {ts.isoformat()}: nothing to score")

    step(f"scoring {len(frame):,} open leads")
    t = time.perf_counter()
    ids = frame["lead_id"].astype(str).to_numpy(dtype=object)
    Xe = model.encode(frame)
    del frame
    timings["encode"] = time.perf_counter() - t
    scored = service.score_encoded(
        ids, Xe, explain=EXPLAIN_TOP if explain else False, as_of=ts.to_pydatetime(), scored_at=now
    )
    timings.update({f"score_{k}": v for k, v in scored.timings.items()})

    return write_scored_batch(
        scored,
        model_info,
        policy,
        store,
        ts,
        out,
        queue_size=queue_size,
        timings=timings,
        progress=step,
        backfilled=backfilled,
    )


def write_scored_batch(
    scored: ScoredLeads,
    model_info: Any,
    policy: HandoffPolicy,
    store: ScoreStore,
    as_of: pd.Timestamp,
    out: str | Path | None = None,
    *,
    queue_size: int = 10,
    timings: dict[str, float] | None = None,
    progress: Progress | None = None,
    backfilled: bool = False,
) -> BatchSummary:
    """Steps 5 and 6 of :func:`score_batch`: one atomic ``write_batch`` of ``scored`` (and the export).

    Shared by the single-machine batch and the partitioned one (:mod:`serving.partitioned_batch`), so both
    store the same rows and details for the same scores.
    """
    step = progress or (lambda _msg: None)
    timings = {} if timings is None else timings
    now = scored.scored_at
    step("writing the batch")
    t = time.perf_counter()
    scores = scored.to_store_frame()
    grade_counts = {g: int(np.sum(scored.grade == g)) for g in GRADES}
    trend_counts = {
        str(k): int(v) for k, v in zip(*np.unique(scored.trend.astype(str), return_counts=True), strict=True)
    }
    details = {
        "policy": policy_summary(policy),
        "grades": grade_counts,
        "trends": trend_counts,
        "n_explained": int(scored.explained.sum()),
        "model_uri": getattr(model_info, "model_uri", None),
    }
    if backfilled:  # scored after the fact from the history (leadscore score --backfill), not served then
        details["backfilled"] = True
    info = store.write_batch(
        scores,
        model_name=scored.model.name,
        model_version=scored.model.version,
        policy_version=policy.policy_version,
        as_of=as_of.to_pydatetime(),
        scored_at=now,
        details=details,
    )
    timings["write"] = time.perf_counter() - t

    export: Path | None = None
    if out is not None:
        step(f"exporting to {out}")
        t = time.perf_counter()
        export = store.export_current(out)
        timings["export"] = time.perf_counter() - t
    queue = store.handoff_queue(limit=queue_size).items if queue_size > 0 else []
    return BatchSummary(
        batch=info,
        as_of=as_of.to_pydatetime(),
        n_leads=len(scored),
        grades=grade_counts,
        trends=trend_counts,
        n_handoffs=info.n_handoffs,
        n_explained=int(scored.explained.sum()),
        queue=queue,
        export=export,
        timings=timings,
    )


# -- backfill ---------------------------------------------------------------------------------------


def backfill_dates(anchor: pd.Timestamp | datetime, n: int, every_days: int = 7) -> list[pd.Timestamp]:
    """The ``n`` as-of dates ``every_days`` apart before ``anchor``'s day (UTC midnight), oldest first.

    ``anchor`` is the as-of time of the batch being scored now (:func:`serving.service.default_as_of`);
    flooring it to the day makes a re-run on the same day produce the same dates.
    """
    if n < 0:
        raise ValueError(f"the number of backfill batches must be >= 0, got {n}")
    if every_days < 1:
        raise ValueError(f"backfill spacing must be at least one day, got {every_days}")
    day = pd.Timestamp(anchor)
    day = (day.tz_localize("UTC") if day.tzinfo is None else day.tz_convert("UTC")).floor("D")
    return [day - pd.Timedelta(days=every_days * k) for k in range(n, 0, -1)]


_BACKFILL_FEATURE_DATES = 8  # dates whose features are built in one pass (bounds memory: ~8 x open leads rows)


@dataclass
class BackfillSummary:
    """What :func:`backfill` wrote and what it skipped (and why)."""

    batches: list[BatchSummary]
    skipped: list[pd.Timestamp]
    skip_reason: str | None
    dates: list[pd.Timestamp]

    @property
    def n_written(self) -> int:
        return len(self.batches)


def backfill(
    history: ProspectHistory,
    model: ScoringModel,
    model_info: Any,
    policy: HandoffPolicy,
    store: ScoreStore,
    n: int,
    *,
    every_days: int = 7,
    anchor: pd.Timestamp | datetime | None = None,
    explain: bool = False,
    progress: Progress | None = None,
) -> BackfillSummary:
    """Score ``n`` past batches, oldest first, each as of its own past date, so the history has matured batches.

    Each date ``d`` from :func:`backfill_dates` is one atomic :func:`score_batch` with ``as_of = scored_at = d``:
    features see only data before ``d`` (point in time, :mod:`features.build`), and handoffs, cool-downs and
    weekly capacity play out in historical time, as if the nightly job had run then.

    A backfill only fills history *before* the store's batches: dates at or before the newest stored batch's
    ``as_of`` are skipped (a re-run on the same day skips everything; an older batch written after a newer
    one would move the current-batch pointer back and break trends and cool-downs). No lead open on a date
    (the data starts later) skips that date too.

    ``anchor`` defaults to the as-of time a batch scored now would get (now, capped at the data end + 1 day).
    Past batches store no reasons or next-best actions by default (``explain=False``; with ``True`` their
    A/B grades and handoffs get them as in a nightly batch): nobody reads last spring's reasons, and TreeSHAP
    is a third of a batch's time (measured: 1.5 of 5.5 s for 11,800 open leads).
    """
    step = progress or (lambda _msg: None)
    if anchor is None:
        anchor = default_as_of(history.span[1] if len(history.leads) else None)
    dates = backfill_dates(anchor, n, every_days)
    stored = store.batches(limit=1)
    newest = pd.Timestamp(stored[0].as_of) if stored else None
    todo = [d for d in dates if newest is None or d > newest]
    skipped = [d for d in dates if d not in todo]
    reason = (
        f"the store already holds batches up to {newest.isoformat()}; a backfill only fills history before them"
        if skipped and newest is not None
        else None
    )
    created = pd.Timestamp(history.leads["created_at"].min()) if len(history.leads) else None
    early = [d for d in todo if created is None or d <= created]
    if early:
        skipped += early
        reason = reason or f"no lead exists yet on {early[-1].date()} (the data starts {created})"
        todo = [d for d in todo if d not in early]
    config = ScoringService(model, model_info, policy, store).feature_config
    written: list[BatchSummary] = []
    for start in range(0, len(todo), _BACKFILL_FEATURE_DATES):
        chunk = todo[start : start + _BACKFILL_FEATURE_DATES]
        step(f"backfill: features as of {chunk[0].date()} .. {chunk[-1].date()}")
        # One pass over the history for several dates (running totals), instead of one pass per date.
        frame, _ = build_features(history, chunk, config)
        by_date = dict(list(frame.groupby("as_of", sort=True)))
        empty = frame.iloc[:0]
        del frame
        for day in chunk:
            step(f"backfill {len(written) + 1}/{len(todo)}: as of {day.date()}")
            rows = by_date.pop(day, None)
            written.append(
                score_batch(
                    history,
                    model,
                    model_info,
                    policy,
                    store,
                    as_of=day,
                    scored_at=day.to_pydatetime(),
                    queue_size=0,
                    explain=explain,
                    features=empty if rows is None else rows.reset_index(drop=True),
                    backfilled=True,
                )
            )
    return BackfillSummary(batches=written, skipped=sorted(skipped), skip_reason=reason, dates=dates)
