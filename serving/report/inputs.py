"""Everything the report is computed from, gathered in one place (:class:`ReportInputs`).

Sources:

- the score store (:mod:`serving.stores`): batches, the current batch's scores, handoffs (with the grade
  they were handed off at) and sales' feedback; read with plain SELECTs on the store's tables;
- the prospect history (optional): lead attributes (``source``), conversions, campaign / channel /
  activity touches;
- the champion model and its training run: :class:`ModelFacts` (version, training span, test metrics
  and baselines, the test-set grade table, score semantics);
- the handoff policy (capacity, policy version);
- from :mod:`serving.monitoring`: matured outcomes of served scores and drift, computed there.

Section computations (:mod:`serving.report.sections`) take these frames and never touch a database, so
they are unit-tested on small hand-made frames.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from serving import stores
from serving.monitoring.drift import DriftReport
from serving.monitoring.performance import Maturity
from serving.policy import HandoffPolicy
from serving.stores import schema

log = logging.getLogger(__name__)

SOURCE_ATTRIBUTES = ("source", "lead_source", "channel", "origin")
"""Lead attributes tried, in order, for "acceptance per source" (the first one the data has)."""
TOUCH_KINDS = {"campaign": "campaign_id", "channel": "channel", "activity": "activity_type"}
"""Section 4 groups: label -> activities column."""
EFFECT_COLUMNS = ("campaign_id", "action", "n_exposed", "estimate", "ci_low", "ci_high", "flag")
"""Columns of an effects table (issue 12) that section 4 shows next to the association figures."""


# -- the model card's facts --------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelFacts:
    """What the model card shows, read from the scoring model, its load info and its MLflow run."""

    name: str
    version: str
    run_id: str | None
    trained_at: str | None
    horizon_days: int
    score_method: str  # "percentile" or "probability"
    score_values: tuple[float, ...]  # percentile scale: readiness at each level
    score_levels: tuple[float, ...]
    grade_cutoffs: dict[str, float]
    calibration: str | None
    n_features: int
    feature_names: tuple[str, ...]
    split: dict[str, Any]  # readiness split summary: <part>_rows, <part>_leads, <part>_as_of_range
    metrics: dict[str, dict[str, float]]  # model name ("leadscore", baselines) -> test metrics
    test_grades: pd.DataFrame | None = None  # grade, rows, conversions, mean_probability (test set)
    leadscore_version: str | None = None
    promotion: str | None = None  # the registry's decision on this version: outcome and why (model-version tags)

    def readiness_at_score(self, score: int) -> float | None:
        """The readiness a percentile score corresponds to (``None`` for a probability score)."""
        if self.score_method != "percentile" or not self.score_values:
            return None
        return float(np.interp(score / 100.0, self.score_levels, self.score_values))


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(float(value)):
            out[str(key)] = float(value)
    return out


def model_facts(model: Any, info: Any, client: Any = None) -> ModelFacts:
    """The card's facts from a :class:`models.fit.scoring.ScoringModel` and its load info.

    Test metrics and baselines come from the model's metadata (the same numbers the training run logged);
    ``client`` (an ``MlflowClient``) adds the run's logged metrics when they are richer, and the test-set
    grade table (``evaluation/grade_table.csv``).
    """
    meta: dict[str, Any] = dict(getattr(model, "metadata", None) or {})
    readiness_metrics = ((meta.get("metrics") or {}).get("readiness")) or {}
    metrics = {str(name): _finite(values) for name, values in readiness_metrics.items() if isinstance(values, Mapping)}
    test_grades: pd.DataFrame | None = None
    promotion: str | None = None
    run_id = getattr(info, "run_id", None)
    if client is not None and run_id:
        metrics = _run_metrics(client, run_id) or metrics
        test_grades = _test_grade_table(client, run_id)
    if client is not None and getattr(info, "name", None) and getattr(info, "version", None) is not None:
        promotion = _promotion(client, str(info.name), str(info.version))
    scale = getattr(model, "score_scale", None)
    split = (meta.get("split") or {}).get("readiness") or {}
    version = getattr(info, "version", None)
    calibration = getattr(getattr(model, "calibration", None), "method", None)
    return ModelFacts(
        name=str(getattr(info, "name", None) or "leadscore"),
        version=str(version) if version is not None else "unregistered",
        run_id=run_id,
        trained_at=getattr(info, "trained_at", None) or meta.get("trained_at"),
        horizon_days=int(model.horizon_days),
        score_method=str(getattr(scale, "method", "probability")),
        score_values=tuple(float(v) for v in getattr(scale, "values", ())),
        score_levels=tuple(float(v) for v in getattr(scale, "levels", ())),
        grade_cutoffs={str(k): float(v) for k, v in (getattr(model, "grade_cutoffs", None) or {}).items()},
        calibration=calibration,
        n_features=len(model.feature_names),
        feature_names=tuple(model.feature_names),
        split=dict(split),
        metrics=metrics,
        test_grades=test_grades,
        leadscore_version=meta.get("leadscore_version"),
        promotion=promotion,
    )


def _promotion(client: Any, name: str, version: str) -> str | None:
    """The registry's recorded reason for its decision on ``version`` (it states the outcome: "promoted: ...",
    "not promoted (...)", "rolled back to ..."), the bare outcome without one, or None if unrecorded."""
    from models.package.registry import DECISION_TAG

    try:
        tags = client.get_model_version(name, version).tags or {}
    except Exception as exc:  # the card goes without it
        log.warning("report: cannot read the promotion decision of %s version %s (%s)", name, version, exc)
        return None
    outcome, reason = tags.get(DECISION_TAG), tags.get(f"{DECISION_TAG}.reason")
    if not outcome:
        return None
    return str(reason or outcome)


def _run_metrics(client: Any, run_id: str) -> dict[str, dict[str, float]]:
    """``{"leadscore": {...}, "<baseline>": {...}}`` from a training run's logged metrics."""
    from models.package.tracking import BASELINE_PREFIX, LEADSCORE_MODEL

    try:
        logged = client.get_run(run_id).data.metrics
    except Exception as exc:  # the card falls back to the model's metadata
        log.warning("report: cannot read the metrics of run %s (%s); using the model's metadata", run_id, exc)
        return {}
    out: dict[str, dict[str, float]] = {LEADSCORE_MODEL: {}}
    for key, value in logged.items():
        if "." not in key:
            out[LEADSCORE_MODEL][key] = float(value)
        elif key.startswith(BASELINE_PREFIX):
            name, metric = key[len(BASELINE_PREFIX) :].split(".", 1)
            out.setdefault(name, {})[metric] = float(value)
    return {k: _finite(v) for k, v in out.items()} if out[LEADSCORE_MODEL] else {}


