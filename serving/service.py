"""The scoring service: predictions with reasons, needs, next-best action, trend and handoff decision.

:class:`ScoringService` ties a :class:`~models.fit.scoring.ScoringModel` to the handoff policy and, optionally,
the score store (for trends and cool-downs) and a prospect history (to score leads by id). The batch flow
(:mod:`serving.batch`) and the HTTP endpoint both use it, so a lead gets the same answer from both.

What one scoring pass does (all vectorised over the leads):

1. readiness, score and stage probabilities from the encoded features (one call per booster);
2. grades under the policy (``probability``/``model`` cut-offs, or ``capacity`` ranks *within the leads
   scored together*: for on-demand scoring in capacity mode the batch's grade is the reference);
3. trend against each lead's latest stored score (``new`` without a store or a previous score);
4. the handoff decision with its rule (grade, cool-down from the store's handoff log, weekly capacity);
5. reasons and next-best action for the rows asked for (``explain``), needs for every row.

On-demand scoring never records a handoff: the decision says what the policy would do now, and
``handoff_id`` stays empty. Only a batch written with :meth:`serving.stores.ScoreStore.write_batch`
creates handoffs.

as_of
-----
Features are built point-in-time at ``as_of`` (see :mod:`features.build`): only data recorded strictly
before it is used. When a caller gives no ``as_of`` it is :func:`default_as_of`: **now, but never later
than the end of the data + 1 day**, floored to the minute. A history is often a static extract (the
simulator's ends on 2025-12-31); scoring it "as of" a date long after its end would make every lead look
inactive for months (every recency feature grows, every window count drops to 0) and the model would
score a world where nobody has done anything. Capping at the data end + 1 day scores the extract as it
stood; with live data (which ends about now) the cap changes nothing. The minute floor lets repeated
requests share one feature build; it only leaves out events of the current minute. Every prediction
carries the ``as_of`` used.

Fast path
---------
For leads of the configured history at the default ``as_of``, features for all open leads are built once
(one :func:`features.build.build_features` call) and kept encoded; a single lead is then one row of a
numpy matrix. An explicit ``as_of`` builds features for just the requested leads from a per-lead index
of the history. Passes of up to :data:`FAST_PATH_MAX_LEADS` leads also take the policy's plain-Python
handoff decision (:data:`serving.policy.SMALL_DECISION_MAX`) and the cached store facts below, so a
one-lead request runs no pandas and (by default) one SQL statement.

Store facts
-----------
Trends need each lead's latest stored score and the cool-down its latest handoff; both change only when
a batch is written (:meth:`serving.stores.ScoreStore.state_token`, the newest batch id, changes with
every write). Small passes keep the facts of the leads asked for in a cache tagged with that token: each
pass reads the token (one indexed single-row query) and starts a new cache when it changed, so answers are
exactly those of the uncached path. With ``store_check_seconds > 0`` the token is read at most that often
instead: after a batch is written, on-demand trends and cool-downs may then lag it by up to that many
seconds. The cool-down's ``since`` window is applied to the cached all-time latest handoff, which gives
what the store's ``since`` query gives (the latest handoff if it is at or after ``since``, else none).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from features.build import build_features
from features.config import FeatureConfig
from features.history import ProspectHistory
from models.explain.reasons import CounterfactualAction, Explainer
from models.fit.scoring import ScoringModel
from serving.lead_states import EachScored, LeadStates
from serving.policy import (
    CapacityGrading,
    HandoffPolicy,
    assign_grades,
    decide_handoff,
    trends,
    week_start,
)
from serving.schemas import ModelRef, Prediction
from serving.scored import ScoredLeads

if TYPE_CHECKING:
    from serving.stores import ScoreStore


EXPLAIN_TOP: Literal["top"] = "top"
"""``explain=EXPLAIN_TOP``: reasons and next-best action for grades in ``explain_grades`` and handoffs."""
DEFAULT_EXPLAIN_GRADES: tuple[str, ...] = ("A", "B")
Explain = bool | np.ndarray | Sequence[bool] | Literal["top"]


class UnknownLeadError(LookupError):
    """The lead is not in the service's prospect history."""


class LeadNotOpenError(LookupError):
    """The lead exists but is not open at ``as_of`` (not yet created, converted or closed)."""


