"""Batch scoring of a partitioned data directory, partition by partition (on Dask workers or in this process).

:func:`score_partitioned_batch` stores exactly the batch :func:`serving.batch.score_batch` stores for the
same data in one directory, the same champion and the same ``as_of`` / ``scored_at``. It splits a scoring
pass (:meth:`serving.service.ScoringService.score_encoded`) along what each step needs:

1. **per partition, on a worker** (:func:`score_partition`): validate the partition
   (:func:`features.validation.load_history`), point-in-time features at ``as_of``
   (:func:`features.build.build_features`), encode, readiness / score / stage, and needs. All of these
   are row-wise: a lead's row depends only on its own events and the model. Only the scores come back
   (one small row per open lead), fetched as each task ends; nothing stays on the worker.
2. **on the client, over the whole population** (:meth:`~serving.service.ScoringService.decide`): grades
   (``capacity`` grading ranks all leads scored together), trends and cool-downs from the store's history,
   the handoff decisions with the weekly capacity. The rows are put in the single-machine order first
   (by ``lead_id``, as :func:`features.build.build_features` sorts them), so every decision is the one
   the single-machine pass makes.
3. **per partition, on any worker** (:func:`explain_partition`): reasons and next-best actions for the
   rows that get them (grades in ``explain_grades`` and every handoff). Their features are built again
   from the partition's files for those leads only (a fraction of the partition, so the build is short;
   reading and validating the partition is the cost). Keeping the encoded rows on the workers between
   the steps instead made a worker's memory grow with its share of the population (``docs/scale-out.md``);
   rebuilding bounds it by one partition's task, and a worker lost between the steps loses nothing.
4. **on the client**: one atomic :meth:`serving.stores.ScoreStore.write_batch` of all rows
   (:func:`serving.batch.write_scored_batch`, the single-machine code), then the optional export: a
   ``.parquet``/``.csv`` file, or a directory of ``part-NNNNN.parquet`` files split by the data's
   partitioning (:func:`export_partitioned`) for a warehouse.

The model object is shipped to the workers (once per worker, ``runner.share``) rather than loaded on each
from its ``models:/`` URI: the workers then score with exactly the champion the client resolved (the alias
can move while a batch runs), and they need no access to the MLflow tracking server or artifact store.
A booster of this project is a few MB, so shipping it costs little.

Before step 1 every partition is validated once to reduce the end of the data (the default ``as_of`` is
capped at it + 1 day, :func:`serving.service.default_as_of`) and to check and quarantine the input as the
single-machine flow does; the data is read again in step 1, so a partition's history only ever sits in one
task's memory.

Nothing here imports Dask: the work goes through a :class:`PartitionRunner`; :class:`InlineRunner` runs it
in this process, ``pipelines.dask_runner.DaskPartitionRunner`` on a ``distributed.Client``.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from features.build import build_features
from features.contract import Contract
from features.io import write_table
from features.partitioned import (
    PartitionedLayout,
    PartitionStats,
    merge_reports,
    part_name,
    partition_of,
    swap_in_dir,
    validate_partition,
)
from features.validation import load_history
from models.fit.scoring import ScoringModel
from serving.batch import BatchSummary, Progress, write_scored_batch
from serving.policy import HandoffPolicy
from serving.scored import ScoredLeads
from serving.service import DEFAULT_EXPLAIN_GRADES, EXPLAIN_TOP, ScoringService, batch_as_of

if TYPE_CHECKING:
    from serving.stores import ScoreStore


class PartitionRunner(Protocol):
    """Where the partition tasks run. Handles are opaque (Dask futures, or plain values in this process)."""

    def share(self, value: Any) -> Any:
        """A handle of ``value`` that every task can take as an argument (sent to each worker once)."""

    def submit(self, fn: Callable[..., Any], *args: Any, key: str) -> Any:
        """Run ``fn(*args)`` (handles among ``args`` are resolved to their values); a handle of its result."""

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        """The values of ``handles``, in order; each handle is released as soon as its value is fetched."""

    def release(self, handles: Sequence[Any]) -> None:
        """Forget ``handles`` (their values may be dropped; tasks not finished yet may be cancelled)."""


class InlineRunner:
    """Runs every task at once, in this process (no cluster)."""

    def share(self, value: Any) -> Any:
        return value

    def submit(self, fn: Callable[..., Any], *args: Any, key: str) -> Any:
        return fn(*args)

    def gather(self, handles: Sequence[Any]) -> list[Any]:
        return list(handles)

    def release(self, handles: Sequence[Any]) -> None:
        return None


@dataclass
class Scorer:
    """The champion and the policy, shipped once to each worker; the service is built there, once."""

    model: ScoringModel
    model_info: Any
    policy: HandoffPolicy
    explain_grades: tuple[str, ...] = DEFAULT_EXPLAIN_GRADES
    _service: ScoringService | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_service"] = None  # holds locks; rebuilt on the worker
        return state

    def service(self) -> ScoringService:
        if self._service is None:
            self._service = ScoringService(self.model, self.model_info, self.policy, explain_grades=self.explain_grades)
        return self._service


@dataclass
class PartScores:
    """Step 1 of one partition: one small row per open lead (what comes back to the client)."""

    index: int
    lead_ids: np.ndarray
    outputs: dict[str, np.ndarray]
    needs: list[list[str]]


def _features_at(
    part_dir: Path,
    scorer: Scorer,
    contract: Contract,
    now: pd.Timestamp,
    as_of: pd.Timestamp,
    data_end: pd.Timestamp,
    lead_ids: np.ndarray | None = None,
) -> pd.DataFrame:
    """Point-in-time features at ``as_of`` of a partition's open leads (only ``lead_ids`` when given)."""
    history = load_history(part_dir, contract, now=now).history
    if lead_ids is not None:
        history = history.of_leads(lead_ids.tolist())
    if len(history.leads) == 0:
        return pd.DataFrame()
    frame, _ = build_features(history, [as_of], scorer.service().feature_config, data_end=data_end)
    return frame