def _test_grade_table(client: Any, run_id: str) -> pd.DataFrame | None:
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="leadscore-report-") as tmp:
            path = client.download_artifacts(run_id, "evaluation/grade_table.csv", tmp)
            table = pd.read_csv(path)
    except Exception as exc:
        log.info("report: run %s has no test-set grade table (%s)", run_id, exc)
        return None
    needed = {"grade", "rows", "conversions"}
    return table if needed <= set(table.columns) else None


# -- everything the sections need ----------------------------------------------------------------------
@dataclass
class ReportInputs:
    """The frames the sections are computed from (see the module docstring).

    ``outcomes`` (:func:`serving.monitoring.performance.matured_outcomes`): one row per served score whose
    label has matured (``batch_id, lead_id, as_of, scored_at, readiness, score, grade, handed_off,
    converted``); ``maturity`` (:func:`~serving.monitoring.performance.maturity_summary`) counts the scores
    still waiting. ``drift``: :class:`serving.monitoring.drift.DriftReport`. Each is ``None`` when it could
    not be computed (``drift_note`` says why); the section then says what is missing.
    """

    generated_at: datetime
    since: datetime | None
    policy: HandoffPolicy
    model: ModelFacts
    batches: list[stores.BatchInfo]
    current: pd.DataFrame  # lead_id, readiness, score, grade, handoff (the current batch)
    handoffs: pd.DataFrame  # handoff_id, lead_id, batch_id, handed_off_at, grade, score, readiness
    feedback: pd.DataFrame  # handoff_id, lead_id, outcome, reason_code, recorded_at, handed_off_at
    outcomes: pd.DataFrame | None = None
    maturity: Maturity | None = None
    drift: DriftReport | None = None
    drift_note: str | None = None
    leads: pd.DataFrame | None = None  # lead_id + the source attribute
    source_column: str | None = None
    conversions: pd.Series | None = None  # lead_id -> first time in the converted stage
    touches: pd.DataFrame | None = None  # lead_id, occurred_at, campaign_id, channel, activity_type
    data_end: pd.Timestamp | None = None
    effects: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per gathering step


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True)


def read_batches(store: stores.ScoreStore, since: datetime | None = None) -> list[stores.BatchInfo]:
    """Every batch scored at or after ``since``, oldest first."""
    b = schema.batches_table
    query = sa.select(b).order_by(b.c.batch_id)
    if since is not None:
        query = query.where(b.c.scored_at >= since)
    with store.engine.connect() as conn:
        return [stores.ScoreStore._batch_from_row(row) for row in conn.execute(query)]


