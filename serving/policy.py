"""The handoff policy: when a lead is good enough to go to sales, and what to suggest otherwise.

Marketing and sales agree on one versioned YAML file (``serving/default_policy.yaml`` is the packaged
default and a commented template). ``version`` is the schema of the file; ``policy_version`` is the
user-facing name of the agreement and is stored with every score, so a score can always be traced to
the rules that graded it.

Grades
------
Grades run from ``A`` (best) to ``D``. Three modes:

- ``probability``: fixed cut-offs on calibrated readiness. ``readiness >= cutoffs.A`` is ``A``, else
  ``>= cutoffs.B`` is ``B``, else ``>= cutoffs.C`` is ``C``, else ``D`` (cut-offs strictly decreasing).
- ``model``: the same rule with the cut-offs the served model was trained with (the modelling config's
  ``grades``, e.g. "top 10% of the calibration snapshots are A"); the caller passes them as
  ``model_cutoffs``. Use it when the grade bands should follow the data's base rate.
- ``capacity``: sales can take ``K = capacity.leads_per_week`` leads per week. The scored leads of a
  batch are ranked by readiness, highest first (ties: ascending ``lead_id`` when ids are given, else
  input order), and rank ``r`` (1-based) gets ``A`` if ``r <= K``, ``B`` if ``r <= 2K``, ``C`` if
  ``r <= 3K``, else ``D``. A lead whose readiness is below ``capacity.min_readiness`` is ``D`` whatever its
  rank, so a thin batch never sends hopeless leads to sales.

Handoff
-------
A lead is handed off when all of these hold:

1. its grade is at least ``min_grade_for_handoff`` (``A`` > ``B`` > ``C`` > ``D``);
2. it is not in cool-down: it was never handed off, or its last handoff was at least ``cooldown_days``
   days before ``now`` (exactly ``cooldown_days`` ago is eligible again; a recorded handoff *after*
   ``now`` counts as cool-down, never as eligible);
3. capacity mode only: the weekly capacity is not used up. A week is a calendar week starting Monday
   00:00 UTC (:func:`week_start`); the budget is ``K`` minus the handoffs already made since the start of
   the week (the caller counts them, e.g. ``ScoreStore.count_handoffs_since(week_start(now))``). When more
   leads are eligible than the budget allows, the highest readiness wins (ties by ``lead_id``). With a
   weekly batch every batch gets the full ``K``; nightly batches share it across the week, and with
   ``min_grade_for_handoff: B`` the capacity is filled from the top ``2K`` when top leads are cooling down.

Every decision carries a plain-language rule, e.g. ``grade A >= min grade B; not handed off in the last
14 days`` or ``grade A >= min grade B; cool-down: handed off 2026-11-20, eligible again 2026-12-04``.

Trend
-----
Against the lead's previous stored score (0-100 points): ``score - previous >= trend.improving_delta``
is ``improving``, ``<= -trend.declining_delta`` is ``declining``, otherwise ``steady``; ``new`` when the
lead has no previous score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.contract import format_validation_error
from features.yamlfile import read_yaml_mapping

if TYPE_CHECKING:
    from features.contract import Contract

POLICY_SCHEMA_VERSION = 1
DEFAULT_POLICY_RESOURCE = "default_policy.yaml"

GRADES: tuple[str, ...] = ("A", "B", "C", "D")
Grade = Literal["A", "B", "C", "D"]
TRENDS: tuple[str, ...] = ("improving", "steady", "declining", "new")
Trend = Literal["improving", "steady", "declining", "new"]

_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"
_GRADE_RANK = {g: i for i, g in enumerate(GRADES)}  # 0 = best


class PolicyError(ValueError):
    """The handoff policy file is missing or invalid, or does not fit the data/model it is used with."""


# -- the policy model ----------------------------------------------------------------------------
class GradeCutoffs(BaseModel):
    """Lowest calibrated readiness for grades A, B and C (anything below ``C`` is ``D``)."""

    model_config = ConfigDict(extra="forbid")

    A: float = Field(gt=0.0, le=1.0)
    B: float = Field(gt=0.0, le=1.0)
    C: float = Field(gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _decreasing(self) -> GradeCutoffs:
        if not self.A > self.B > self.C:
            raise ValueError(
                f"cut-offs must be strictly decreasing (A > B > C), got A={self.A}, B={self.B}, C={self.C}"
            )
        return self


class ProbabilityGrading(BaseModel):
    """Grades from fixed cut-offs on calibrated readiness."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["probability"] = "probability"
    cutoffs: GradeCutoffs


