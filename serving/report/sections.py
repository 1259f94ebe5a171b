"""The report's sections as plain typed functions of :class:`~serving.report.inputs.ReportInputs` frames.

Each function returns a dataclass of numbers (every rate with its count and 95 % interval) and, when the
data for it does not exist yet, a ``missing`` sentence saying what is missing and when it will fill. No
HTML here: :mod:`serving.report.render` turns these into the page.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.judge.evaluation import gains_curve
from serving.policy import GRADES, HandoffPolicy, week_start
from serving.report.inputs import ModelFacts, ReportInputs
from serving.report.stats import Estimate, Rate, auc_interval, median_interval, proportion
from serving.stage_feedback import CRM_REASON_PREFIX

PSI_FLAG = 0.2
"""PSI above this is flagged as drift (the usual rule of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted)."""
TOP_DRIFT = 10
TOP_GROUPS = 10
MAX_FILLED_WEEKS = 60
CALIBRATION_BINS = 10
NO_DATA_DIR = (
    "no data directory was given, so served scores cannot be matched to their outcomes; "
    "pass --data DIR to leadscore report"
)
"""Why outcome figures are missing when the report is built without the prospect history (``--data``)."""


def _day(ts: pd.Timestamp | None) -> str:
    return "-" if ts is None or pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d")


# -- 2. do the grades mean something? --------------------------------------------------------------------
@dataclass(frozen=True)
class GradeRow:
    grade: str
    conversion: Rate
    mean_predicted: float | None


@dataclass(frozen=True)
class DecileRow:
    decile: int  # 1 = the 10 % best scored
    conversion: Rate
    lift: float | None


@dataclass(frozen=True)
class CalibrationRow:
    mean_predicted: float
    observed: Rate


@dataclass
class GradesSection:
    """Conversion per grade on matured served scores, or the champion's test-set figures until then."""

    source: str  # "served", "test" or "none"
    horizon_days: int
    grades: list[GradeRow] = field(default_factory=list)
    base: Rate | None = None
    deciles: list[DecileRow] = field(default_factory=list)
    gains: tuple[np.ndarray, np.ndarray] | None = None
    calibration: list[CalibrationRow] = field(default_factory=list)
    n_matured: int = 0
    n_batches: int = 0
    n_pending: int = 0
    matures_on: str | None = None
    missing: str | None = None
    test_lift_at_10: float | None = None
    test_ece: float | None = None
    auc: Estimate | None = None
    no_history: bool = False  # built without --data: outcomes of served scores could not be matched

    def out_of_order(self, min_leads: int = 100) -> list[tuple[str, str]]:
        """Neighbouring grades (better, worse), each with at least ``min_leads`` scores, where the better grade
        converted at no higher a rate than the worse one: those grades do not separate leads."""
        rows = [r for r in self.grades if r.conversion.n >= min_leads and r.conversion.value is not None]
        return [
            (hi.grade, lo.grade)
            for hi, lo in itertools.pairwise(rows)
            if lo.conversion.value is not None
            and hi.conversion.value is not None
            and hi.conversion.value <= lo.conversion.value
        ]