def default_as_of(data_end: pd.Timestamp | datetime | None, now: datetime | None = None) -> pd.Timestamp:
    """Now, but never later than ``data_end`` + 1 day, floored to the minute (UTC); see the module docstring."""
    current = pd.Timestamp(now if now is not None else datetime.now(UTC))
    current = current.tz_localize("UTC") if current.tzinfo is None else current.tz_convert("UTC")
    if data_end is not None and not pd.isna(data_end):
        end = pd.Timestamp(data_end)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        current = min(current, end + pd.Timedelta(days=1))
    return current.floor("min")


def batch_as_of(
    as_of: pd.Timestamp | datetime | str | None, data_end: pd.Timestamp | datetime | None, now: datetime
) -> pd.Timestamp:
    """A batch's feature time: ``as_of`` in UTC (naive = UTC), else :func:`default_as_of` of the data end."""
    if as_of is None:
        return default_as_of(data_end, now)
    ts = pd.Timestamp(as_of)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _as_of_timestamp(as_of: pd.Timestamp | datetime | str) -> pd.Timestamp:
    ts = pd.Timestamp(as_of)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if ts != ts.floor("s"):
        raise ValueError(f"as_of must be whole seconds, got {ts.isoformat()}")
    return ts


def model_ref(model: ScoringModel, info: Any) -> ModelRef:
    """Name and version of the served model from its load info (``models.package.bundle.LoadedModelInfo``).

    A model loaded outside the registry has no name/version: the name falls back to ``unregistered`` and
    the version to the run id, or to the model's training time.
    """
    name = getattr(info, "name", None) or "unregistered"
    version = getattr(info, "version", None)
    if version is None:
        version = getattr(info, "run_id", None) or model.metadata.get("trained_at") or "unknown"
    return ModelRef(name=str(name), version=str(version)[:64])


def feature_config_of(model: ScoringModel) -> FeatureConfig:
    """The feature configuration the model was trained with (windows, trend window, horizon)."""
    spec = model.spec
    return FeatureConfig(
        windows_days=list(spec.windows_days), trend_window_days=spec.trend_window_days, horizon_days=spec.horizon_days
    )


FAST_PATH_MAX_LEADS = 100
"""Scoring passes of up to this many leads (endpoint requests) read trend and cool-down facts from the
service's cache (see "Store facts" in the module docstring); larger passes (batches) query the store."""
_FACTS_MAX_LEADS = 500_000  # bounds the facts cache; past it the cache starts over


@dataclass
class _StoreFacts:
    """Trend and cool-down facts of the leads asked for so far, valid while the store's token is ``token``."""

    token: int
    checked_at: float
    previous: dict[str, float] = field(default_factory=dict)  # latest stored score, NaN when never scored
    last_handoff: dict[str, datetime | None] = field(default_factory=dict)  # latest handoff ever, or None
    week_counts: dict[datetime, int] = field(default_factory=dict)  # capacity mode: handoffs since a Monday


@dataclass
class _EncodedSnapshot:
    """Encoded features of every lead open at one ``as_of`` of the configured history."""

    as_of: pd.Timestamp
    row_of: dict[str, int]
    lead_ids: np.ndarray
    Xe: np.ndarray