class ModelGrading(BaseModel):
    """Grades from the cut-offs stored with the served model (chosen at training time)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["model"] = "model"


class CapacitySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    leads_per_week: int = Field(gt=0, description="K: how many leads sales can take per calendar week.")
    min_readiness: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Leads below this readiness are D whatever their rank."
    )


class CapacityGrading(BaseModel):
    """Grades from rank: the top K leads are A, the next K B, the next K C, the rest D."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["capacity"] = "capacity"
    capacity: CapacitySpec


Grading = Annotated[ProbabilityGrading | ModelGrading | CapacityGrading, Field(discriminator="mode")]


class TrendThresholds(BaseModel):
    """Score change (points on the 0-100 scale) that counts as improving or declining."""

    model_config = ConfigDict(extra="forbid")

    improving_delta: float = Field(default=5.0, gt=0.0, le=100.0)
    declining_delta: float = Field(default=5.0, gt=0.0, le=100.0)


class ReasonCounts(BaseModel):
    """How many positive and negative drivers each explained prediction carries."""

    model_config = ConfigDict(extra="forbid")

    positive: int = Field(default=5, ge=0, le=20)
    negative: int = Field(default=5, ge=0, le=20)


class NextBestAction(BaseModel):
    """A candidate action: the counterfactual adds ``count`` activities of ``activity_type`` now."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, max_length=64)
    activity_type: str = Field(pattern=_NAME)
    count: int = Field(default=1, ge=1, le=100)
    topic: str | None = Field(default=None, pattern=_NAME, description="Topic of the added activities, if any.")
    label: str = Field(min_length=1, max_length=200, description="Plain-language text shown to sales/marketing.")


class HandoffPolicy(BaseModel):
    """The handoff policy file (see the module docstring for the exact semantics)."""

    model_config = ConfigDict(extra="forbid")

    version: int = POLICY_SCHEMA_VERSION
    policy_version: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:+-]*$",
        description="User-facing name of this policy, stored with every score.",
    )
    horizon_days: int | None = Field(
        default=None,
        gt=0,
        description="Readiness = conversion within this many days; must match the model (null: the model's horizon).",
    )
    grading: Grading
    min_grade_for_handoff: Grade = "B"
    cooldown_days: int = Field(default=14, ge=0, description="Days before the same lead can be handed off again.")
    trend: TrendThresholds = Field(default_factory=TrendThresholds)
    reasons: ReasonCounts = Field(default_factory=ReasonCounts)
    next_best_actions: list[NextBestAction] = Field(default_factory=list)
    skip_inapplicable_actions: bool = Field(
        default=False,
        description="Drop actions whose activity type or topic the data does not have (instead of an error).",
    )

    @field_validator("version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value != POLICY_SCHEMA_VERSION:
            raise ValueError(f"policy schema version {value} is not supported (expected {POLICY_SCHEMA_VERSION})")
        return value

    @field_validator("next_best_actions")
    @classmethod
    def _unique_actions(cls, actions: list[NextBestAction]) -> list[NextBestAction]:
        names = [a.name for a in actions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate action names: {duplicates}")
        return actions

    @property
    def mode(self) -> str:
        return self.grading.mode

    def check_against_contract(self, contract: Contract, source: str = "handoff policy") -> HandoffPolicy:
        """The policy fitted to ``contract``.

        Raises :class:`PolicyError` if an action names an activity type or topic the data does not
        have, unless ``skip_inapplicable_actions`` is set: then those actions are left out of the
        returned copy (the packaged default policy does this, so it serves any data set).
        """
        if self.skip_inapplicable_actions:
            kept = [
                a
                for a in self.next_best_actions
                if a.activity_type in contract.activity_types and (a.topic is None or a.topic in contract.topics)
            ]
            return self.model_copy(update={"next_best_actions": kept})
        problems = []
        for i, action in enumerate(self.next_best_actions):
            if action.activity_type not in contract.activity_types:
                problems.append(
                    f"  - next_best_actions.{i}.activity_type: '{action.activity_type}' is not an activity type "
                    f"of the data contract {contract.activity_types}"
                )
            if action.topic is not None and action.topic not in contract.topics:
                problems.append(
                    f"  - next_best_actions.{i}.topic: '{action.topic}' is not a topic of the data contract "
                    f"{contract.topics}"
                )
        if problems:
            raise PolicyError(f"{source}: does not fit the data contract '{contract.name}':\n" + "\n".join(problems))
        return self

    def check_horizon(self, model_horizon_days: int, source: str = "handoff policy") -> None:
        """Raise :class:`PolicyError` unless the model predicts conversion over the policy's horizon."""
        if self.horizon_days is not None and model_horizon_days != self.horizon_days:
            raise PolicyError(
                f"{source}: horizon_days is {self.horizon_days} but the model predicts conversion within "
                f"{model_horizon_days} days; retrain the model or change the policy"
            )