def read_current_scores(store: stores.ScoreStore) -> pd.DataFrame:
    """The current batch: ``lead_id, readiness, score, grade, handoff`` (empty before the first batch)."""
    s, cur = schema.scores_table, schema.current_batch_table
    query = sa.select(s.c.lead_id, s.c.readiness, s.c.score, s.c.grade, s.c.handoff).join(
        cur, sa.and_(cur.c.id == 1, cur.c.batch_id == s.c.batch_id)
    )
    with store.engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame(rows, columns=["lead_id", "readiness", "score", "grade", "handoff"])
    return frame.astype({"readiness": "float64", "score": "int64", "handoff": "bool"})


def read_handoffs(store: stores.ScoreStore, since: datetime | None = None) -> pd.DataFrame:
    """Handoffs made at or after ``since`` with the grade, score and readiness they were handed off at."""
    h, s = schema.handoffs_table, schema.scores_table
    query = sa.select(h.c.handoff_id, h.c.lead_id, h.c.batch_id, h.c.handed_off_at, s.c.grade, s.c.score, s.c.readiness)
    query = query.join(s, s.c.handoff_id == h.c.handoff_id)
    if since is not None:
        query = query.where(h.c.handed_off_at >= since)
    columns = ["handoff_id", "lead_id", "batch_id", "handed_off_at", "grade", "score", "readiness"]
    with store.engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=columns)
    frame["handed_off_at"] = _utc(frame["handed_off_at"])
    return frame


def read_feedback(store: stores.ScoreStore, since: datetime | None = None) -> pd.DataFrame:
    """Feedback on handoffs made at or after ``since``, with the handoff time."""
    f, h = schema.feedback_table, schema.handoffs_table
    query = sa.select(
        f.c.handoff_id, f.c.lead_id, f.c.outcome, f.c.reason_code, f.c.recorded_at, h.c.handed_off_at
    ).join(h, h.c.handoff_id == f.c.handoff_id)
    if since is not None:
        query = query.where(h.c.handed_off_at >= since)
    columns = ["handoff_id", "lead_id", "outcome", "reason_code", "recorded_at", "handed_off_at"]
    with store.engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=columns)
    for column in ("recorded_at", "handed_off_at"):
        frame[column] = _utc(frame[column])
    return frame


def source_column(leads: pd.DataFrame) -> str | None:
    """The lead attribute used for "per source" (first of :data:`SOURCE_ATTRIBUTES` present)."""
    return next((c for c in SOURCE_ATTRIBUTES if c in leads.columns), None)


def history_frames(
    history: Any, since: datetime | None = None
) -> tuple[pd.DataFrame, str | None, pd.Series, pd.DataFrame, pd.Timestamp]:
    """(leads with the source attribute, its name, first conversion time per lead, touches, data end).

    Touches are activities at or after ``since`` with their campaign, channel and activity type.
    """
    leads = history.leads
    column = source_column(leads)
    lead_frame = leads[["lead_id", *([column] if column else [])]].copy()
    lead_frame["lead_id"] = lead_frame["lead_id"].astype(str)
    stages = history.stage_history
    won = stages[stages["stage"] == history.contract.stages.converted]
    conversions = won.groupby(won["lead_id"].astype(str))["entered_at"].min()
    activities = history.activities
    keep = ["lead_id", "occurred_at", *(c for c in TOUCH_KINDS.values() if c in activities.columns)]
    touches = activities[keep]
    if since is not None:
        touches = touches[touches["occurred_at"] >= pd.Timestamp(since)]
    return lead_frame, column, conversions, touches, history.span[1]


def check_effects(effects: pd.DataFrame) -> pd.DataFrame:
    """An effects table (issue 12, :mod:`models.explain.effects`) reduced to :data:`EFFECT_COLUMNS`.

    ``flag`` may also come as the estimator's ``evidence`` column ("effect", "no evidence of effect", "not
    estimable"); segment rows (``segment`` other than "all") are left out: the report shows overall effects.
    A table without the other columns is a ValueError naming them.
    """
    frame = effects
    if "flag" not in frame.columns and "evidence" in frame.columns:
        frame = frame.rename(columns={"evidence": "flag"})
    missing = [c for c in EFFECT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"effects table lacks columns {missing}; expected {list(EFFECT_COLUMNS)}")
    if "segment" in frame.columns:
        frame = frame[frame["segment"].astype(str) == "all"]
    out = frame[list(EFFECT_COLUMNS)].copy()
    out["campaign_id"] = out["campaign_id"].fillna("").astype(str)
    return out.reset_index(drop=True)


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
