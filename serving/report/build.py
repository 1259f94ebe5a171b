"""Gather the report's inputs from their sources and build the page: the work of ``leadscore report``.

:func:`gather_inputs` reads the store, the (optional) prospect history, the champion and the policy into
:class:`~serving.report.inputs.ReportInputs`; :func:`serving.report.render.build_report` turns them into
HTML. Without a history the report still renders: the sections that need it say so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from serving.policy import HandoffPolicy
from serving.report.inputs import (
    ReportInputs,
    check_effects,
    history_frames,
    model_facts,
    now_utc,
    read_batches,
    read_current_scores,
    read_feedback,
    read_handoffs,
)
from serving.report.sections import PSI_FLAG
from serving.stores import ScoreStore

log = logging.getLogger(__name__)

DriftFn = Callable[[Any, Any, ScoreStore], Any]
"""``drift(history, model, store) -> DriftReport``: the current scored population vs the champion's training data."""


def gather_inputs(
    store: ScoreStore,
    model: Any,
    info: Any,
    policy: HandoffPolicy,
    *,
    history: Any = None,
    since: datetime | None = None,
    client: Any = None,
    effects: pd.DataFrame | None = None,
    reference: pd.DataFrame | None = None,
    drift: DriftFn | None = None,
    now: datetime | None = None,
) -> ReportInputs:
    """Everything the sections need (see :class:`ReportInputs`).

    Args:
        store: the score store (batches, scores, handoffs, feedback).
        model: the champion :class:`~models.fit.scoring.ScoringModel`; ``info`` its load info.
        policy: the handoff policy in force (capacity, minimum grade, version).
        history: the prospect history (matured outcomes, sources, campaigns, drift); optional.
        since: only batches, handoffs and touches at or after this time.
        client: an ``MlflowClient`` for the run's metrics and test-set grade table (optional).
        effects: an effects table (issue 12) for section 4 (columns :data:`~serving.report.inputs.EFFECT_COLUMNS`).
        reference: the champion's drift reference rows (``lead_id``, ``as_of``, its features, ``readiness``);
            drift is computed against it with :func:`report_drift`.
        drift: instead of ``reference``, a function ``drift(history, model, store) -> DriftReport`` (tests).
        now: the report's time (default now).
    """
    from serving.monitoring.performance import matured_outcomes, maturity_summary

    spent: dict[str, float] = {}
    t = time.perf_counter()
    facts = model_facts(model, info, client)
    spent["model"] = time.perf_counter() - t
    t = time.perf_counter()
    inputs = ReportInputs(
        generated_at=now or now_utc(),
        since=since,
        policy=policy,
        model=facts,
        batches=read_batches(store, since),
        current=read_current_scores(store),
        handoffs=read_handoffs(store, since),
        feedback=read_feedback(store, since),
        effects=check_effects(effects) if effects is not None else None,
        timings=spent,
    )
    spent["store"] = time.perf_counter() - t
    if history is None:
        inputs.drift_note = "Drift needs the prospect history (run the report with --data)."
        inputs.notes.append(
            "Built without the prospect history (--data): matured outcomes, campaigns, sources and drift are left out."
        )
        return inputs
    t = time.perf_counter()
    inputs.outcomes = matured_outcomes(store, history, facts.horizon_days, since=since, now=inputs.generated_at)
    inputs.maturity = maturity_summary(store, history, facts.horizon_days)
    spent["outcomes"] = time.perf_counter() - t
    t = time.perf_counter()
    leads, column, conversions, touches, data_end = history_frames(history, since)
    inputs.leads, inputs.source_column, inputs.conversions = leads, column, conversions
    inputs.touches, inputs.data_end = touches, data_end
    spent["history"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        if drift is not None:
            inputs.drift = drift(history, model, store)
        elif reference is not None:
            inputs.drift, notes = report_drift(history, store, model, info, reference)
            inputs.drift_note = " ".join(f"{n[0].upper()}{n[1:]}." for n in notes) or None
        else:
            inputs.drift_note = (
                "The champion's training run has no drift reference (retrain with this version of leadscore)."
            )
    except (ValueError, LookupError) as exc:
        inputs.drift, inputs.drift_note = None, f"Drift could not be computed: {exc}"
        log.warning("report: %s", inputs.drift_note)
    spent["drift"] = time.perf_counter() - t
    return inputs


def report_drift(
    history: Any,
    store: ScoreStore,
    model: Any,
    info: Any,
    reference: pd.DataFrame,
    *,
    threshold: float = PSI_FLAG,
    bins: int = 10,
    max_age_days: float | None = None,
) -> tuple[Any, list[str]]:
    """Drift of the current batch vs the champion's reference, flagged at ``threshold`` (the report's 0.2).

    The same like-with-like comparison as the monitor check (:mod:`serving.monitoring.monitor`): the current
    batch's leads with their features as of the batch, both sides limited to lead ages the reference holds,
    features ranked by the champion's gain. Returns the :class:`~serving.monitoring.drift.DriftReport` and
    notes for the reader (leads left out, a batch re-scored with the champion).
    """
    from serving.monitoring.drift import comparable_ages, drift_report
    from serving.monitoring.monitor import current_population, feature_importance

    features = list(model.spec.features)
    missing = [c for c in ("readiness", *features) if c not in reference.columns]
    if missing:
        raise ValueError(f"the drift reference lacks columns {missing[:5]}: retrain so the champion carries one")
    current = current_population(history, store, model, info)
    notes = list(current.notes)
    ref_mask, cur_mask, age_limit = comparable_ages(reference, current.frame, max_age_days=max_age_days)
    left_out = int((~cur_mask).sum())
    if age_limit is not None and left_out:
        notes.append(
            f"{left_out:,} of {len(cur_mask):,} current leads are older than {age_limit:.0f} days (the oldest age in "
            "the training reference) and are left out of the drift figures, to compare like with like"
        )
    if not cur_mask.any():
        raise ValueError(f"no current lead is {age_limit:.0f} days old or younger, the ages the reference holds")
    ref_rows = reference[ref_mask.to_numpy()].reset_index(drop=True)
    cur_rows = current.frame[cur_mask.to_numpy()].reset_index(drop=True)
    report = drift_report(
        ref_rows,
        cur_rows,
        features,
        ref_rows["readiness"].to_numpy(dtype="float64"),
        current.readiness[cur_mask.to_numpy()],
        importance=feature_importance(model),
        categorical=list(model.spec.categorical),
        bins=bins,
        score_threshold=threshold,
        feature_threshold=threshold,
    )
    return report, notes


def read_effects(path: str | Path) -> pd.DataFrame:
    """An effects table written by the effects analysis (issue 12): ``.parquet`` or ``.csv``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such effects table")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: an effects table is .parquet or .csv")
    try:
        return check_effects(frame)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


REPORT_ARTIFACT_DIR = "report"
REPORT_RUN_NAME = "report"


def log_report(client: Any, path: str | Path, run_id: str | None, experiment: str = "leadscore") -> str:
    """Log the page to the champion's MLflow run (``report/<file>``), or to a new ``report`` run without one.

    Returns the run id it was logged to.
    """
    path = Path(path)
    if run_id is None:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        run = client.create_run(experiment_id, run_name=REPORT_RUN_NAME, tags={"leadscore.kind": "report"})
        run_id = run.info.run_id
        client.log_artifact(run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
        client.set_terminated(run_id)
        return str(run_id)
    client.log_artifact(run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
    return run_id