def score_partition(
    item: tuple[int, Path],
    scorer: Scorer,
    contract: Contract,
    now: pd.Timestamp,
    as_of: pd.Timestamp,
    data_end: pd.Timestamp,
) -> PartScores:
    """Step 1 of the module docstring for one partition (the single-machine functions, on its leads only)."""
    index, part_dir = item
    frame = _features_at(part_dir, scorer, contract, now, as_of, data_end)
    if len(frame) == 0:
        return PartScores(index, np.empty(0, dtype=object), {}, [])
    ids = frame["lead_id"].astype(str).to_numpy(dtype=object)
    encoded = scorer.model.encode(frame)
    del frame
    outputs = scorer.model.outputs_from_encoded(encoded)
    return PartScores(index, ids, outputs, scorer.service().explainer.needs_from_encoded(encoded))


def explain_partition(
    item: tuple[int, Path],
    lead_ids: np.ndarray,
    readiness: np.ndarray,
    scorer: Scorer,
    contract: Contract,
    now: pd.Timestamp,
    as_of: pd.Timestamp,
    data_end: pd.Timestamp,
) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
    """Step 3 for one partition: reasons and next-best actions of ``lead_ids`` (ascending, as step 1 ordered them).

    Their features are built again from the partition's files, for these leads only: a row depends on its
    lead's own events (and ``data_end``) alone, so it equals the row step 1 scored. Nothing is kept on a
    worker between the steps, so its memory is bounded by one partition's task whatever the population.

    Raises:
        RuntimeError: the rebuilt rows are not those of ``lead_ids`` (the data changed between the steps).
    """
    frame = _features_at(item[1], scorer, contract, now, as_of, data_end, lead_ids)
    rebuilt = frame["lead_id"].astype(str).to_numpy(dtype=object) if len(frame) else np.empty(0, dtype=object)
    if not np.array_equal(rebuilt, np.asarray(lead_ids, dtype=object)):
        raise RuntimeError(
            f"partition {item[0]} ({item[1]}): {len(lead_ids)} leads to explain, but rebuilding their features "
            f"from its files gave {len(rebuilt)} rows that do not match them; was the data changed while the "
            "batch ran? Score the batch again."
        )
    return scorer.service().explain_rows(scorer.model.encode(frame), readiness)


