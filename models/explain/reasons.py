"""Plain-language explanations of readiness: reasons, needs and the next-best action.

Everything works on the *encoded* feature matrix of :class:`~models.fit.scoring.ScoringModel` (one float64
row per lead, columns ``model.feature_names``), so a batch is explained with a few vectorised calls.

Reasons
-------
Exact TreeSHAP contributions (LightGBM ``pred_contrib``, :meth:`ScoringModel.contributions_from_encoded`)
to the readiness booster's raw margin (log-odds): per row they sum, with the bias, to the margin. The
``n_positive`` largest positive contributions and the ``n_negative`` most negative ones become reasons,
strongest first; a feature with a zero contribution is never a reason. Each reason's text is built from the
feature's *value* with a template chosen by the feature's family, recognised from its name (the names
:func:`features.build.feature_names` produces):

- ``n_<type>_<w>d`` -> "3 pricing-page views in the last 7 days"; ``days_since_<type>`` -> "last demo request
  12 days ago" / "no demo request yet";
- ``n_activities_<w>d``, ``days_since_activity``, ``n_activities_total``, ``value_sum_<w>d``, ``trend_<k>d``,
  ``n_channels`` / ``n_campaigns`` / ``n_topics``, ``topic_share_<topic>``, ``top_topic``;
- ``stage`` -> "stage mql", ``days_in_stage`` -> "12 days in stage mql", ``lead_age_days`` -> "lead created
  40 days ago";
- any other categorical feature is an attribute: "company size 11-50"; any other numeric one "annual
  revenue musd 12.5".

Reasons separate state from drivers: the stage the CRM already shows (:data:`STATE_FEATURES`: ``stage``,
``days_in_stage``) is no reason; its contributions go to ``context``. ``positive`` / ``negative`` are then
the top behaviour and fit drivers, and ``rest`` is the bias plus every driver not listed, so that per row
``sum(positive) + sum(negative) + sum(context) + rest`` is the margin (the score's log-odds).

Needs
-----
The prospect's top topics: the ``topic_share_<topic>`` features with a positive share, largest first (ties
in the contract's topic order), at most ``n_needs``; ``top_topic`` alone when the shares are absent.

Next-best action
----------------
:meth:`Explainer.next_best_actions_from_encoded` uses the *estimated causal effects* the model carries
(``ScoringModel.effects``, the table of :mod:`models.explain.effects`, attached at training): among the
configured actions, the one with the largest estimated effect on conversion for leads at the same CRM
stage, only if its (multiplicity-adjusted) interval lies above 0; otherwise ``action`` is ``None`` with
the label "no action with evidence of effect". A model without effect estimates recommends nothing.

Counterfactual what-if
----------------------
:meth:`Explainer.counterfactual_actions_from_encoded` is the model's *correlational* what-if (not a
recommendation: a lead model learns that engaged leads convert, not that making a lead engage causes
conversion). For each configured :class:`CounterfactualAction` (``count`` activities of ``activity_type``, optionally on
``topic``) the row is changed as if those activities happened just now, and readiness is predicted again:

- every window count ``n_<type>_<w>d`` and ``n_activities_<w>d`` grows by ``count``, so does
  ``n_activities_total``; ``days_since_<type>`` and ``days_since_activity`` become 0;
- ``trend_<k>d`` = (r - p) / (r + p + 1) is recomputed with ``r + count`` recent activities, where ``r`` is
  ``n_activities_<k>d`` and ``p`` is recovered from the current trend (only when ``k`` is one of the
  windows; otherwise the trend is left as it is);
- with a ``topic``, the topic shares over the largest window are re-weighted as if ``count`` topic-tagged
  activities were added to ``N`` = ``n_activities_<W>d`` tagged ones (the tagged count is not a feature;
  all activities is an upper bound, so the shift towards the topic is conservative); ``top_topic`` and
  ``n_topics`` follow;
- stage, attributes, value sums and lead age are unchanged (an activity does not move them).

All rows x actions are predicted in ONE booster call on a stacked matrix; the action with the largest
readiness gain is suggested. When no action raises readiness (gain <= 0) there is no suggestion (``None``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from models.fit.scoring import ScoringModel

_N_TYPE_WINDOW = re.compile(r"^n_(?P<type>[A-Za-z][A-Za-z0-9_]*?)_(?P<w>\d+)d$")
_DAYS_SINCE = re.compile(r"^days_since_(?P<type>[A-Za-z][A-Za-z0-9_]*)$")
_VALUE_SUM = re.compile(r"^value_sum_(?P<w>\d+)d$")
_TREND = re.compile(r"^trend_(?P<k>\d+)d$")
_TOPIC_SHARE = "topic_share_"
# What the CRM already shows about the lead: reported as context, never as a reason.
STATE_FEATURES = ("stage", "days_in_stage")
_DISTINCT_TEXT = {"n_channels": "channel", "n_campaigns": "campaign", "n_topics": "topic"}
# A trend this close to 0 reads as "steady" rather than as rising or falling.
_TREND_STEADY = 0.05


@dataclass(frozen=True)
class CounterfactualAction:
    """A candidate next-best action: ``count`` more activities of ``activity_type`` (on ``topic``) now."""

    name: str
    activity_type: str
    label: str
    count: int = 1
    topic: str | None = None

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"action '{self.name}': count must be >= 1, got {self.count}")


def _nan_to_zero(values: np.ndarray) -> np.ndarray:
    # np.nan_to_num also clips infinities, at ~10x the cost for the small arrays of a request.
    return np.where(np.isnan(values), 0.0, values)


# -- text ------------------------------------------------------------------------------------------
def _words(name: str) -> str:
    return name.replace("_", " ")


def activity_noun(activity_type: str, plural: bool) -> str:
    """``pricing_page_view`` -> "pricing-page view(s)", ``demo_request`` -> "demo request(s)"."""
    parts = activity_type.split("_")
    # Three or more words: the leading ones qualify the last ("pricing-page view"), as a reader would write it.
    head = "-".join(parts[:-1]) if len(parts) >= 3 else " ".join(parts[:-1])
    last = parts[-1]
    if plural:
        last = last + ("es" if last.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{head} {last}".strip()


def _count(value: float) -> int:
    return round(value)


def _days_ago(days: float) -> str:
    d = math.floor(days)
    if d <= 0:
        return "today"
    return "1 day ago" if d == 1 else f"{d} days ago"


def _number(value: float) -> str:
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def feature_text(name: str, value: Any, *, stage: str | None = None, max_window: int | None = None) -> str:
    """One feature's value in plain language (see the module docstring for the families).

    Args:
        name: feature name.
        value: the feature's value: a number for numeric features, the category (str) or ``None`` for
            categorical ones.
        stage: the lead's current stage, used by ``days_in_stage``.
        max_window: the largest feature window in days, used by ``topic_share_*``.
    """
    missing = _missing(value)
    if name == "stage":
        return "stage unknown" if missing else f"stage {value}"
    if name == "top_topic":
        return "no topic of interest yet" if missing else f"most interested in {_words(str(value))}"
    if name == "days_in_stage":
        where = f"stage {stage}" if stage else "the current stage"
        return f"time in {where} unknown" if missing else f"{_count(value)} days in {where}"
    if name == "lead_age_days":
        return "lead age unknown" if missing else f"lead created {_days_ago(value)}"
    if name == "days_since_activity":
        return "no activity yet" if missing else f"last activity {_days_ago(value)}"
    if name == "n_activities_total":
        n = 0 if missing else _count(value)
        return f"{n} activit{'y' if n == 1 else 'ies'} in total"
    if name in _DISTINCT_TEXT:
        noun = _DISTINCT_TEXT[name]
        n = 0 if missing else _count(value)
        return f"{n} different {noun}{'' if n == 1 else 's'}"
    if (m := _VALUE_SUM.match(name)) is not None:
        w = m.group("w")
        return f"activity value {_number(0.0 if missing else float(value))} in the last {w} days"
    if (m := _TREND.match(name)) is not None:
        k = m.group("k")
        if missing:
            return f"no engagement trend over the last {k} days"
        if value > _TREND_STEADY:
            return f"engagement rising over the last {k} days"
        if value < -_TREND_STEADY:
            return f"engagement falling over the last {k} days"
        return f"engagement steady over the last {k} days"
    if name.startswith(_TOPIC_SHARE):
        topic = _words(name[len(_TOPIC_SHARE) :])
        window = f" in the last {max_window} days" if max_window else ""
        if missing:
            return f"no topic-tagged activity{window}"
        return f"{round(100 * float(value))}% of topic-tagged activity{window} about {topic}"
    if (m := _N_TYPE_WINDOW.match(name)) is not None:
        kind, w = m.group("type"), m.group("w")
        n = 0 if missing else _count(value)
        if kind == "activities":
            return f"{'no' if n == 0 else n} activit{'y' if n == 1 else 'ies'} in the last {w} days"
        return f"{'no' if n == 0 else n} {activity_noun(kind, n != 1)} in the last {w} days"
    if (m := _DAYS_SINCE.match(name)) is not None:
        kind = m.group("type")
        noun = activity_noun(kind, False)
        return f"no {noun} yet" if missing else f"last {noun} {_days_ago(value)}"
    label = _words(name)
    if missing:
        return f"{label} unknown"
    if isinstance(value, str):
        return f"{label} {value}"
    return f"{label} {_number(float(value))}"


_EMPTY_EFFECTS = pd.DataFrame(
    {"kind": [], "segment": [], "estimate": [], "action": [], "activity_type": [], "ci_low": [], "ci_high": []}
)


# -- the explainer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Explanations:
    """Per-row explanations (lists aligned with the explained rows)."""

    reasons: list[dict[str, Any]]
    needs: list[list[str]]
    next_best_action: list[dict[str, Any] | None]


@dataclass(frozen=True)
class _ActionPlan:
    """Column indices an action changes (precomputed once per explainer)."""

    add: np.ndarray  # columns incremented by count
    zero: np.ndarray  # columns set to 0 (recencies)
    topic: int | None  # index of the topic in the topic-share columns


class Explainer:
    """Reasons, needs and next-best actions for a :class:`ScoringModel` (see the module docstring).

    Args:
        model: the scoring model.
        actions: candidate next-best actions (e.g. from the handoff policy).
        n_positive: positive reasons per row.
        n_negative: negative reasons per row.
        n_needs: topics of interest per row.

    Raises:
        ValueError: if an action names an activity type (or topic) the model has no features for.
    """

    def __init__(
        self,
        model: ScoringModel,
        actions: Sequence[CounterfactualAction] = (),
        *,
        n_positive: int = 5,
        n_negative: int = 5,
        n_needs: int = 3,
    ) -> None:
        if min(n_positive, n_negative, n_needs) < 0:
            raise ValueError("n_positive, n_negative and n_needs must be >= 0")
        self.model = model
        self.actions = list(actions)
        self.n_positive = n_positive
        self.n_negative = n_negative
        self.n_needs = n_needs
        names = model.feature_names
        self.feature_names = names
        self._index = {n: i for i, n in enumerate(names)}
        spec = model.spec
        self._windows = list(spec.windows_days)
        self._max_window = self._windows[-1] if self._windows else None
        categories = model.encoder.categories_
        self._categorical = {i: categories.get(n, []) for i, n in enumerate(names) if n in set(spec.categorical)}
        self._stage_col = self._index.get("stage")
        self._topic_cols = [i for i, n in enumerate(names) if n.startswith(_TOPIC_SHARE)]
        self._topics = [names[i][len(_TOPIC_SHARE) :] for i in self._topic_cols]
        self._top_topic_col = self._index.get("top_topic")
        self._plans = [self._plan(a) for a in self.actions]
        self._arrays = self._action_arrays()

    # -- decoding ---------------------------------------------------------------------------------
    def value_of(self, Xe: np.ndarray, row: int, col: int) -> Any:
        """The feature's value in the row: the category (or None) for categoricals, else a float."""
        x = float(Xe[row, col])
        if col in self._categorical:
            if math.isnan(x):
                return None
            cats = self._categorical[col]
            code = int(x)
            return cats[code] if 0 <= code < len(cats) else None
        return x

    def describe(self, Xe: np.ndarray, row: int, col: int) -> str:
        """Plain-language text of feature ``col`` in encoded row ``row``."""
        stage = None
        if self.feature_names[col] == "days_in_stage" and self._stage_col is not None:
            stage = self.value_of(Xe, row, self._stage_col)
        return feature_text(
            self.feature_names[col], self.value_of(Xe, row, col), stage=stage, max_window=self._max_window
        )

    # -- reasons ----------------------------------------------------------------------------------
    def contributions(self, Xe: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP contributions to the raw margin, shape (n, n_features + 1), bias last."""
        return self.model.contributions_from_encoded(Xe, space="raw")

    def reasons_from_encoded(self, Xe: np.ndarray, contributions: np.ndarray | None = None) -> list[dict[str, Any]]:
        """Top drivers per row: ``{"positive": [...], "negative": [...], "context": [...], "rest": float}``.

        Each driver is ``{"feature", "text", "contribution"}``, strongest first; ``context`` holds the CRM
        state (:data:`STATE_FEATURES`) and ``rest`` the bias plus the drivers not listed (module docstring).
        """
        n = len(Xe)
        if n == 0:
            return []
        contrib = self.contributions(Xe) if contributions is None else contributions
        names = self.feature_names
        state = [j for j, name in enumerate(names) if name in STATE_FEATURES]
        drivers = np.array([j for j in range(len(names)) if names[j] not in STATE_FEATURES], dtype=np.intp)
        phi = contrib[:, drivers]  # the bias is no reason, nor is the CRM state
        margin = contrib.sum(axis=1)
        n_feat = phi.shape[1]
        # Strongest first; a stable sort on the negated values keeps the feature order on ties.
        order_pos = np.argsort(-phi, axis=1, kind="stable")[:, : min(self.n_positive, n_feat)]
        order_neg = np.argsort(phi, axis=1, kind="stable")[:, : min(self.n_negative, n_feat)]
        out: list[dict[str, Any]] = []
        for i in range(n):
            row = phi[i]
            positive = [
                {
                    "feature": names[drivers[j]],
                    "text": self.describe(Xe, i, int(drivers[j])),
                    "contribution": float(row[j]),
                }
                for j in order_pos[i]
                if row[j] > 0.0
            ]
            negative = [
                {
                    "feature": names[drivers[j]],
                    "text": self.describe(Xe, i, int(drivers[j])),
                    "contribution": float(row[j]),
                }
                for j in order_neg[i]
                if row[j] < 0.0
            ]
            context = [
                {"feature": names[j], "text": self.describe(Xe, i, j), "contribution": float(contrib[i, j])}
                for j in state
            ]
            shown = sum(d["contribution"] for d in positive + negative + context)
            out.append(
                {"positive": positive, "negative": negative, "context": context, "rest": float(margin[i] - shown)}
            )
        return out

    # -- needs ------------------------------------------------------------------------------------
    def needs_from_encoded(self, Xe: np.ndarray) -> list[list[str]]:
        """Top topics of interest per row (largest share first, ties in contract order)."""
        n = len(Xe)
        if self.n_needs == 0 or n == 0:
            return [[] for _ in range(n)]
        if self._topic_cols:
            shares = _nan_to_zero(Xe[:, self._topic_cols])
            order = np.argsort(-shares, axis=1, kind="stable")[:, : self.n_needs]
            topics = self._topics
            return [[topics[j] for j in order[i] if shares[i, j] > 0.0] for i in range(n)]
        if self._top_topic_col is not None:
            col = self._top_topic_col
            return [[v] if (v := self.value_of(Xe, i, col)) is not None else [] for i in range(n)]
        return [[] for _ in range(n)]

    # -- next-best action -------------------------------------------------------------------------
    def _plan(self, action: CounterfactualAction) -> _ActionPlan:
        t = action.activity_type
        idx = self._index
        own = [idx[f"n_{t}_{w}d"] for w in self._windows if f"n_{t}_{w}d" in idx]
        if not own and f"days_since_{t}" not in idx:
            raise ValueError(
                f"next-best action '{action.name}': the model has no features for activity type '{t}' "
                f"(expected n_{t}_<w>d / days_since_{t}); it was trained on another data contract"
            )
        add = own + [idx[f"n_activities_{w}d"] for w in self._windows if f"n_activities_{w}d" in idx]
        if "n_activities_total" in idx:
            add.append(idx["n_activities_total"])
        zero = [idx[c] for c in (f"days_since_{t}", "days_since_activity") if c in idx]
        topic: int | None = None
        if action.topic is not None:
            if action.topic not in self._topics:
                raise ValueError(
                    f"next-best action '{action.name}': the model has no topic_share_{action.topic} feature"
                )
            topic = self._topics.index(action.topic)
        return _ActionPlan(add=np.array(add, dtype=np.intp), zero=np.array(zero, dtype=np.intp), topic=topic)

    def _action_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per action (rows) and feature (columns): the count added, where it is added, where set to 0;
        and each action's count. Built once: every counterfactual matrix is then a few array operations."""
        k, f = len(self.actions), len(self.feature_names)
        added = np.zeros((k, f))
        adds = np.zeros((k, f), dtype=bool)
        zeros = np.zeros((k, f), dtype=bool)
        for a, (action, plan) in enumerate(zip(self.actions, self._plans, strict=True)):
            adds[a, plan.add] = True
            added[a, plan.add] = float(action.count)
            zeros[a, plan.zero] = True
        counts = np.array([float(a.count) for a in self.actions])
        return added, adds, zeros, counts

    def _apply_topic(self, X: np.ndarray, out: np.ndarray, topic: int, c: float) -> None:
        """Write into ``out`` (rows of one action) the topic features of ``X`` after ``c`` activities on ``topic``."""
        cols = np.array(self._topic_cols, dtype=np.intp)
        shares = X[:, cols]
        none_yet = np.isnan(shares).all(axis=1)
        total_col = self._index.get(f"n_activities_{self._max_window}d")
        tagged = np.zeros(len(X)) if total_col is None else _nan_to_zero(X[:, total_col])
        tagged = np.where(none_yet, 0.0, tagged)
        counts = _nan_to_zero(shares) * tagged[:, None]
        had_topic = counts[:, topic] > 0
        counts[:, topic] += c
        new_shares = counts / (tagged + c)[:, None]
        out[:, cols] = new_shares
        if "n_topics" in self._index:
            col = self._index["n_topics"]
            out[:, col] = _nan_to_zero(X[:, col]) + np.where(had_topic, 0.0, 1.0)
        if self._top_topic_col is not None:
            best = np.argmax(new_shares, axis=1)  # first maximum = earlier topic in the contract on ties
            codes = self.model.encoder.category_codes_.get("top_topic", {})
            lookup = np.array([codes.get(t, np.nan) for t in self._topics], dtype=np.float64)
            out[:, self._top_topic_col] = lookup[best]

    def counterfactual_matrix(self, Xe: np.ndarray) -> np.ndarray:
        """Rows x actions stacked: row ``i * n_actions + a`` is row ``i`` after action ``a``.

        All actions at once (see the module docstring for what an action changes): the trend is recomputed
        from the row's current counts, topic shares re-weighted, counts incremented and recencies zeroed.
        """
        n, f = Xe.shape
        k = len(self.actions)
        added, adds, zeros, counts = self._arrays
        stacked = np.repeat(Xe[:, None, :], k, axis=1)  # (n, k, f), a copy
        idx = self._index
        trend_name = f"trend_{self.model.spec.trend_window_days}d"
        recent_name = f"n_activities_{self.model.spec.trend_window_days}d"
        if k and trend_name in idx and recent_name in idx:
            # Recover p from t = (r - p) / (r + p + 1) before r changes, then recompute with r + c.
            t_col, r_col = idx[trend_name], idx[recent_name]
            r = _nan_to_zero(Xe[:, r_col])[:, None]
            t = Xe[:, t_col][:, None]
            p = np.where(np.isnan(t), 0.0, np.maximum(np.rint((r - t * (r + 1.0)) / (1.0 + t)), 0.0))
            stacked[:, :, t_col] = (r + counts - p) / (r + counts + p + 1.0)
        for a, (action, plan) in enumerate(zip(self.actions, self._plans, strict=True)):
            if plan.topic is not None:
                self._apply_topic(Xe, stacked[:, a, :], plan.topic, float(action.count))
        stacked = np.where(adds, _nan_to_zero(stacked) + added, stacked)
        stacked[:, zeros] = 0.0
        return stacked.reshape(n * k, f)

    def readiness_gains(self, Xe: np.ndarray, readiness: np.ndarray | None = None) -> np.ndarray:
        """Readiness after each action minus readiness now, shape (n, n_actions); one booster call."""
        n, k = len(Xe), len(self.actions)
        if k == 0 or n == 0:
            return np.zeros((n, k))
        model = self.model
        base = model.calibration(model.margin_from_encoded(Xe)) if readiness is None else np.asarray(readiness)
        after = model.calibration(model.margin_from_encoded(self.counterfactual_matrix(Xe))).reshape(n, k)
        return after - base[:, None]

    def next_best_actions_from_encoded(
        self, Xe: np.ndarray, readiness: np.ndarray | None = None
    ) -> list[dict[str, Any] | None]:
        """Per row, the action with the largest estimated effect for leads at its stage (module docstring).

        ``None`` for every row when no action is configured; otherwise a dict whose ``action`` is ``None``
        when no action has evidence of an effect (or the model carries no effect estimates).
        """
        from models.explain.effects import ActionEffects

        n = len(Xe)
        if not self.actions or n == 0:
            return [None] * n
        table = getattr(self.model, "effects", None)
        effects = ActionEffects(table if table is not None else _EMPTY_EFFECTS)
        candidates = [(a.name, a.label, a.activity_type) for a in self.actions]
        stages: list[Any] = (
            [self.value_of(Xe, i, self._stage_col) for i in range(n)] if self._stage_col is not None else [None] * n
        )
        cache: dict[Any, dict[str, Any]] = {}
        out: list[dict[str, Any] | None] = []
        for stage in stages:
            if stage not in cache:
                cache[stage] = effects.recommend(stage, candidates)
            out.append(dict(cache[stage]))
        return out

    def counterfactual_actions_from_encoded(
        self, Xe: np.ndarray, readiness: np.ndarray | None = None
    ) -> list[dict[str, Any] | None]:
        """The model's what-if: the action with the largest readiness gain per row (``None`` when none
        raises readiness). Correlational, not a recommendation (module docstring)."""
        n = len(Xe)
        if not self.actions or n == 0:
            return [None] * n
        gains = self.readiness_gains(Xe, readiness)
        best = np.argmax(gains, axis=1)  # first maximum: the earlier configured action on ties
        out: list[dict[str, Any] | None] = []
        for i in range(n):
            gain = float(gains[i, best[i]])
            if gain <= 0.0:
                out.append(None)
                continue
            action = self.actions[int(best[i])]
            out.append({"action": action.name, "label": action.label, "readiness_gain": gain})
        return out

    # -- everything -------------------------------------------------------------------------------
    def explain_encoded(self, Xe: np.ndarray, readiness: np.ndarray | None = None) -> Explanations:
        """Reasons, needs and next-best action for every row of ``Xe``."""
        return Explanations(
            reasons=self.reasons_from_encoded(Xe),
            needs=self.needs_from_encoded(Xe),
            next_best_action=self.next_best_actions_from_encoded(Xe, readiness),
        )