# -- loading ---------------------------------------------------------------------------------------
def load_policy(path: str | Path | None = None) -> HandoffPolicy:
    """Read and validate a handoff policy; ``None`` loads the packaged default.

    Raises:
        PolicyError: naming the file and, for invalid content, each offending field.
    """
    if path is None:
        source = f"{__package__}/{DEFAULT_POLICY_RESOURCE} (packaged default)"
        text = resources.files(__package__ or "serving").joinpath(DEFAULT_POLICY_RESOURCE).read_text("utf-8")
    else:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise PolicyError(f"{path}: handoff policy file not found")
        text = path.read_text(encoding="utf-8")
    return parse_policy(text, source=source)


def parse_policy(text: str, source: str = "<string>") -> HandoffPolicy:
    """Validate policy YAML text; ``source`` names it in errors."""
    raw = read_yaml_mapping(text, source, PolicyError)
    try:
        return HandoffPolicy.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"{source}: invalid handoff policy:\n{format_validation_error(exc)}") from exc


# -- scores and grades -----------------------------------------------------------------------------
def _readiness_array(readiness: np.ndarray | Sequence[float]) -> np.ndarray:
    values = np.asarray(readiness, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"readiness must be one-dimensional, got shape {values.shape}")
    bad = ~np.isfinite(values) | (values < 0.0) | (values > 1.0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"readiness must be probabilities in [0, 1]: {int(bad.sum())} value(s) are not, "
            f"the first at position {first} ({values[first]!r})"
        )
    return values


def _rank_order(readiness: np.ndarray, lead_ids: np.ndarray | Sequence[str] | None) -> np.ndarray:
    """Indices from best to worst: readiness descending, ties by lead_id ascending (else input order)."""
    if lead_ids is None:
        return np.argsort(-readiness, kind="stable")
    ids = np.asarray(lead_ids, dtype=str)
    if ids.shape != readiness.shape:
        raise ValueError(f"lead_ids has {ids.shape[0]} entries but readiness has {readiness.shape[0]}")
    return np.lexsort((ids, -readiness))


def _model_cutoffs(cutoffs: Mapping[str, float] | None) -> tuple[float, float, float]:
    if cutoffs is None:
        raise ValueError("grading mode 'model' needs the served model's grade cut-offs (model_cutoffs)")
    try:
        a, b, c = (float(cutoffs[g]) for g in GRADES[:3])
    except KeyError as exc:
        raise ValueError(f"model_cutoffs needs the keys A, B and C, got {sorted(cutoffs)}") from exc
    if not (1.0 >= a >= b >= c >= 0.0):
        raise ValueError(f"model_cutoffs must satisfy 1 >= A >= B >= C >= 0, got A={a}, B={b}, C={c}")
    return a, b, c