class _LeadIndex:
    """Row positions of each lead in the three history tables, to cut a one-lead history cheaply."""

    def __init__(self, history: ProspectHistory) -> None:
        self.history = history
        self.leads = self._positions(history.leads)
        self.activities = self._positions(history.activities)
        self.stages = self._positions(history.stage_history)
        self.states = LeadStates(history)

    @staticmethod
    def _positions(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        if len(frame) == 0:
            return {}
        codes, uniques = pd.factorize(frame["lead_id"], sort=False)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        return {str(u): order[bounds[i] : bounds[i + 1]] for i, u in enumerate(uniques)}

    def subset(self, lead_ids: Sequence[str]) -> ProspectHistory:
        empty = np.empty(0, dtype=np.intp)
        h = self.history

        def take(frame: pd.DataFrame, index: dict[str, np.ndarray]) -> pd.DataFrame:
            parts = [index.get(lead, empty) for lead in lead_ids]
            rows = np.sort(np.concatenate(parts)) if parts else empty
            return frame.iloc[rows].reset_index(drop=True)

        return ProspectHistory(
            contract=h.contract,
            leads=take(h.leads, self.leads),
            activities=take(h.activities, self.activities),
            stage_history=take(h.stage_history, self.stages),
        )


class ScoringService:
    """Score leads with explanations, trends and handoff decisions (see the module docstring).

    Args:
        model: the unwrapped scoring model (``models.package.bundle.load_scoring_model``); without a stage model,
            predictions name no stage.
        model_info: where the model came from (``LoadedModelInfo``: name and version are reported).
        policy: the handoff policy; its horizon must match the model's.
        store: score store for trends and cool-downs (``None``: every trend is ``new``, no cool-down).
        history: prospect history for scoring leads by id (:meth:`score_leads`).
        explain_grades: grades that get reasons with ``explain="top"`` (handoffs always do).
        store_check_seconds: small passes check the store's state token at most this often (0 = on every
            pass, exact); a positive value trades up to that many seconds of staleness after a batch write
            for one query less per request (see "Store facts" in the module docstring).

    Raises:
        PolicyError: the policy's horizon or actions do not fit the model or the history's contract.
    """

    def __init__(
        self,
        model: ScoringModel,
        model_info: Any,
        policy: HandoffPolicy,
        store: ScoreStore | None = None,
        *,
        history: ProspectHistory | None = None,
        explain_grades: Sequence[str] = DEFAULT_EXPLAIN_GRADES,
        store_check_seconds: float = 0.0,
    ) -> None:
        policy.check_horizon(model.horizon_days)
        self.model = model
        self.model_info = model_info
        self.policy = policy
        self.store = store
        self.model_ref = model_ref(model, model_info)
        self.feature_config = feature_config_of(model)
        self.explain_grades = tuple(explain_grades)
        actions = policy.next_best_actions
        if policy.skip_inapplicable_actions:
            # the packaged policy serves any data set: keep the actions this model has features for
            names = set(model.spec.features)
            actions = [
                a
                for a in actions
                if f"days_since_{a.activity_type}" in names and (a.topic is None or f"topic_share_{a.topic}" in names)
            ]
        self.explainer = Explainer(
            model,
            [CounterfactualAction(a.name, a.activity_type, a.label, count=a.count, topic=a.topic) for a in actions],
            n_positive=policy.reasons.positive,
            n_negative=policy.reasons.negative,
        )
        self.history: ProspectHistory | None = None
        self.data_end: pd.Timestamp | None = None
        self._lock = threading.Lock()
        self._snapshots: dict[pd.Timestamp, _EncodedSnapshot] = {}
        self._index: _LeadIndex | None = None
        self.store_check_seconds = float(store_check_seconds)
        if self.store_check_seconds < 0:
            raise ValueError(f"store_check_seconds must be >= 0, got {store_check_seconds}")
        self._facts_lock = threading.Lock()
        self._facts: _StoreFacts | None = None
        self._as_of_memo: tuple[datetime, pd.Timestamp | None, pd.Timestamp] | None = None
        if history is not None:
            self.set_history(history)

    # -- configuration ------------------------------------------------------------------------------
    def set_history(self, history: ProspectHistory) -> None:
        """Use ``history`` to score leads by id (drops cached features)."""
        self.policy.check_against_contract(history.contract)
        with self._lock:
            self.history = history
            self.data_end = history.span[1] if len(history.leads) else None
            self._snapshots.clear()
            self._index = None

    def default_as_of(self, now: datetime | None = None) -> pd.Timestamp:
        """:func:`default_as_of` for the configured history (now, floored to the minute, without one)."""
        if now is not None:
            return default_as_of(self.data_end, now)
        # Per request: the answer only changes with the minute, so pandas runs once a minute.
        current = datetime.now(UTC)
        minute = current.replace(second=0, microsecond=0)
        memo = self._as_of_memo
        if memo is not None and memo[0] == minute and memo[1] is self.data_end:
            return memo[2]
        value = default_as_of(self.data_end, current)
        self._as_of_memo = (minute, self.data_end, value)
        return value

    def ready_for(self, lead_ids: Sequence[str], as_of: pd.Timestamp | datetime | None = None) -> bool:
        """Whether scoring ``lead_ids`` by id at ``as_of`` (None: the default) runs no feature build and no query.

        True when the encoded features at the default as_of are cached and the store facts of these leads
        are cached and fresh (see "Store facts" in the module docstring): :meth:`score_leads` is then a few
        numpy rows, no pandas, no SQL, so the endpoint runs it on its event loop.
        """
        if as_of is not None or self.history is None or len(lead_ids) > FAST_PATH_MAX_LEADS:
            return False
        ts = self.default_as_of()
        with self._lock:
            if ts not in self._snapshots:
                return False
        if self.store is None:
            return True
        with self._facts_lock:
            facts = self._fresh_facts()  # never fresh with store_check_seconds == 0: every pass reads the token
            if facts is None or any(str(lead) not in facts.previous for lead in lead_ids):
                return False
            if isinstance(self.policy.grading, CapacityGrading):
                return week_start(datetime.now(UTC)) in facts.week_counts
        return True

    # -- the scoring pass ---------------------------------------------------------------------------
    def explain_mask(self, explain: Explain, grades: np.ndarray, handoff: np.ndarray) -> np.ndarray:
        n = len(grades)
        if isinstance(explain, str):
            if explain != EXPLAIN_TOP:
                raise ValueError(f"explain must be a bool, a boolean mask or '{EXPLAIN_TOP}', got '{explain}'")
            return np.isin(grades, self.explain_grades) | handoff
        if isinstance(explain, bool | np.bool_):
            return np.full(n, bool(explain))
        mask = np.asarray(explain)
        if mask.dtype != np.bool_ or mask.shape != (n,):
            raise ValueError(f"an explain mask must be {n} booleans, got dtype {mask.dtype} and shape {mask.shape}")
        return mask

    def score_encoded(
        self,
        lead_ids: Sequence[str] | np.ndarray,
        Xe: np.ndarray,
        *,
        explain: Explain = True,
        as_of: Sequence[datetime | None] | datetime | None = None,
        scored_at: datetime | None = None,
    ) -> ScoredLeads:
        """Score already encoded feature rows (see :meth:`ScoringModel.encode`); the core of every path."""
        timings: dict[str, float] = {}
        t = time.perf_counter()
        ids = np.asarray(lead_ids, dtype=object)
        n = len(ids)
        if Xe.shape != (n, len(self.model.feature_names)):
            raise ValueError(f"expected {n} encoded rows of {len(self.model.feature_names)} features, got {Xe.shape}")
        if len(set(ids.tolist())) != n:
            raise ValueError("lead_ids must be unique within one scoring pass")
        now = scored_at or datetime.now(UTC)
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("scored_at must be timezone-aware")
        now = now.astimezone(UTC)
        policy = self.policy

        out = self.model.outputs_from_encoded(Xe)
        readiness = out["readiness"]
        timings["predict"] = time.perf_counter() - t

        t = time.perf_counter()
        grades, previous, trend, handoff, rules = self.decide(ids, readiness, out["score"], now)
        timings["policy"] = time.perf_counter() - t

        t = time.perf_counter()
        mask = self.explain_mask(explain, grades, handoff)
        reasons: list[dict[str, Any] | None] = [None] * n
        actions: list[dict[str, Any] | None] = [None] * n
        rows = np.flatnonzero(mask)
        for i, reason, action in zip(rows.tolist(), *self.explain_rows(Xe[rows], readiness[rows]), strict=True):
            reasons[i] = reason
            actions[i] = action
        needs = self.explainer.needs_from_encoded(Xe)
        timings["explain"] = time.perf_counter() - t

        if as_of is None or isinstance(as_of, datetime):
            as_of_list: list[datetime | None] = [as_of] * n
        else:
            as_of_list = list(as_of)
            if len(as_of_list) != n:
                raise ValueError(f"as_of has {len(as_of_list)} entries for {n} rows")
        return ScoredLeads(
            lead_ids=ids,
            readiness=readiness,
            score=out["score"],
            grade=np.asarray(grades, dtype=object),
            # a model without a stage model (data without conversion times) names no stage
            stage=out["stage"] if "stage" in out else np.full(n, None, dtype=object),
            stage_proba=out["stage_proba"] if "stage_proba" in out else np.zeros((n, 0)),
            stage_labels=list(self.model.stage_labels),
            trend=trend,
            previous_score=previous,
            handoff=handoff,
            handoff_rule=rules,
            explained=mask,
            reasons=reasons,
            needs=needs,
            next_best_action=actions,
            as_of=as_of_list,
            scored_at=now,
            model=self.model_ref,
            policy_version=policy.policy_version,
            timings=timings,
        )

    def decide(
        self, lead_ids: np.ndarray, readiness: np.ndarray, score: np.ndarray, now: datetime
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Grades, previous scores, trends, handoffs and their rules of the leads scored together.

        The part of a pass that needs the whole population (capacity ranks, the weekly capacity) and the
        store (trends, cool-downs); the partitioned batch runs it once on the client over every partition.
        """
        n = len(lead_ids)
        policy = self.policy
        id_text = np.asarray(lead_ids, dtype=object).astype(str)
        grades = assign_grades(readiness, policy, lead_ids=id_text, model_cutoffs=self.model.grade_cutoffs)
        previous = np.full(n, np.nan)
        last_handoffs: Mapping[str, datetime] = {}
        handoffs_this_week = 0
        if self.store is not None and 0 < n <= FAST_PATH_MAX_LEADS:
            previous, last_handoffs, handoffs_this_week = self._cached_store_facts(id_text.tolist(), now)
        elif self.store is not None and n:
            prev = self.store.previous_scores(id_text.tolist())
            if prev:
                previous = np.array([prev[i].score if i in prev else np.nan for i in id_text.tolist()], dtype=float)
            since = now - timedelta(days=policy.cooldown_days)
            last_handoffs = self.store.last_handoff_times(id_text.tolist(), since=since)
            if isinstance(policy.grading, CapacityGrading):
                handoffs_this_week = self.store.count_handoffs_since(week_start(now))
        trend = trends(previous, score, policy)
        handoff, rules = decide_handoff(
            grades, id_text, last_handoffs, now, policy, readiness=readiness, handoffs_this_week=handoffs_this_week
        )
        return np.asarray(grades, dtype=object), previous, trend, handoff, rules

    def explain_rows(
        self, Xe: np.ndarray, readiness: np.ndarray
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None]]:
        """Reasons and next-best actions of these encoded rows (row-wise: any subset gives the same rows)."""
        if not len(Xe):
            return [], []
        return self.explainer.reasons_from_encoded(Xe), self.explainer.next_best_actions_from_encoded(Xe, readiness)

    def refresh_store_facts(self) -> None:
        """Read the store's state token now (a background thread calls this, so requests need not).

        When a batch was written since the last check, the new facts cache is filled for every lead of the
        configured history here, before requests see it (one scan of the newest batch and the handoff log),
        so requests after a batch stay on the cached path instead of each querying the store for its leads;
        meanwhile they go on with the old facts (within the documented lag). Otherwise marks the cache as
        checked. No-op without a store or with ``store_check_seconds == 0`` (every pass checks itself).
        """
        if self.store is None or self.store_check_seconds <= 0:
            return
        check = time.monotonic()
        token = self.store.state_token()
        with self._facts_lock:
            facts = self._facts
            if facts is not None and facts.token == token and len(facts.previous) <= _FACTS_MAX_LEADS:
                facts.checked_at = max(facts.checked_at, check)
                return
        self._publish_facts(self._prefilled_facts(token, check))

    def warm(self) -> None:
        """Build what the first requests would otherwise build, on the calling (loading) thread: the feature
        snapshot at the default as_of, the lead index (not-open explanations) and the store facts of every
        lead. Called before a (hot-swapped) model serves, so no request pays for it and none waits for it."""
        if self.history is None or not len(self.history.leads):
            return
        self.snapshot(self.default_as_of())
        self._lead_index()
        if self.store is not None:
            check = time.monotonic()
            self._publish_facts(self._prefilled_facts(self.store.state_token(), check))

    def _prefilled_facts(self, token: int, checked_at: float) -> _StoreFacts:
        """Facts for ``token`` of every lead of the configured history (read after the token, as on requests)."""
        facts = _StoreFacts(token=token, checked_at=checked_at)
        if self.store is None or self.history is None or not 0 < len(self.history.leads) <= _FACTS_MAX_LEADS:
            return facts
        ids = self.history.leads["lead_id"].astype(str).tolist()
        prev = self.store.previous_scores(ids)
        last = self.store.last_handoff_times(ids)
        facts.previous = {lead: float(prev[lead].score) if lead in prev else np.nan for lead in ids}
        facts.last_handoff = {lead: last.get(lead) for lead in ids}
        return facts

    def _publish_facts(self, facts: _StoreFacts) -> None:
        with self._facts_lock:
            current = self._facts
            if current is None or current.token <= facts.token:
                self._facts = facts

    def _fresh_facts(self) -> _StoreFacts | None:
        """The facts cache if its token was checked less than ``store_check_seconds`` ago (hold ``_facts_lock``)."""
        facts = self._facts
        if facts is not None and time.monotonic() - facts.checked_at < self.store_check_seconds:
            return facts
        return None

    def _check_store_token(self) -> _StoreFacts:
        """Read the store's token: a new facts cache when a batch was written since (or the cache is full)."""
        assert self.store is not None
        check = time.monotonic()
        token = self.store.state_token()
        with self._facts_lock:
            facts = self._facts
            if facts is None or facts.token != token or len(facts.previous) > _FACTS_MAX_LEADS:
                facts = self._facts = _StoreFacts(token=token, checked_at=check)
            else:
                facts.checked_at = max(facts.checked_at, check)
            return facts

    def _cached_store_facts(self, ids: list[str], now: datetime) -> tuple[np.ndarray, dict[str, datetime], int]:
        """Previous scores, recent handoffs and (capacity mode) this week's handoff count, from the cache.

        The same values the store queries of the batch path return (see the module docstring, "Store facts").
        """
        store = self.store
        assert store is not None
        with self._facts_lock:
            facts = self._fresh_facts()
        if facts is None:
            facts = self._check_store_token()
        with self._facts_lock:
            missing = [lead for lead in dict.fromkeys(ids) if lead not in facts.previous]
        if missing:
            # Read after the token: these facts are at least as new as it (a batch committed meanwhile
            # changes the token, and the next request starts a new cache).
            prev = store.previous_scores(missing)
            last = store.last_handoff_times(missing)
            with self._facts_lock:
                for lead in missing:
                    facts.previous[lead] = float(prev[lead].score) if lead in prev else np.nan
                    facts.last_handoff[lead] = last.get(lead)
        since = now - timedelta(days=self.policy.cooldown_days)
        with self._facts_lock:
            previous = np.array([facts.previous[lead] for lead in ids], dtype=float)
            # The store's ``since`` filter keeps a lead's latest handoff iff it is at or after ``since``.
            last_handoffs = {lead: at for lead in ids if (at := facts.last_handoff[lead]) is not None and at >= since}
        handoffs_this_week = 0
        if isinstance(self.policy.grading, CapacityGrading):
            monday = week_start(now)
            with self._facts_lock:
                count = facts.week_counts.get(monday)
            if count is None:
                count = store.count_handoffs_since(monday)
                with self._facts_lock:
                    facts.week_counts[monday] = count
            handoffs_this_week = count
        return previous, last_handoffs, handoffs_this_week

    def score_frame(
        self,
        features_df: pd.DataFrame,
        explain: Explain = True,
        *,
        as_of: datetime | None = None,
        scored_at: datetime | None = None,
        as_records: bool = False,
    ) -> list[Prediction] | list[dict[str, Any]]:
        """Score a feature table (``lead_id`` and the model's feature columns; ``as_of`` used if present).

        Args:
            features_df: one row per lead, e.g. from :func:`features.build.build_features`.
            explain: ``True``/``False`` for all rows, a boolean mask, or ``"top"`` (grades A/B and handoffs).
            as_of: the as-of time reported when the frame has no ``as_of`` column.
            scored_at: decision time (default now).
            as_records: return plain dicts instead of validated :class:`Prediction` objects.
        """
        if "lead_id" not in features_df.columns:
            raise ValueError("the feature table needs a 'lead_id' column")
        if "as_of" in features_df.columns:
            as_of_values: list[datetime | None] | datetime | None = [
                None if pd.isna(v) else pd.Timestamp(v).to_pydatetime() for v in features_df["as_of"]
            ]
        else:
            as_of_values = as_of
        scored = self.score_encoded(
            features_df["lead_id"].astype(str).to_numpy(dtype=object),
            self.model.encode(features_df),
            explain=explain,
            as_of=as_of_values,
            scored_at=scored_at,
        )
        return scored.to_records() if as_records else scored.to_predictions()

    # -- from a history -----------------------------------------------------------------------------
    def features_at(
        self, history: ProspectHistory, as_of: pd.Timestamp | datetime | str, lead_ids: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Point-in-time features of the leads open at ``as_of`` (all, or those of ``lead_ids``)."""
        ts = _as_of_timestamp(as_of)
        if lead_ids is not None:
            wanted = list(dict.fromkeys(str(lead) for lead in lead_ids))
            if history is self.history:
                index = self._lead_index()
                unknown = [lead for lead in wanted if lead not in index.leads]
                if unknown:
                    raise UnknownLeadError(f"unknown lead(s) {unknown[:5]} (not in the prospect history)")
                history = index.subset(wanted)
            else:
                known = set(history.leads["lead_id"].tolist())
                unknown = [lead for lead in wanted if lead not in known]
                if unknown:
                    raise UnknownLeadError(f"unknown lead(s) {unknown[:5]} (not in the prospect history)")
                if len(known) > len(wanted):  # a history already cut to these leads is used as it is
                    history = _LeadIndex(history).subset(wanted)
        frame, _ = build_features(history, [ts], self.feature_config)
        return frame

    def score_history(
        self,
        history: ProspectHistory,
        lead_ids: Sequence[str] | None = None,
        as_of: pd.Timestamp | datetime | str | None = None,
        *,
        explain: Explain = True,
        scored_at: datetime | None = None,
        as_records: bool = False,
    ) -> list[Prediction] | list[dict[str, Any]]:
        """Build point-in-time features for ``lead_ids`` (default: every open lead) at ``as_of``, then score.

        ``as_of`` defaults to :func:`default_as_of` with the end of the *configured* history (so a history
        cut to a few leads is scored at the same time as the whole extract), else of ``history``. Leads not
        open at ``as_of`` are reported with :class:`LeadNotOpenError` when named explicitly.
        """
        if as_of is not None:
            ts = _as_of_timestamp(as_of)
        else:
            ts = default_as_of(self.data_end if self.data_end is not None else history.span[1], scored_at)
        frame = self.features_at(history, ts, lead_ids)
        if lead_ids is not None:
            self._check_open(lead_ids, frame["lead_id"].astype(str).tolist(), ts)
        return self.score_frame(frame, explain, scored_at=scored_at, as_records=as_records)

    @staticmethod
    def _check_open(wanted: Sequence[str], found: Sequence[str], as_of: pd.Timestamp) -> None:
        have = set(found)
        closed = [lead for lead in wanted if lead not in have]
        if closed:
            raise LeadNotOpenError(
                f"lead(s) {closed[:5]} not open at {as_of.isoformat()} (created later, converted or closed)"
            )

    # -- fast path for leads of the configured history ----------------------------------------------
    def _lead_index(self) -> _LeadIndex:
        if self.history is None:
            raise RuntimeError("no prospect history is configured (ScoringService(history=...))")
        with self._lock:
            if self._index is None:
                self._index = _LeadIndex(self.history)
            return self._index

    def snapshot(self, as_of: pd.Timestamp) -> _EncodedSnapshot:
        """Encoded features of every open lead of the configured history at ``as_of`` (cached, 2 kept)."""
        if self.history is None:
            raise RuntimeError("no prospect history is configured (ScoringService(history=...))")
        with self._lock:
            snap = self._snapshots.get(as_of)
            if snap is not None:
                return snap
        frame, _ = build_features(self.history, [as_of], self.feature_config)
        ids = frame["lead_id"].astype(str).to_numpy(dtype=object)
        snap = _EncodedSnapshot(as_of, {lead: i for i, lead in enumerate(ids.tolist())}, ids, self.model.encode(frame))
        with self._lock:
            while len(self._snapshots) >= 2:
                self._snapshots.pop(next(iter(self._snapshots)))
            self._snapshots[as_of] = snap
        return snap

    def score_leads(
        self,
        lead_ids: Sequence[str],
        as_of: pd.Timestamp | datetime | None = None,
        *,
        explain: Explain = True,
        scored_at: datetime | None = None,
    ) -> ScoredLeads:
        """Score leads of the configured history by id (the HTTP ``lead_id`` path).

        Raises:
            UnknownLeadError: a lead is not in the history.
            LeadNotOpenError: a lead is not open at ``as_of``.
        """
        if self.history is None:
            raise RuntimeError("no prospect history is configured (ScoringService(history=...))")
        wanted = [str(lead) for lead in lead_ids]
        if as_of is None:
            ts = self.default_as_of(scored_at)
            snap = self.snapshot(ts)
            rows = [snap.row_of.get(lead) for lead in wanted]
            if any(r is None for r in rows):
                index = self._lead_index()
                unknown = [lead for lead in wanted if lead not in index.leads]
                if unknown:
                    raise UnknownLeadError(f"unknown lead(s) {unknown[:5]} (not in the prospect history)")
                self._check_open(wanted, list(snap.row_of), ts)
            Xe = snap.Xe[np.array(rows, dtype=np.intp)]
        else:
            ts = _as_of_timestamp(as_of)
            index = self._lead_index()
            unknown = [lead for lead in wanted if lead not in index.leads]
            if unknown:
                raise UnknownLeadError(f"unknown lead(s) {unknown[:5]} (not in the prospect history)")
            frame, _ = build_features(index.subset(wanted), [ts], self.feature_config)
            found = frame["lead_id"].astype(str).tolist()
            self._check_open(wanted, found, ts)
            position = {lead: i for i, lead in enumerate(found)}
            Xe = self.model.encode(frame)[[position[lead] for lead in wanted]]
        return self.score_encoded(
            np.array(wanted, dtype=object), Xe, explain=explain, as_of=ts.to_pydatetime(), scored_at=scored_at
        )

    def score_each(
        self,
        lead_ids: Sequence[str],
        as_of: pd.Timestamp | datetime | None = None,
        *,
        explain: Explain = True,
        scored_at: datetime | None = None,
    ) -> EachScored:
        """:meth:`score_leads` per lead: the open ones scored, the others explained, none an error.

        A lead that is not open gets its :class:`NotOpenState` and its latest stored score (the facts cache
        trends use: no extra query once cached); a lead not in the history is ``unknown``.
        """
        index = self._lead_index()
        wanted = [str(lead) for lead in lead_ids]
        known = [lead for lead in wanted if lead in index.leads]
        if as_of is None:
            ts = self.default_as_of(scored_at)
            snap = self.snapshot(ts)
            open_ids = [lead for lead in known if lead in snap.row_of]
            Xe = snap.Xe[np.array([snap.row_of[lead] for lead in open_ids], dtype=np.intp)]
        else:
            ts = _as_of_timestamp(as_of)
            frame, _ = build_features(index.subset(known), [ts], self.feature_config)
            position = {lead: i for i, lead in enumerate(frame["lead_id"].astype(str).tolist())}
            open_ids = [lead for lead in known if lead in position]
            Xe = self.model.encode(frame)[np.array([position[lead] for lead in open_ids], dtype=np.intp)]
        is_open = set(open_ids)
        refused = [lead for lead in known if lead not in is_open]
        states = index.states.explain(refused, ts)
        last = np.full(len(refused), np.nan)
        if self.store is not None and 0 < len(refused) <= FAST_PATH_MAX_LEADS:
            last = self._cached_store_facts(refused, scored_at or datetime.now(UTC))[0]
        elif self.store is not None and refused:
            prev = self.store.previous_scores(refused)
            last = np.array([prev[lead].score if lead in prev else np.nan for lead in refused], dtype=float)
        scored = (
            self.score_encoded(
                np.array(open_ids, dtype=object), Xe, explain=explain, as_of=ts.to_pydatetime(), scored_at=scored_at
            ).to_records()
            if open_ids
            else []
        )
        return EachScored(
            as_of=ts.to_pydatetime(),
            scored=dict(zip(open_ids, scored, strict=True)),
            not_open={
                # a lead the feature build left out but the stage rule calls open cannot happen; be explicit
                lead: (states.get(lead), None if np.isnan(score) else float(score))
                for lead, score in zip(refused, last.tolist(), strict=True)
            },
            unknown=[lead for lead in wanted if lead not in index.leads],
        )

    def score_lead(
        self, lead_id: str, as_of: pd.Timestamp | datetime | None = None, *, explain: bool = True
    ) -> Prediction:
        """One lead of the configured history, as a validated :class:`Prediction`."""
        return self.score_leads([lead_id], as_of, explain=explain).to_predictions()[0]