def _validate(item: tuple[int, Path], contract: Contract, now: pd.Timestamp, quarantine: Path | None) -> PartitionStats:
    return validate_partition(item[0], item[1], contract, now, quarantine)


def _concat(parts: list[PartScores], name: str, empty: np.ndarray) -> np.ndarray:
    return np.concatenate([p.outputs[name] for p in parts]) if parts else empty


def score_partitioned_batch(
    data_dir: str | Path,
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
    runner: PartitionRunner | None = None,
    quarantine_dir: str | Path | None = None,
    now: pd.Timestamp | None = None,
) -> BatchSummary:
    """Score every lead open at ``as_of`` in a partitioned data directory and write the batch atomically.

    The arguments are those of :func:`serving.batch.score_batch`, plus: ``out`` may also be a directory
    (no ``.parquet``/``.csv`` suffix) for the batch as ``part-NNNNN.parquet`` files split like the data;
    ``runner`` (default :class:`InlineRunner`); ``quarantine_dir`` for rejected rows (default
    ``DATA/quarantine``, one subdirectory a partition); ``now``: validation's "now" (default: the current time).

    Raises:
        ValueError: not a partitioned directory of history data, invalid input, or no lead open at ``as_of``.
        serving.stores.BatchValidationError: the scores failed validation (nothing written).
    """
    step = progress or (lambda _msg: None)
    run = runner or InlineRunner()
    data_dir = Path(data_dir)
    layout = PartitionedLayout.read(data_dir)
    contract = Contract.load(data_dir)
    if contract.mode == "single_snapshot":
        raise ValueError(f"{data_dir} is a single-snapshot data set: score it without partitions")
    policy.check_against_contract(contract)
    service = ScoringService(model, model_info, policy, store, explain_grades=explain_grades)
    decided_at = (scored_at or datetime.now(UTC)).astimezone(UTC)
    now_ts = pd.Timestamp.now(tz="UTC").floor("s") if now is None else pd.Timestamp(now)
    quarantine = Path(quarantine_dir) if quarantine_dir is not None else data_dir / "quarantine"
    timings: dict[str, float] = {}
    items = list(enumerate(layout.parts))

    step(f"validating {len(items)} partitions")
    t = time.perf_counter()
    handles = [
        run.submit(_validate, item, contract, now_ts, quarantine, key=f"leadscore-validate-{i}")
        for i, item in enumerate(items)
    ]
    stats: list[PartitionStats] = run.gather(handles)
    merge_reports(data_dir, contract, now_ts, [s.report for s in stats]).check()
    filled = [s for s in stats if s.n_leads]
    data_end = max((s.data_end for s in filled if s.data_end is not None), default=None)
    timings["validate"] = time.perf_counter() - t
    if data_end is None:
        raise ValueError(f"{data_dir}: no valid lead in any partition; see {quarantine}")
    ts = batch_as_of(as_of, data_end, decided_at)

    step(f"features and scores as of {ts.isoformat()}, {len(filled)} partitions")
    t = time.perf_counter()
    scorer = run.share(Scorer(model, model_info, policy, tuple(explain_grades)))
    handles = []
    try:
        handles = [
            run.submit(
                score_partition,
                (s.index, layout.part_dir(s.index)),
                scorer,
                contract,
                now_ts,
                ts,
                data_end,
                key=f"leadscore-score-{s.index}",
            )
            for s in filled
        ]
        parts: list[PartScores] = run.gather(handles)
        timings["score_partitions"] = time.perf_counter() - t
        n = sum(len(p.lead_ids) for p in parts)
        if n == 0:
            raise ValueError(f"no lead is open at {ts.isoformat()}: nothing to score")

        step(f"grades and handoffs of {n:,} open leads")
        t = time.perf_counter()
        nonempty = [p for p in parts if len(p.lead_ids)]
        cat_ids = np.concatenate([p.lead_ids for p in nonempty])
        order = np.argsort(cat_ids, kind="stable")  # the single-machine row order (build_features: by lead_id)
        ids = cat_ids[order]
        if len(set(ids.tolist())) != n:
            raise ValueError(f"{data_dir}: a lead_id appears in more than one partition")
        readiness = _concat(nonempty, "readiness", np.empty(0))[order]
        score = _concat(nonempty, "score", np.empty(0, dtype=np.int64))[order]
        grades, previous, trend, handoff, rules = service.decide(ids, readiness, score, decided_at)
        mask = service.explain_mask(EXPLAIN_TOP, grades, handoff)
        timings["score_policy"] = time.perf_counter() - t

        step(f"reasons for {int(mask.sum()):,} leads")
        t = time.perf_counter()
        cat_mask = np.empty(n, dtype=bool)
        cat_mask[order] = mask
        offsets = np.cumsum([0] + [len(p.lead_ids) for p in parts])
        handles, explain_rows = [], []
        for k, part in enumerate(parts):
            rows = np.flatnonzero(cat_mask[offsets[k] : offsets[k + 1]])
            if len(rows):
                handles.append(
                    run.submit(
                        explain_partition,
                        (part.index, layout.part_dir(part.index)),
                        part.lead_ids[rows],
                        part.outputs["readiness"][rows],
                        scorer,
                        contract,
                        now_ts,
                        ts,
                        data_end,
                        key=f"leadscore-explain-{part.index}",
                    )
                )
                explain_rows.append(offsets[k] + rows)
        explained = run.gather(handles)
    finally:
        run.release(handles)
        run.release([scorer])
    cat_reasons: list[dict[str, Any] | None] = [None] * n
    cat_actions: list[dict[str, Any] | None] = [None] * n
    for rows, (reasons, actions) in zip(explain_rows, explained, strict=True):
        for i, reason, action in zip(rows.tolist(), reasons, actions, strict=True):
            cat_reasons[i] = reason
            cat_actions[i] = action
    cat_needs = [need for p in parts for need in p.needs]
    pick = order.tolist()
    has_stage = bool(nonempty) and "stage" in nonempty[0].outputs
    scored = ScoredLeads(
        lead_ids=ids,
        readiness=readiness,
        score=score,
        grade=grades,
        stage=_concat(nonempty, "stage", np.empty(0, dtype=object))[order]
        if has_stage
        else np.full(n, None, dtype=object),
        stage_proba=_concat(nonempty, "stage_proba", np.empty((0, 0)))[order] if has_stage else np.zeros((n, 0)),
        stage_labels=list(model.stage_labels),
        trend=trend,
        previous_score=previous,
        handoff=handoff,
        handoff_rule=rules,
        explained=mask,
        reasons=[cat_reasons[i] for i in pick],
        needs=[cat_needs[i] for i in pick],
        next_best_action=[cat_actions[i] for i in pick],
        as_of=[ts.to_pydatetime()] * n,
        scored_at=decided_at,
        model=service.model_ref,
        policy_version=policy.policy_version,
    )
    timings["score_explain"] = time.perf_counter() - t

    file_out = out if out is not None and Path(out).suffix in (".parquet", ".csv") else None
    summary = write_scored_batch(
        scored, model_info, policy, store, ts, file_out, queue_size=queue_size, timings=timings, progress=step
    )
    if out is not None and file_out is None:
        step(f"exporting to {out}/part-NNNNN.parquet")
        t = time.perf_counter()
        summary.export = export_partitioned(store, out, layout.n_partitions)
        timings["export"] = time.perf_counter() - t
    return summary


def export_partitioned(store: ScoreStore, out_dir: str | Path, n_partitions: int) -> Path:
    """The store's current batch as ``out_dir/part-NNNNN.parquet`` (the export columns of
    :meth:`~serving.stores.ScoreStore.export_current`), split like the data (:func:`features.partitioned.partition_of`).

    Every partition gets a file (an empty one when none of its leads is open); the directory is replaced
    as a whole, atomically.
    """
    out_dir = Path(out_dir)
    frame = store.current_frame()
    part = partition_of(frame["lead_id"].astype(str).tolist(), n_partitions)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.scores-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        for index in range(n_partitions):
            write_table(frame[part == index].reset_index(drop=True), tmp / f"{part_name(index)}.parquet")
        swap_in_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