def grades_section(inputs: ReportInputs) -> GradesSection:
    horizon = inputs.model.horizon_days
    maturity = inputs.maturity
    n_pending = max(0, maturity.n_scores - maturity.n_matured_scores) if maturity is not None else 0
    matures_on = _day(maturity.next_maturity) if maturity is not None and maturity.next_maturity is not None else None
    outcomes = inputs.outcomes
    if outcomes is not None and len(outcomes):
        return _served_grades(outcomes, horizon, n_pending, matures_on)
    if outcomes is None:
        pending_note = f"{_sentence(NO_DATA_DIR)}." if inputs.batches else "No batch has been scored yet."
    elif n_pending:
        pending_note = (
            f"No served score has matured yet: a score matures {horizon} days after it was served (the model's "
            f"horizon), when it is known whether the lead converted in that window. {n_pending:,} scores are "
            f"waiting; the first batch matures on {matures_on}."
        )
    else:
        pending_note = "No batch has been scored yet."
    test = _test_grades(inputs.model)
    if test is not None:
        test.missing = pending_note + " Until then this section shows the champion's test-set figures."
        test.n_pending, test.matures_on = n_pending, matures_on
        test.no_history = outcomes is None
        return test
    return GradesSection(
        source="none",
        horizon_days=horizon,
        missing=pending_note + " The champion's run has no test-set grade table either.",
        n_pending=n_pending,
        matures_on=matures_on,
        no_history=outcomes is None,
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _served_grades(outcomes: pd.DataFrame, horizon: int, n_pending: int, matures_on: str | None) -> GradesSection:
    """Section 2 from matured served scores (:func:`serving.monitoring.performance.served_performance`)."""
    from serving.monitoring.performance import served_performance

    # Intervals: Wilson per grade (the monitor's); ROC AUC by Hanley-McNeil, since a bootstrap over a
    # million served scores would cost minutes for an interval a few thousandths wide.
    perf = served_performance(outcomes, n_bins=CALIBRATION_BINS, n_boot=0)
    by_grade: list[dict[str, Any]] = perf.by_grade.to_dict(orient="records")  # type: ignore[assignment]
    rows = [
        GradeRow(
            str(r["grade"]),
            _rate(int(r["converted"]), int(r["n"]), float(r["ci_low"]), float(r["ci_high"])),
            float(r["mean_readiness"]) if r["n"] else None,
        )
        for r in by_grade
    ]
    y = outcomes["converted"].to_numpy(dtype=np.int64)
    p = outcomes["readiness"].to_numpy(dtype=np.float64)
    base = proportion(int(y.sum()), len(y))
    order = np.argsort(-p, kind="stable")
    deciles = []
    for i, idx in enumerate(np.array_split(order, min(10, len(order)))):
        rate = proportion(int(y[idx].sum()), len(idx))
        lift = rate.value / base.value if rate.value is not None and base.value else None
        deciles.append(DecileRow(i + 1, rate, lift))
    bins: list[dict[str, Any]] = perf.calibration.to_dict(orient="records")  # type: ignore[assignment]
    calibration = [
        CalibrationRow(
            float(b["mean_predicted"]), proportion(round(float(b["observed_rate"]) * int(b["rows"])), int(b["rows"]))
        )
        for b in bins
    ]
    return GradesSection(
        source="served",
        horizon_days=horizon,
        grades=rows,
        base=base,
        deciles=deciles,
        gains=gains_curve(y, p) if y.any() else None,
        calibration=calibration,
        n_matured=len(outcomes),
        n_batches=perf.n_batches,
        n_pending=n_pending,
        matures_on=matures_on,
        auc=auc_interval(perf.roc_auc, perf.positives, perf.n - perf.positives),
    )


def _rate(k: int, n: int, low: float, high: float) -> Rate:
    if n == 0:
        return Rate(0, 0, None, None, None)
    return Rate(k, n, k / n, float(low), float(high))


def _test_grades(model: ModelFacts) -> GradesSection | None:
    table = model.test_grades
    if table is None or not len(table):
        return None
    rows = []
    for g in GRADES:
        hit = table[table["grade"].astype(str) == g]
        n = int(hit["rows"].sum())
        k = int(hit["conversions"].sum())
        mean = float(hit["mean_probability"].iloc[0]) if n and "mean_probability" in hit else None
        rows.append(GradeRow(g, proportion(k, n), mean))
    total_n = int(table["rows"].sum())
    own = model.metrics.get("leadscore", {})
    return GradesSection(
        source="test",
        horizon_days=model.horizon_days,
        grades=rows,
        base=proportion(int(table["conversions"].sum()), total_n),
        n_matured=total_n,
        test_lift_at_10=own.get("lift_at_10"),
        test_ece=own.get("ece"),
    )


# -- 3. handoff and alignment ----------------------------------------------------------------------
@dataclass(frozen=True)
class WeekRow:
    week: str  # Monday of the week (UTC), ISO date
    handoffs: int


@dataclass(frozen=True)
class GroupRate:
    name: str
    rate: Rate


NO_REASON = "(no reason given)"
REASON_LABELS = {
    "no_budget": "No budget",
    "not_ready": "Not ready to buy yet",
    "bad_timing": "Bad timing",
    "bad_fit": "Not a good fit",
    "wrong_contact": "Wrong contact person",
    "duplicate": "Duplicate of another lead",
}
"""Plain-language labels of the feedback reason codes sales records (``reason_code``, snake_case)."""


def reason_label(code: str) -> str:
    """What a rejection reason code means, for the page: a known code's label; ``crm_<stage>`` (verdicts read
    from the CRM's stage history, :mod:`serving.stage_feedback`) as a close in the CRM; any other code as
    itself with spaces for underscores."""
    if code in REASON_LABELS:
        return REASON_LABELS[code]
    if code.startswith(CRM_REASON_PREFIX) and len(code) > len(CRM_REASON_PREFIX):
        return f"Closed as {code[len(CRM_REASON_PREFIX) :].replace('_', ' ')} in the CRM"
    return code.replace("_", " ")


@dataclass(frozen=True)
class ReasonRow:
    reason: str  # the code as recorded (what the CRM holds), or NO_REASON
    count: int
    share: Rate  # of all rejections

    @property
    def label(self) -> str:
        return self.reason if self.reason == NO_REASON else reason_label(self.reason)

    @property
    def code(self) -> str | None:
        return None if self.reason == NO_REASON else self.reason


@dataclass
class HandoffSection:
    n_handoffs: int
    n_leads_handed: int  # distinct leads among the handoffs (a lead may be handed off again after its cool-down)
    weeks: list[WeekRow]
    weeks_complete: bool  # False: weeks without handoffs are left out of ``weeks``
    capacity: int | None
    capacity_note: str
    feedback_coverage: Rate
    acceptance: Rate
    per_grade: list[GroupRate]
    per_source: list[GroupRate]
    source_column: str | None
    reasons: list[ReasonRow]
    days_to_feedback: np.ndarray
    median_days: Estimate | None
    handoffs_converted: Rate | None
    converted_handed: Rate | None  # of converted leads, the share that had been handed off
    n_missed: int | None
    feedback_missing: str | None
    outcomes_missing: str | None
    no_history: bool = False  # built without --data: outcomes of served scores could not be matched


def _rates_by(frame: pd.DataFrame, key: str, order: Sequence[str] | None = None) -> list[GroupRate]:
    accepted = frame["outcome"].eq("accepted")
    grouped = accepted.groupby(frame[key].astype("string").fillna("(unknown)"))
    counts, hits = grouped.size(), grouped.sum()
    names = [n for n in order if n in counts.index] if order is not None else counts.sort_values(ascending=False).index
    return [GroupRate(str(n), proportion(int(hits[n]), int(counts[n]))) for n in names]


def handoff_section(inputs: ReportInputs) -> HandoffSection:
    handoffs, feedback, policy = inputs.handoffs, inputs.feedback, inputs.policy
    capacity, capacity_note = _capacity(policy)
    weeks: list[WeekRow] = []
    weeks_complete = True
    if len(handoffs):
        monday = handoffs["handed_off_at"].map(lambda t: week_start(t.to_pydatetime()).date().isoformat())
        counts = monday.value_counts().sort_index()
        first, last = pd.Timestamp(counts.index[0]), pd.Timestamp(counts.index[-1])
        if (last - first).days // 7 < MAX_FILLED_WEEKS:  # a continuous time axis, weeks without handoffs at 0
            every = pd.date_range(first, last, freq="7D").strftime("%Y-%m-%d")
            counts = counts.reindex(every, fill_value=0)
        else:  # batches far apart (e.g. a backfill, then a pause): only the weeks with handoffs
            weeks_complete = False
        weeks = [WeekRow(str(w), int(n)) for w, n in counts.items()]
    fb = feedback.merge(handoffs[["handoff_id", "grade"]], on="handoff_id", how="left")
    if inputs.leads is not None and inputs.source_column:
        fb = fb.merge(inputs.leads, on="lead_id", how="left")
    rejected = fb[fb["outcome"] == "rejected"]
    reason_counts = rejected["reason_code"].astype("string").fillna(NO_REASON).value_counts()
    reasons = [ReasonRow(str(r), int(c), proportion(int(c), len(rejected))) for r, c in reason_counts.items()]
    delay = pd.to_datetime(fb["recorded_at"], utc=True) - pd.to_datetime(fb["handed_off_at"], utc=True)
    days = delay.dt.total_seconds().to_numpy(dtype=np.float64) / 86_400.0
    feedback_missing = None
    if not len(fb):
        feedback_missing = (
            f"No feedback from sales yet on the {len(handoffs):,} handoffs in this period. Acceptance, rejection "
            "reasons and time to feedback appear here as soon as sales records verdicts (POST /v1/feedback "
            "from the CRM)."
            if len(handoffs)
            else "No lead has been handed off in this period, so there is no feedback to show."
        )
    conv = _handoff_conversions(inputs)
    source = inputs.source_column
    return HandoffSection(
        n_handoffs=len(handoffs),
        n_leads_handed=int(handoffs["lead_id"].nunique()) if len(handoffs) else 0,
        weeks=weeks,
        weeks_complete=weeks_complete,
        capacity=capacity,
        capacity_note=capacity_note,
        feedback_coverage=proportion(fb["handoff_id"].nunique(), max(len(handoffs), fb["handoff_id"].nunique())),
        acceptance=proportion(int(fb["outcome"].eq("accepted").sum()), len(fb)),
        per_grade=_rates_by(fb, "grade", GRADES) if len(fb) else [],
        per_source=_rates_by(fb, source) if len(fb) and source is not None and source in fb else [],
        source_column=inputs.source_column,
        reasons=reasons,
        days_to_feedback=days,
        median_days=median_interval(days),
        handoffs_converted=conv[0],
        converted_handed=conv[1],
        n_missed=conv[2],
        feedback_missing=feedback_missing,
        outcomes_missing=conv[3],
        no_history=inputs.outcomes is None,
    )


def _capacity(policy: HandoffPolicy) -> tuple[int | None, str]:
    grading = policy.grading
    if grading.mode == "capacity":
        k = grading.capacity.leads_per_week  # type: ignore[union-attr]
        return k, f"Policy {policy.policy_version}: sales can take {k} leads per week."
    return None, (
        f"Policy {policy.policy_version} grades by {grading.mode} and sets no weekly sales capacity; every lead "
        f"graded {policy.min_grade_for_handoff} or better (outside its {policy.cooldown_days}-day cool-down) "
        "is handed off."
    )


def _handoff_conversions(inputs: ReportInputs) -> tuple[Rate | None, Rate | None, int | None, str | None]:
    """(handoffs that converted, share of converted leads handed off, converted leads never handed off, missing)."""
    outcomes = inputs.outcomes
    if outcomes is None:
        return None, None, None, f"Conversions of handed-off leads are not known: {NO_DATA_DIR}."
    matured = outcomes
    if not len(matured):
        horizon = inputs.model.horizon_days
        return (
            None,
            None,
            None,
            (
                f"No served score has matured yet ({horizon} days after serving): handed-off leads that converted and "
                "leads that converted without a handoff show here once they have."
            ),
        )
    converted = matured["converted"].astype(bool)
    handed = matured["handed_off"].astype(bool)
    handoffs_converted = proportion(int((converted & handed).sum()), int(handed.sum()))
    converted_leads = set(matured.loc[converted, "lead_id"].astype(str))
    handed_converted = set(matured.loc[converted & handed, "lead_id"].astype(str))
    share = proportion(len(handed_converted), len(converted_leads))
    return handoffs_converted, share, len(converted_leads - handed_converted), None


# -- 4. where conversions come from -----------------------------------------------------------------
@dataclass(frozen=True)
class TouchRow:
    name: str
    touched: int  # leads touched in the period (while open)
    conversion: Rate  # of the touched leads whose first touch is at least one horizon old
    effect: dict[str, object] | None = None  # a row of the effects table, when given


@dataclass
class ConversionsSection:
    horizon_days: int
    groups: dict[str, list[TouchRow]]
    reference: Rate | None  # all leads with a matured first touch (for context, not a comparison)
    has_effects: bool
    effects: list[dict[str, object]]
    missing: str | None


def conversions_section(inputs: ReportInputs) -> ConversionsSection:
    horizon = inputs.model.horizon_days
    effects = _effect_rows(inputs.effects)
    if inputs.touches is None or inputs.conversions is None or inputs.data_end is None:
        return ConversionsSection(
            horizon,
            {},
            None,
            bool(effects),
            effects,
            "Campaign and channel figures need the prospect history (run with --data).",
        )
    touches = inputs.touches.copy()
    touches["lead_id"] = touches["lead_id"].astype(str)
    converted_at = touches["lead_id"].map(inputs.conversions)
    # only touches while the lead was still open: a customer receiving a newsletter is no conversion source
    touches = touches[converted_at.isna() | (touches["occurred_at"] < converted_at)]
    cutoff = pd.Timestamp(inputs.data_end) - pd.Timedelta(days=horizon)
    groups: dict[str, list[TouchRow]] = {}
    from serving.report.inputs import TOUCH_KINDS

    effect_by_campaign = {str(e["campaign_id"]): e for e in effects if str(e["campaign_id"])}
    for label, column in TOUCH_KINDS.items():
        if column not in touches.columns:
            continue
        part = touches.dropna(subset=[column])
        if not len(part):
            continue
        first = part.groupby([part[column].astype(str), "lead_id"])["occurred_at"].min().rename("first").reset_index()
        first["converted_at"] = first["lead_id"].map(inputs.conversions)
        first["matured"] = first["first"] <= cutoff
        first["converted"] = first["matured"] & (first["converted_at"] <= first["first"] + pd.Timedelta(days=horizon))
        stats = first.groupby(column).agg(
            touched=("lead_id", "size"), matured=("matured", "sum"), converted=("converted", "sum")
        )
        stats = stats.sort_values(["touched", "converted"], ascending=False).head(TOP_GROUPS)
        groups[label] = [
            TouchRow(
                str(name),
                int(row.touched),
                proportion(int(row.converted), int(row.matured)),
                effect_by_campaign.get(str(name)) if label == "campaign" else None,
            )
            for name, row in stats.iterrows()
        ]
    firsts = touches.groupby("lead_id")["occurred_at"].min()
    matured_leads = firsts[firsts <= cutoff]
    conv = inputs.conversions.reindex(matured_leads.index)
    hit = int((conv <= matured_leads + pd.Timedelta(days=horizon)).sum())
    reference = proportion(hit, len(matured_leads))
    missing = None if groups else "No campaign, channel or activity touches were recorded in this period."
    return ConversionsSection(horizon, groups, reference, bool(effects), effects, missing)


def _effect_rows(effects: pd.DataFrame | None) -> list[dict[str, object]]:
    if effects is None or not len(effects):
        return []
    return [{str(k): v for k, v in row.items()} for row in effects.to_dict(orient="records")]


# -- 5. drift ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftRow:
    variable: str
    kind: str  # "score" or "feature"
    psi: float
    flagged: bool
    n_current: int | None
    n_reference: int | None


@dataclass
class DriftSection:
    score: DriftRow | None
    top: list[DriftRow]
    n_features: int
    n_flagged: int
    flagged: list[str]
    threshold: float
    missing: str | None
    note: str | None = None


def drift_section(inputs: ReportInputs) -> DriftSection:
    """Section 5 from :class:`serving.monitoring.drift.DriftReport` (score PSI and one PSI per feature)."""
    report = inputs.drift
    if report is None:
        why = inputs.drift_note or (
            "No batch has been scored yet: drift compares the current scored population with the champion's "
            "training data."
            if not inputs.batches
            else "Drift could not be computed for this report."
        )
        return DriftSection(None, [], 0, 0, [], PSI_FLAG, why)
    threshold = float(report.feature_threshold)
    score = DriftRow(
        "score",
        "score",
        float(report.score_psi),
        bool(report.score_drifted),
        int(report.n_current),
        int(report.n_reference),
    )
    rows = [
        DriftRow(
            str(r["feature"]),
            "feature",
            float(r["psi"]) if pd.notna(r["psi"]) else float("nan"),
            bool(r["flagged"]),
            _int_or_none(r.get("n_current")),
            _int_or_none(r.get("n_reference")),
        )
        for r in report.features.to_dict(orient="records")
    ]
    rows.sort(key=lambda r: -r.psi if np.isfinite(r.psi) else np.inf)
    flagged = [r.variable for r in rows if r.flagged]
    return DriftSection(score, rows[:TOP_DRIFT], len(rows), len(flagged), flagged, threshold, None, inputs.drift_note)


def _int_or_none(value: object) -> int | None:
    try:
        return None if value is None or pd.isna(value) else int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


# -- 6. model card -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricRow:
    metric: str
    label: str
    values: dict[str, float | None]  # model -> value
    auc: dict[str, Estimate] | None = None


@dataclass
class ModelCard:
    name: str
    version: str
    run_id: str | None
    trained_at: str | None
    horizon_days: int
    policy_version: str
    score_semantics: str
    score_is_percentile: bool
    spans: list[tuple[str, str, int, int]]  # part, as-of span, rows, leads
    models: list[str]
    metrics: list[MetricRow]
    test_rows: int
    test_positives: int | None
    n_features: int
    calibration: str | None
    grade_cutoffs: dict[str, float]
    promotion: str | None = None  # why this version is the champion (the registry's decision), if recorded


_METRIC_LABELS = {
    "roc_auc": "ROC AUC (ranking; 0.5 = coin flip, higher is better)",
    "pr_auc": "PR AUC (ranking of the rare converters; higher is better)",
    "lift_at_10": "Lift in the top 10 % (x the average conversion)",
    "recall_at_10": "Share of conversions in the top 10 %",
    "brier": "Brier score (probability error; lower is better)",
    "ece": "Calibration error (predicted vs observed; lower is better)",
    "log_loss": "Log loss (lower is better)",
}


def model_card(inputs: ReportInputs) -> ModelCard:
    m = inputs.model
    percentile = m.score_method == "percentile"
    if percentile:
        r50, r90 = m.readiness_at_score(50), m.readiness_at_score(90)
        semantics = (
            "The 0-100 score is a PERCENTILE, not a probability: a score of 90 means the lead looks readier than "
            f"90 % of the leads the model was calibrated on. The probability of converting within {m.horizon_days} "
            f"days is the readiness: a score of 90 corresponds to a readiness of about {_pct(r90)} and a score of "
            f"50 to about {_pct(r50)}."
        )
    else:
        semantics = (
            f"The 0-100 score is a PROBABILITY in percent: a score of 12 means a 12 % chance of converting within "
            f"{m.horizon_days} days."
        )
    spans = []
    for part in ("train", "valid", "test"):
        span = m.split.get(f"{part}_as_of_range") or None
        text = f"{str(span[0])[:10]} to {str(span[1])[:10]}" if span else "-"
        spans.append((part, text, int(m.split.get(f"{part}_rows", 0) or 0), int(m.split.get(f"{part}_leads", 0) or 0)))
    models = ["leadscore", *sorted(k for k in m.metrics if k not in ("leadscore", "leadscore_uncalibrated"))]
    test_rows = int(m.split.get("test_rows", 0) or 0)
    base = m.metrics.get("leadscore", {}).get("base_rate")
    positives = round(base * test_rows) if base is not None and test_rows else None
    rows = []
    for metric, label in _METRIC_LABELS.items():
        values = {name: m.metrics.get(name, {}).get(metric) for name in models}
        if all(v is None for v in values.values()):
            continue
        auc = None
        if metric == "roc_auc" and positives is not None:
            auc = {
                name: auc_interval(v, positives, test_rows - positives) for name, v in values.items() if v is not None
            }
        rows.append(MetricRow(metric, label, values, auc))
    return ModelCard(
        name=m.name,
        version=m.version,
        run_id=m.run_id,
        trained_at=(m.trained_at or "")[:19].replace("T", " ") or None,
        horizon_days=m.horizon_days,
        policy_version=inputs.policy.policy_version,
        score_semantics=semantics,
        score_is_percentile=percentile,
        spans=spans,
        models=models,
        metrics=rows,
        test_rows=test_rows,
        test_positives=positives,
        n_features=m.n_features,
        calibration=m.calibration,
        grade_cutoffs=m.grade_cutoffs,
        promotion=m.promotion,
    )


# -- 1. summary ------------------------------------------------------------------------------------------
def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{100 * value:.{digits}f} %"


def rate_text(rate: Rate, digits: int = 1) -> str:
    """``11.8 % (9.9-13.9 %, 120 of 1,017)``."""
    if rate.value is None:
        return "no data (0 rows)"
    return (
        f"{100 * rate.value:.{digits}f} % ({100 * (rate.low or 0):.{digits}f}-{100 * (rate.high or 0):.{digits}f} %, "
        f"{rate.k:,} of {rate.n:,})"
    )


def summary_sentences(
    grades: GradesSection,
    handoff: HandoffSection,
    conversions: ConversionsSection,
    drift: DriftSection,
    card: ModelCard,
) -> list[str]:
    """Five sentences generated from the numbers of the other sections."""
    out = []
    by_grade = {row.grade: row.conversion for row in grades.grades}
    a, low = by_grade.get("A"), next((by_grade[g] for g in ("D", "C") if g in by_grade and by_grade[g].n), None)
    if a is not None and a.n and low is not None:
        label = {
            "served": "served scores",
            "test": "the champion's test set ("
            + (NO_DATA_DIR if grades.no_history else "no served score has matured yet")
            + ")",
        }
        low_grade = "D" if by_grade.get("D") is low else "C"
        disorder = grades.out_of_order()
        warning = (
            "; but "
            + ", ".join(f"grade {hi} converted no better than {lo}" for hi, lo in disorder)
            + ": those grades do not separate leads (see section 2)"
            if disorder
            else ""
        )
        out.append(
            f"Grade A leads converted within {grades.horizon_days} days at {rate_text(a)} vs "
            f"{_pct(low.value)} for grade {low_grade}, on {label[grades.source]}{warning}."
        )
    else:
        out.append(f"Conversion per grade is not measurable yet: {grades.missing}")
    if handoff.acceptance.n:
        out.append(
            f"Sales accepted {rate_text(handoff.acceptance, 0)} of the handoffs they gave feedback on "
            f"({handoff.feedback_coverage.k:,} of {handoff.n_handoffs:,} handoffs have feedback)."
        )
    else:
        out.append(
            f"{handoff.n_handoffs:,} handoffs of {handoff.n_leads_handed:,} distinct leads went to sales; "
            "no feedback has been recorded yet."
        )
    if handoff.converted_handed is not None and handoff.converted_handed.n:
        out.append(
            f"Of {handoff.converted_handed.n:,} leads that converted, {handoff.converted_handed.k:,} "
            f"({_pct(handoff.converted_handed.value, 0)}) had been handed off; {handoff.n_missed:,} converted "
            "without a handoff (missed)."
        )
    else:
        out.append(
            f"Handed-off and missed conversions are not measurable: {NO_DATA_DIR}."
            if handoff.no_history
            else "Handed-off and missed conversions are not measurable yet: no served score has matured."
        )
    campaigns = conversions.groups.get("campaign") or []
    measured = [r for r in campaigns if r.conversion.n]
    if measured:
        top = max(measured, key=lambda r: (r.conversion.n, r.touched))
        kind = "estimated effect: see section 4" if top.effect is not None else "association only, not an effect"
        out.append(
            f"Campaign {top.name} has the most leads touched long enough ago to judge ({top.conversion.n:,}): "
            f"{rate_text(top.conversion)} of them converted within {conversions.horizon_days} days ({kind})."
        )
    elif campaigns:
        out.append(
            f"{len(campaigns)} campaigns touched leads, all less than {conversions.horizon_days} days before the end "
            "of the data: their conversions can be judged once that much time has passed."
        )
    else:
        out.append(f"No campaign figures: {conversions.missing or 'no campaign touches in this period.'}")
    if drift.missing is None:
        score = f" the score's PSI is {drift.score.psi:.2f}" if drift.score is not None else ""
        names = ", ".join(drift.flagged[:3]) + (" ..." if len(drift.flagged) > 3 else "")
        what = (
            f"{drift.n_flagged} of {drift.n_features} features drifted (PSI > {drift.threshold:g}): {names}"
            if drift.n_flagged
            else (f"None of the {drift.n_features} features drifted (PSI > {drift.threshold:g})")
        )
        out.append(f"{what};{score} against the champion's training data (model version {card.version}).")
    else:
        out.append(f"Drift is not measured yet: {drift.missing}")
    return out