def assign_grades(
    readiness: np.ndarray | Sequence[float],
    policy: HandoffPolicy,
    *,
    lead_ids: np.ndarray | Sequence[str] | None = None,
    model_cutoffs: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Grade each lead ``A``-``D`` under ``policy`` (string array, same order as ``readiness``).

    Args:
        readiness: calibrated probabilities in [0, 1].
        policy: the handoff policy.
        lead_ids: capacity mode: breaks readiness ties deterministically (ascending id).
        model_cutoffs: ``model`` mode: the served model's ``{"A": .., "B": .., "C": ..}`` cut-offs.
    """
    values = _readiness_array(readiness)
    grades = np.array(GRADES, dtype="<U1")
    grading = policy.grading
    if isinstance(grading, ProbabilityGrading | ModelGrading):
        if isinstance(grading, ProbabilityGrading):
            a, b, c = grading.cutoffs.A, grading.cutoffs.B, grading.cutoffs.C
        else:
            a, b, c = _model_cutoffs(model_cutoffs)
        index = np.where(values >= a, 0, np.where(values >= b, 1, np.where(values >= c, 2, 3)))
        return grades[index]
    k = grading.capacity.leads_per_week
    rank = np.empty(values.shape[0], dtype=np.int64)
    rank[_rank_order(values, lead_ids)] = np.arange(values.shape[0])
    index = np.minimum(rank // k, 3)
    index[values < grading.capacity.min_readiness] = 3
    return grades[index]


# -- handoff decisions -----------------------------------------------------------------------------
def week_start(now: datetime) -> datetime:
    """Monday 00:00 UTC of the calendar week containing ``now`` (capacity budgets are per such week)."""
    now = _aware_utc(now, "now")
    monday = now.date() - timedelta(days=now.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


def _aware_utc(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


def _last_handoffs(
    lead_ids: np.ndarray, last_handoff_at: Mapping[str, datetime | pd.Timestamp] | pd.Series
) -> pd.DatetimeIndex:
    """Each lead's last handoff time (UTC, NaT when never handed off), aligned with ``lead_ids``."""
    series = (
        last_handoff_at if isinstance(last_handoff_at, pd.Series) else pd.Series(dict(last_handoff_at), dtype=object)
    )
    if series.index.has_duplicates:
        dupes = sorted(set(series.index[series.index.duplicated()].astype(str)))[:5]
        raise ValueError(f"last_handoff_at lists a lead more than once: {dupes}")
    series = series.dropna()
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        naive = [k for k, v in series.items() if not isinstance(v, datetime) or v.tzinfo is None][:5]
        if naive:
            raise ValueError(f"last_handoff_at must hold timezone-aware datetimes; not so for leads {naive}")
    times = pd.to_datetime(series, utc=True) if len(series) else pd.Series([], dtype="datetime64[us, UTC]")
    times.index = times.index.astype(str)
    if times.index.has_duplicates:
        _raise_same_text_keys(times.index.tolist())
    return pd.DatetimeIndex(times.reindex(lead_ids))  # leads never handed off -> NaT


SMALL_DECISION_MAX = 100
"""Up to this many leads (and a plain mapping of handoff times), :func:`decide_handoff` decides in plain
Python: building and reindexing a pandas Series costs about 1 ms, far more than the decision for one lead
of an endpoint request. Both paths give identical results (tests/serving/test_policy.py compares them)."""


def _is_missing(value: Any) -> bool:
    """What ``Series.dropna`` drops from an object Series: None, NaN, NaT, pd.NA."""
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    if isinstance(value, np.datetime64):
        return bool(np.isnat(value))
    return False


def _raise_same_text_keys(keys: list[str]) -> None:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    dupes = sorted(k for k, c in counts.items() if c > 1)[:5]
    raise ValueError(f"last_handoff_at lists a lead more than once (keys with the same text): {dupes}")


def _base_rule(grade: str, policy: HandoffPolicy) -> str:
    """The rule of a lead decided by its grade alone (not in cool-down, capacity aside)."""
    min_grade = policy.min_grade_for_handoff
    if _GRADE_RANK[grade] > _GRADE_RANK[min_grade]:
        return f"grade {grade} < min grade {min_grade}"
    if policy.cooldown_days == 0:
        return f"grade {grade} >= min grade {min_grade}; no cool-down"
    return f"grade {grade} >= min grade {min_grade}; not handed off in the last {policy.cooldown_days} days"


def _cooling_rule(grade: str, handed: pd.Timestamp, future: bool, policy: HandoffPolicy) -> str:
    if future:
        detail = f"cool-down: handoff recorded at {handed.isoformat()}, after the decision time"
    else:
        again = handed + timedelta(days=policy.cooldown_days)
        detail = f"cool-down: handed off {handed.date().isoformat()}, eligible again {again.date().isoformat()}"
    return f"grade {grade} >= min grade {policy.min_grade_for_handoff}; {detail}"


def _cooldown_small(
    grades: list[str],
    lead_ids: list[str],
    last_handoff_at: Mapping[str, datetime | pd.Timestamp],
    now: datetime,
    policy: HandoffPolicy,
) -> tuple[np.ndarray, np.ndarray]:
    """Grade and cool-down decisions in plain Python (the same checks and results as the vectorised path)."""
    naive = [
        k
        for k, v in last_handoff_at.items()
        if not _is_missing(v) and (not isinstance(v, datetime) or v.tzinfo is None)
    ][:5]
    if naive:
        raise ValueError(f"last_handoff_at must hold timezone-aware datetimes; not so for leads {naive}")
    times = {str(k): v for k, v in last_handoff_at.items() if not _is_missing(v)}
    if len(times) != sum(1 for v in last_handoff_at.values() if not _is_missing(v)):
        _raise_same_text_keys([str(k) for k, v in last_handoff_at.items() if not _is_missing(v)])
    now_ts = pd.Timestamp(now)
    cooldown = timedelta(days=policy.cooldown_days)
    min_rank = _GRADE_RANK[policy.min_grade_for_handoff]
    handoff = np.zeros(len(grades), dtype=bool)
    rules = np.empty(len(grades), dtype=object)
    for i, (grade, lead) in enumerate(zip(grades, lead_ids, strict=True)):
        value = times.get(lead)
        if _GRADE_RANK[grade] <= min_rank and value is not None:
            handed = pd.Timestamp(value).tz_convert("UTC")
            future = handed > now_ts
            if future or handed + cooldown > now_ts:
                rules[i] = _cooling_rule(grade, handed, future, policy)
                continue
        rules[i] = _base_rule(grade, policy)
        handoff[i] = _GRADE_RANK[grade] <= min_rank
    return handoff, rules


def _cooldown_vectorised(
    grade_arr: np.ndarray,
    ids: np.ndarray,
    last_handoff_at: Mapping[str, datetime | pd.Timestamp] | pd.Series,
    now: datetime,
    policy: HandoffPolicy,
) -> tuple[np.ndarray, np.ndarray]:
    """Grade and cool-down decisions over arrays (batches)."""
    n = len(ids)
    min_grade = policy.min_grade_for_handoff
    grade_rank = np.searchsorted(np.array(GRADES), grade_arr)  # GRADES is sorted, so this is the rank
    good_grade = grade_rank <= _GRADE_RANK[min_grade]

    last = _last_handoffs(ids, last_handoff_at)
    cooldown = timedelta(days=policy.cooldown_days)
    has_last = ~np.asarray(last.isna())
    now_ts = pd.Timestamp(now)
    # NaT compares False, so leads never handed off are neither in cool-down nor "in the future".
    future = np.asarray(last > now_ts)
    cooling = has_last & (future | np.asarray(last + cooldown > now_ts))

    handoff = good_grade & ~cooling
    rules = np.empty(n, dtype=object)
    for g in GRADES:
        rules[grade_arr == g] = _base_rule(g, policy)
    for i in np.flatnonzero(good_grade & cooling):
        rules[i] = _cooling_rule(str(grade_arr[i]), last[int(i)], bool(future[i]), policy)
    return handoff, rules


def decide_handoff(
    grades: np.ndarray | Sequence[str],
    lead_ids: np.ndarray | Sequence[str],
    last_handoff_at: Mapping[str, datetime | pd.Timestamp] | pd.Series,
    now: datetime,
    policy: HandoffPolicy,
    *,
    readiness: np.ndarray | Sequence[float] | None = None,
    handoffs_this_week: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Decide which leads go to sales now, with the rule that decided each.

    Args:
        grades: ``A``-``D`` per lead (e.g. from :func:`assign_grades`).
        lead_ids: the leads, same order (unique).
        last_handoff_at: time of each lead's latest handoff (leads never handed off are simply absent),
            e.g. ``ScoreStore.last_handoff_times``; values must be timezone-aware.
        now: the decision time (the batch's ``scored_at``), timezone-aware.
        policy: the handoff policy.
        readiness: required in capacity mode, to choose the best leads when more are eligible than the
            weekly budget allows.
        handoffs_this_week: capacity mode: handoffs already made since :func:`week_start` of ``now``.

    Returns:
        ``(handoff, rule)``: a bool array and an object array of plain-language rule texts.
    """
    now = _aware_utc(now, "now")
    grade_arr = np.asarray(grades, dtype=str)
    ids = np.asarray(lead_ids, dtype=str)
    if grade_arr.ndim != 1 or grade_arr.shape != ids.shape:
        raise ValueError(f"grades ({grade_arr.shape}) and lead_ids ({ids.shape}) must be 1-D and of equal length")
    grade_list: list[str] = grade_arr.tolist()
    id_list: list[str] = ids.tolist()
    unknown = sorted(set(grade_list) - set(GRADES))
    if unknown:
        raise ValueError(f"unknown grades {unknown}; expected one of {list(GRADES)}")
    if len(set(id_list)) != len(id_list):
        raise ValueError("lead_ids must be unique")
    if handoffs_this_week < 0:
        raise ValueError(f"handoffs_this_week must be >= 0, got {handoffs_this_week}")
    n = len(ids)
    min_grade = policy.min_grade_for_handoff
    if n <= SMALL_DECISION_MAX and not isinstance(last_handoff_at, pd.Series):
        handoff, rules = _cooldown_small(grade_list, id_list, last_handoff_at, now, policy)
    else:
        handoff, rules = _cooldown_vectorised(grade_arr, ids, last_handoff_at, now, policy)

    if isinstance(policy.grading, CapacityGrading):
        if readiness is None:
            raise ValueError("capacity mode needs readiness to choose the best leads within the weekly capacity")
        values = _readiness_array(readiness)
        if values.shape != ids.shape:
            raise ValueError(f"readiness has {values.shape[0]} entries but lead_ids has {n}")
        k = policy.grading.capacity.leads_per_week
        budget = max(0, k - handoffs_this_week)
        order = _rank_order(values, ids)
        eligible_in_order = order[handoff[order]]
        over = eligible_in_order[budget:]
        if len(over):
            handoff[over] = False
            monday = week_start(now).date().isoformat()
            for i in over:
                rules[i] = (
                    f"grade {grade_arr[i]} >= min grade {min_grade}; weekly capacity of {k} reached "
                    f"({handoffs_this_week} handed off since Monday {monday}, {min(budget, len(eligible_in_order))} "
                    "more in this batch)"
                )
    return handoff, rules


# -- trends ----------------------------------------------------------------------------------------
def trend(previous_score: float | None, score: float, policy: HandoffPolicy) -> Trend:
    """Trend of one lead's score against its previous score (``None``/NaN = no previous score)."""
    if previous_score is None or pd.isna(previous_score):
        return "new"
    delta = float(score) - float(previous_score)
    if delta >= policy.trend.improving_delta:
        return "improving"
    if delta <= -policy.trend.declining_delta:
        return "declining"
    return "steady"


def trends(
    previous_scores: np.ndarray | Sequence[float], scores: np.ndarray | Sequence[float], policy: HandoffPolicy
) -> np.ndarray:
    """Vectorised :func:`trend`: ``previous_scores`` holds NaN for leads without a previous score."""
    prev = np.asarray(previous_scores, dtype=np.float64)
    cur = np.asarray(scores, dtype=np.float64)
    if prev.shape != cur.shape:
        raise ValueError(f"previous_scores ({prev.shape}) and scores ({cur.shape}) must have the same shape")
    delta = cur - prev
    out = np.full(cur.shape, "steady", dtype=object)
    out[delta >= policy.trend.improving_delta] = "improving"
    out[delta <= -policy.trend.declining_delta] = "declining"
    out[np.isnan(prev)] = "new"
    return out


def policy_summary(policy: HandoffPolicy) -> dict[str, Any]:
    """The policy as plain JSON-able data (store it with a batch for audit)."""
    return policy.model_dump(mode="json")
