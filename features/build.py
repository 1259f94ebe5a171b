"""Point-in-time features and labels: one row per (lead, as_of) for the leads open at ``as_of``.

Everything here is defined so that a feature computed at ``as_of`` can only see what was recorded
strictly before ``as_of``: the same row comes out whether the data ends just before ``as_of`` or runs
on for years (the property tests check exactly that).

Rows
----
A lead is **open** at ``as_of`` iff ``created_at < as_of`` and its latest stage entry with
``entered_at <= as_of`` is not terminal (``contract.stages.terminal``); a lead with no stage entry yet is
open. This handles re-opened leads (closed, then a later non-terminal entry). A lead that converts or
closes exactly at ``as_of`` is closed. Entries at the same instant are ordered by the contract's stage
order (the later stage counts as the latest). Rows are sorted by (``as_of``, ``lead_id``).

Features (only rows with time < ``as_of``)
-----------------------------------------
Windows ``w`` are ``config.windows_days``; ``W`` is the largest; ``k = config.trend_window_days``. A
window of ``w`` days is ``[as_of - w days, as_of)``.

- ``lead_age_days``: days from ``created_at`` to ``as_of``.
- ``stage`` (categorical, categories = ``contract.stages.order``): the latest stage entered strictly
  before ``as_of``; the first stage of the contract order if none. ``days_in_stage``: days since that
  entry (since ``created_at`` when there is none).
- Per activity type ``T`` of ``contract.activity_types``: ``n_{T}_{w}d`` = activities of type ``T`` in
  the ``w``-day window; ``days_since_{T}`` = days since the latest one (NaN if none yet).
- Totals: ``n_activities_{w}d``; ``days_since_activity`` (NaN if none); ``n_activities_total`` (all
  history); ``value_sum_{W}d`` = sum of ``value`` in the ``W``-day window (missing values count as 0).
- ``trend_{k}d`` = (r - p) / (r + p + 1) where r = activities in ``[as_of - k, as_of)`` and p = activities
  in ``[as_of - 2k, as_of - k)``: in (-1, 1), positive when engagement is rising.
- Distinct values over all history: ``n_channels``, ``n_campaigns``, ``n_topics`` (missing values and
  missing optional columns count as none).
- Topic interest (the prospect's "needs"), over topic-tagged activities in the ``W``-day window:
  ``topic_share_{topic}`` for each ``contract.topics`` entry = share of those activities carrying that
  topic (NaN when there are none); ``top_topic`` (categorical, categories = ``contract.topics``) = the
  topic with the largest share, ties to the earlier topic in the contract, NA when there are none.
- Static lead attributes from ``contract.attributes``: categorical ones as ``str`` (values are open-ended,
  so no category set is fixed here), numeric ones as numbers.

Feature names depend only on the contract and the config (:func:`feature_names`), never on which values
occur in the data. Numeric features are ``float32``.

Labels
------
``days_to_conversion`` = days from ``as_of`` to the first entry into ``contract.stages.converted`` with
``entered_at > as_of`` (float64, NaN if none in the data). ``converted`` = 1 if that is within
``(as_of, as_of + horizon_days]`` else 0 (int8): it only depends on stage entries in that window.
``observed_days`` = days from ``as_of`` to the end of the data (``history.span[1]``); a row whose
``observed_days < horizon_days`` has a censored label.

Time resolution
---------------
``as_of`` must be whole seconds. Activity times are used at one-second resolution (floored), which keeps
every ``< as_of`` comparison exact; only recencies can be off by under a second. Stage and creation
times are compared exactly.

Implementation
--------------
Leads are integer-coded in ``lead_id`` order and times are int64 seconds. Each event family is one
sorted int64 array ``(time - origin) << bits | group`` (group = lead x activity type, lead x topic, or
lead), i.e. ordered by time, then group. Everything before ``as_of`` is then a prefix found by one
``np.searchsorted``, a window is a slice, and per-(lead, type) window counts are ``np.bincount`` over
the slices between consecutive window edges. Totals, latest times and distinct counts (from each
(lead, value) pair's first occurrence) are running arrays updated with only the events since the
previous ``as_of``. Stage entries (few) are indexed per lead and looked up with ``np.searchsorted``.
Python loops run only over the as-of dates, the window edges and the activity types; the output is
allocated once. Value sums add each lead's values in (time, input) order, so a sum never depends on
other leads or on later rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.contract import Contract
from features.history import ProspectHistory
from features.spec import ID_COLUMNS, LABEL_COLUMNS, FeatureSpec

SECONDS_PER_DAY = 86_400
FEATURE_DTYPE = np.float32
_UNITS_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
# Optional activity columns whose distinct values per lead are counted, and the feature names.
_DISTINCT = (("channel", "n_channels"), ("campaign_id", "n_campaigns"), ("topic", "n_topics"))


# -- names ---------------------------------------------------------------------------------------


def _named_features(contract: Contract, config: FeatureConfig) -> list[tuple[str, str, str]]:
    """(name, kind, origin) for every feature, in output order; origin explains where a name comes from."""
    windows = config.windows_days
    max_w = windows[-1]
    k = config.trend_window_days
    out: list[tuple[str, str, str]] = [("stage", "categorical", "the current stage")]
    if contract.topics:
        out.append(("top_topic", "categorical", "the top topic"))
    out += [(a, "categorical", f"attribute '{a}'") for a in contract.categorical_attributes]
    out += [("lead_age_days", "numeric", "lead age"), ("days_in_stage", "numeric", "days in stage")]
    for t in contract.activity_types:
        origin = f"activity type '{t}'"
        out += [(f"n_{t}_{w}d", "numeric", origin) for w in windows]
        out.append((f"days_since_{t}", "numeric", origin))
    out += [(f"n_activities_{w}d", "numeric", "activity totals") for w in windows]
    out += [
        ("days_since_activity", "numeric", "activity totals"),
        ("n_activities_total", "numeric", "activity totals"),
        (f"value_sum_{max_w}d", "numeric", "activity totals"),
        (f"trend_{k}d", "numeric", "the engagement trend"),
    ]
    out += [(name, "numeric", f"distinct {col} values") for col, name in _DISTINCT]
    out += [(f"topic_share_{t}", "numeric", f"topic '{t}'") for t in contract.topics]
    out += [(a, "numeric", f"attribute '{a}'") for a in contract.numeric_attributes]
    return out


def feature_names(contract: Contract, config: FeatureConfig) -> tuple[list[str], list[str]]:
    """Categorical and numeric feature names, from the contract and config alone.

    Raises:
        ValueError: if two features would get the same name (e.g. an attribute called ``stage`` or an
            activity type called ``activities``) or a feature would shadow an id or label column.
    """
    named = _named_features(contract, config)
    origin: dict[str, str] = {c: "an id column" for c in ID_COLUMNS}
    origin.update({c: "a label column" for c in LABEL_COLUMNS})
    for name, _, where in named:
        if name in origin:
            raise ValueError(
                f"feature name '{name}' from {where} clashes with {origin[name]}; rename it in the data contract"
            )
        origin[name] = where
    return [n for n, kind, _ in named if kind == "categorical"], [n for n, kind, _ in named if kind == "numeric"]


def feature_spec(contract: Contract, config: FeatureConfig) -> FeatureSpec:
    """The :class:`FeatureSpec` that :func:`build_features` returns for this contract and config."""
    categorical, numeric = feature_names(contract, config)
    return FeatureSpec(
        categorical=categorical,
        numeric=numeric,
        horizon_days=config.horizon_days,
        windows_days=list(config.windows_days),
        trend_window_days=config.trend_window_days,
        contract_name=contract.name,
    )


# -- input preparation ---------------------------------------------------------------------------


def _times(series: pd.Series, what: str) -> tuple[np.ndarray, int]:
    """Int64 ticks since the epoch (UTC) and ticks per second of a datetime column."""
    dtype = series.dtype
    if not (isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M")):
        raise TypeError(f"{what} must be a datetime column (canonical dtype datetime64[UTC]), got {dtype}")
    unit = dtype.unit if isinstance(dtype, pd.DatetimeTZDtype) else np.datetime_data(dtype.str)[0]
    ticks = np.asarray(series.array.asi8, dtype=np.int64)
    if len(ticks) and (ticks == np.iinfo(np.int64).min).any():
        row = series.index[int(np.argmax(ticks == np.iinfo(np.int64).min))]
        raise ValueError(f"{what} has a missing time (row {row}); validate the history first")
    return ticks, _UNITS_PER_SECOND[unit]


def _codes(values: pd.Series, categories: Sequence[str], what: str) -> np.ndarray:
    """Positions of ``values`` in ``categories`` (-1 for missing); unknown values are an error."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    mapping = pd.Index(list(categories), dtype=object).get_indexer(pd.Index(np.asarray(uniques, dtype=object)))
    unknown = [str(u) for u, m in zip(uniques, mapping, strict=True) if m < 0]
    if unknown:
        raise ValueError(f"{what} has values not declared in the data contract: {unknown[:5]} (declared: {categories})")
    # A trailing -1 makes the missing-value sentinel (-1) map to -1.
    return np.append(mapping.astype(np.int64), -1)[codes]


def _lead_codes(values: pd.Series, lead_ids: pd.Index, what: str) -> np.ndarray:
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError(f"{what}.lead_id has missing values (row {values.index[int(np.argmax(codes < 0))]})")
    mapping = lead_ids.get_indexer(pd.Index(np.asarray(uniques, dtype=object)))
    if (mapping < 0).any():
        unknown = [str(u) for u, m in zip(uniques, mapping, strict=True) if m < 0]
        raise ValueError(f"{what}.lead_id refers to leads missing from the leads table: {unknown[:5]}")
    return mapping.astype(np.int64)[codes]


def _bits(n: int) -> int:
    """Bits needed to store the non-negative integers below ``n``."""
    return max(1, int(n - 1).bit_length())


@dataclass
class _Stream:
    """Events sorted by time, then group, packed as ``(time - origin) << bits | group``.

    Everything before a time is a prefix of the array and a time band ``[a, b)`` is a slice, so
    per-group counts over a band are one ``np.bincount`` and running totals only ever add new slices.
    """

    packed: np.ndarray
    bits: int
    origin: int
    n_groups: int
    weights: np.ndarray | None = None

    @classmethod
    def build(
        cls,
        groups: np.ndarray,
        times: np.ndarray,
        n_groups: int,
        origin: int,
        top: int,
        weights: np.ndarray | None = None,
    ) -> _Stream:
        """Index events; ``origin`` and ``top`` bound every event time and every time queried later."""
        bits = _bits(n_groups)
        if _bits(top - origin + 1) + bits > 62:
            raise ValueError("too many leads or too long a time span to index in int64; split the history")
        packed = ((times - origin) << bits) | groups
        if weights is None:
            return cls(np.sort(packed), bits, origin, n_groups)
        order = np.argsort(packed, kind="stable")
        return cls(packed[order], bits, origin, n_groups, weights[order])

    def position(self, time: int) -> int:
        """Number of events strictly before ``time`` (seconds; clipped at the origin)."""
        return int(np.searchsorted(self.packed, max(time - self.origin, 0) << self.bits))

    def groups(self, lo: int, hi: int) -> np.ndarray:
        return self.packed[lo:hi] & ((1 << self.bits) - 1)

    def relative_times(self, lo: int, hi: int) -> np.ndarray:
        return self.packed[lo:hi] >> self.bits

    def counts(self, lo: int, hi: int) -> np.ndarray:
        """Events per group in the slice ``[lo, hi)`` (sums of the weights if the stream has them)."""
        weights = None if self.weights is None else self.weights[lo:hi]
        return np.bincount(self.groups(lo, hi), weights=weights, minlength=self.n_groups)


def _first_occurrences(
    lead: np.ndarray, codes: np.ndarray, times: np.ndarray, origin: int
) -> tuple[np.ndarray, np.ndarray]:
    """Lead and first time of each distinct (lead, value) pair; ``codes`` are value codes, -1 for missing."""
    keep = codes >= 0
    if not keep.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    lead, codes, rel = lead[keep], codes[keep], times[keep] - origin
    n_values = int(codes.max()) + 1
    pair = lead * n_values + codes
    time_bits = _bits(int(rel.max()) + 1)
    uniques = None
    if _bits(int(pair.max()) + 1) + time_bits > 62:
        dense, uniques = pd.factorize(pair)
        pair = dense.astype(np.int64)
    ordered = np.sort((pair << time_bits) | rel)
    key = ordered >> time_bits
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = key[1:] != key[:-1]
    first_pair = key[first] if uniques is None else np.asarray(uniques)[key[first]]
    return first_pair // n_values, (ordered[first] & ((1 << time_bits) - 1)) + origin


@dataclass
class _StageIndex:
    """Stage entries sorted by (lead, time, contract order) for per-lead lookups by ``np.searchsorted``.

    Floor and ceiling seconds make ``< as_of`` and ``<= as_of`` exact for whole-second ``as_of``.
    """

    lead: np.ndarray
    code: np.ndarray
    ticks: np.ndarray
    per_second: int
    floor_key: np.ndarray
    ceil_key: np.ndarray
    bits: int
    origin: int
    start: np.ndarray  # first entry of each lead
    conversion_key: np.ndarray  # ceil_key of the conversion entries only
    conversion_ticks: np.ndarray

    @classmethod
    def build(
        cls,
        lead: np.ndarray,
        code: np.ndarray,
        ticks: np.ndarray,
        per_second: int,
        n_leads: int,
        span: tuple[int, int],
        converted: int,
    ) -> _StageIndex:
        """Index entries; ``span`` bounds the as-of times queried later, ``converted`` is the conversion code."""
        order = np.lexsort((code, ticks, lead))
        lead, code, ticks = lead[order], code[order], ticks[order]
        floor, ceil = ticks // per_second, -(-ticks // per_second)
        origin = min([span[0], *([int(floor.min())] if len(floor) else [])])
        top = max([span[1], *([int(ceil.max())] if len(ceil) else [])])
        bits = _bits(top - origin + 1)
        if _bits(n_leads) + bits > 62:
            raise ValueError("too many leads or too long a time span to index in int64; split the history")
        # Sorted by true time, so floor and ceiling seconds are both non-decreasing within each lead.
        ceil_key = (lead << bits) | (ceil - origin)
        is_conversion = code == converted
        return cls(
            lead=lead,
            code=code,
            ticks=ticks,
            per_second=per_second,
            floor_key=(lead << bits) | (floor - origin),
            ceil_key=ceil_key,
            bits=bits,
            origin=origin,
            start=np.searchsorted(lead, np.arange(n_leads, dtype=np.int64)),
            conversion_key=ceil_key[is_conversion],
            conversion_ticks=ticks[is_conversion],
        )

    def last_before(self, leads: np.ndarray, time: int, inclusive: bool) -> tuple[np.ndarray, np.ndarray]:
        """Index of each lead's latest entry before ``time`` (at or before if ``inclusive``) and whether it has one."""
        query = (leads << self.bits) | (time - self.origin)
        if inclusive:
            end = np.searchsorted(self.ceil_key, query, side="right")
        else:
            end = np.searchsorted(self.floor_key, query, side="left")
        has = end > self.start[leads]
        return np.where(has, end - 1, 0), has

    def first_conversion_after(self, leads: np.ndarray, time: int) -> tuple[np.ndarray, np.ndarray]:
        """Ticks of each lead's first conversion strictly after ``time`` (0 if none) and whether there is one."""
        keys = self.conversion_key
        nxt = np.searchsorted(keys, (leads << self.bits) | (time - self.origin), side="right")
        found = nxt < len(keys)
        found[found] = (keys[nxt[found]] >> self.bits) == leads[found]
        ticks = np.zeros(len(leads), dtype=np.int64)
        ticks[found] = self.conversion_ticks[nxt[found]]
        return ticks, found


def _as_of_index(as_of: Sequence[pd.Timestamp] | pd.DatetimeIndex) -> pd.DatetimeIndex:
    index = as_of if isinstance(as_of, pd.DatetimeIndex) else pd.DatetimeIndex(list(as_of))
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    if index.hasnans:
        raise ValueError("as_of contains a missing date")
    index = index.as_unit("us")
    if len(index) and (index.asi8 % 1_000_000).any():
        bad = index[(index.asi8 % 1_000_000) != 0][0]
        raise ValueError(f"as_of {bad.isoformat()} has a fraction of a second; as-of times must be whole seconds")
    if index.has_duplicates:
        raise ValueError(f"as_of has duplicate dates: {sorted({str(d) for d in index[index.duplicated()]})}")
    return index.sort_values()


# -- the build -----------------------------------------------------------------------------------


@dataclass
class _Activities:
    """The activity table as time-ordered event streams."""

    by_type: _Stream  # group = lead * n_types + type
    by_topic: _Stream  # group = lead * n_topics + topic, topic-tagged activities only
    values: _Stream | None  # group = lead, weights = value; None without values
    distinct: list[_Stream | None]  # per _DISTINCT column: first occurrences, group = lead


def _activity_streams(
    acts: pd.DataFrame, contract: Contract, lead_ids: pd.Index, earliest: int, latest: int
) -> _Activities:
    """Index the activities; ``[earliest, latest]`` (seconds) covers every time queried later."""
    n_leads = len(lead_ids)
    lead = _lead_codes(acts["lead_id"], lead_ids, "activities")
    ticks, per_second = _times(acts["occurred_at"], "activities.occurred_at")
    seconds = ticks // per_second  # floor: t < as_of  <=>  floor(t) < as_of for whole-second as_of
    del ticks
    # Window bounds before the origin clip to it, so every relative time is non-negative.
    origin = min(earliest, int(seconds.min())) if len(seconds) else earliest
    top = max(latest, int(seconds.max())) if len(seconds) else latest
    kind = _codes(acts["activity_type"], contract.activity_types, "activities.activity_type")
    if (kind < 0).any():
        row = acts.index[int(np.argmax(kind < 0))]
        raise ValueError(f"activities.activity_type is missing (row {row}); validate the history first")
    n_types, n_topics = len(contract.activity_types), len(contract.topics)
    by_type = _Stream.build(lead * n_types + kind, seconds, n_leads * n_types, origin, top)
    del kind
    topic = (
        _codes(acts["topic"], contract.topics, "activities.topic")
        if "topic" in acts.columns
        else np.full(len(acts), -1, dtype=np.int64)
    )
    tagged = topic >= 0
    by_topic = _Stream.build(
        lead[tagged] * n_topics + topic[tagged], seconds[tagged], n_leads * max(n_topics, 1), origin, top
    )
    del tagged
    values = None
    if "value" in acts.columns:
        value = acts["value"].to_numpy(dtype=np.float64, na_value=np.nan)
        # Missing and zero values add nothing to a sum, so leave them out of the stream.
        keep = np.flatnonzero(~np.isnan(value) & (value != 0))
        if len(keep):
            values = _Stream.build(lead[keep], seconds[keep], n_leads, origin, top, weights=value[keep])
    distinct: list[_Stream | None] = []
    for column, _ in _DISTINCT:
        if column not in acts.columns:
            distinct.append(None)
            continue
        codes = topic if column == "topic" else pd.factorize(acts[column], use_na_sentinel=True)[0].astype(np.int64)
        first_lead, first_time = _first_occurrences(lead, codes, seconds, origin)
        distinct.append(_Stream.build(first_lead, first_time, n_leads, origin, top))
    return _Activities(by_type, by_topic, values, distinct)


def build_features(
    history: ProspectHistory,
    as_of: Sequence[pd.Timestamp] | pd.DatetimeIndex,
    config: FeatureConfig,
    *,
    data_end: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, FeatureSpec]:
    """Build point-in-time features and labels for every lead open at each ``as_of``.

    Args:
        history: validated prospect history (canonical dtypes, see :class:`ProspectHistory`).
        as_of: snapshot times (whole seconds; naive values are UTC), e.g. from
            :func:`features.snapshots.snapshot_dates` or :func:`features.snapshots.parse_as_of`.
        config: windows, trend window and label horizon.
        data_end: the end of the data for ``observed_days`` (default ``history.span[1]``). A build over one
            partition of the leads (:mod:`features.partitioned`) passes the end of the whole data set, so its
            rows equal those of the whole history; nothing else in a row depends on other leads.

    Returns:
        The feature table (``lead_id``, ``as_of``, features, ``converted``, ``days_to_conversion``,
        ``observed_days``; sorted by ``as_of`` then ``lead_id``) and its :class:`FeatureSpec`.

    Raises:
        ValueError: if the history breaks its invariants (unknown leads, types, topics or stages, missing
            times) or the as-of dates are invalid.

    A single-snapshot contract (an export with only a final outcome) has no history to replay: the
    open leads at ``as_of`` are those created by then whose outcome is not known yet, with their
    static features (see :mod:`features.single_snapshot`); this is what scoring such data needs.
    """
    contract = history.contract
    dates = _as_of_index(as_of)
    if contract.mode == "single_snapshot":
        return _open_single_snapshot_rows(history, dates, config)
    spec = feature_spec(contract, config)
    as_of_sec = dates.asi8 // 1_000_000
    windows = config.windows_days
    max_w = windows[-1]
    k = config.trend_window_days
    n_types, n_topics = len(contract.activity_types), len(contract.topics)
    topics = contract.topics
    stages = contract.stages

    # Leads, coded 0..L-1 in lead_id order so that rows come out sorted by lead_id.
    leads = history.leads
    if leads["lead_id"].isna().any() or not leads["lead_id"].is_unique:
        raise ValueError("leads.lead_id must be unique and present; validate the history first")
    leads = leads.sort_values("lead_id", ignore_index=True)
    lead_ids = pd.Index(np.asarray(leads["lead_id"], dtype=object))
    n_leads = len(leads)
    created, created_per_s = _times(leads["created_at"], "leads.created_at")

    first_date = int(as_of_sec.min()) if len(dates) else 0
    last_date = int(as_of_sec.max()) if len(dates) else 0
    lookback = max(max_w, 2 * k) * SECONDS_PER_DAY
    acts = _activity_streams(history.activities, contract, lead_ids, first_date - lookback, last_date)

    sh = history.stage_history
    s_ticks, s_per_s = _times(sh["entered_at"], "stage_history.entered_at")
    s_code = _codes(sh["stage"], stages.order, "stage_history.stage")
    if (s_code < 0).any():
        row = sh.index[int(np.argmax(s_code < 0))]
        raise ValueError(f"stage_history.stage is missing (row {row}); validate the history first")
    stage_index = _StageIndex.build(
        _lead_codes(sh["lead_id"], lead_ids, "stage_history"),
        s_code,
        s_ticks,
        s_per_s,
        n_leads,
        (first_date, last_date),
        stages.order.index(stages.converted),
    )
    terminal = np.isin(np.arange(len(stages.order)), [stages.order.index(s) for s in stages.terminal])

    # Which leads are open at each as_of: decides the row count so the output is allocated once.
    all_leads = np.arange(n_leads, dtype=np.int64)
    open_leads: list[np.ndarray] = []
    for when in as_of_sec:
        last, has = stage_index.last_before(all_leads, int(when), inclusive=True)
        closed = has & terminal[stage_index.code[last]] if len(stage_index.code) else np.zeros(n_leads, dtype=bool)
        open_leads.append(np.flatnonzero((created < when * created_per_s) & ~closed))
    counts = np.array([len(o) for o in open_leads], dtype=np.int64)
    n_rows = int(counts.sum())

    categorical, numeric = spec.categorical, spec.numeric
    computed = [name for name in numeric if name not in contract.numeric_attributes]
    col = {name: i for i, name in enumerate(computed)}
    mat = np.empty((len(computed), n_rows), dtype=FEATURE_DTYPE)
    stage_codes = np.zeros(n_rows, dtype=np.int64)
    top_topic = np.full(n_rows, -1, dtype=np.int64)
    converted = np.zeros(n_rows, dtype=np.int8)
    days_to_conv = np.full(n_rows, np.nan, dtype=np.float64)
    observed = np.empty(n_rows, dtype=np.float64)
    data_end = pd.Timestamp(history.span[1] if data_end is None else data_end)

    # Count bands between consecutive offsets (days before as_of); every window is a union of bands.
    offsets = sorted({0, *windows, k, 2 * k})
    # Running state over the as-of dates (ascending): totals and latest time per (lead, type), and
    # distinct values seen per lead. Each date only adds the events since the previous date.
    by_type = acts.by_type
    type_total = np.zeros(n_leads * n_types, dtype=np.int64)
    type_last = np.full(n_leads * n_types, -1, dtype=np.int64)  # relative seconds, -1 = never
    type_seen = 0
    distinct_total = [np.zeros(n_leads, dtype=np.int64) for _ in _DISTINCT]
    distinct_seen = [0 for _ in _DISTINCT]

    row = 0
    for date, t_raw, lead in zip(dates, as_of_sec, open_leads, strict=True):
        t = int(t_raw)
        rows = slice(row, row + len(lead))
        row += len(lead)

        now = by_type.position(t)
        new_groups = by_type.groups(type_seen, now)
        type_total += np.bincount(new_groups, minlength=by_type.n_groups)
        np.maximum.at(type_last, new_groups, by_type.relative_times(type_seen, now))
        type_seen = now
        for j, stream in enumerate(acts.distinct):
            if stream is not None:
                seen = stream.position(t)
                distinct_total[j] += np.bincount(stream.groups(distinct_seen[j], seen), minlength=n_leads)
                distinct_seen[j] = seen
        if not len(lead):
            continue

        age = (t * created_per_s - created[lead]) / created_per_s / SECONDS_PER_DAY
        mat[col["lead_age_days"], rows] = age

        # Current stage: the latest entry strictly before as_of.
        last, has = stage_index.last_before(lead, t, inclusive=False)
        if len(stage_index.code):
            stage_codes[rows] = np.where(has, stage_index.code[last], 0)
            since = (t * s_per_s - stage_index.ticks[last]) / s_per_s / SECONDS_PER_DAY
            mat[col["days_in_stage"], rows] = np.where(has, since, age)
        else:
            mat[col["days_in_stage"], rows] = age

        # Windowed counts per (lead, type): rows = open leads, columns = types.
        position = {d: by_type.position(t - d * SECONDS_PER_DAY) for d in offsets}
        within = {0: np.zeros((len(lead), n_types), dtype=np.int64)}
        for near, far in itertools.pairwise(offsets):
            band = by_type.counts(position[far], position[near]).reshape(n_leads, n_types)[lead]
            within[far] = within[near] + band
        for w in windows:
            for j, name in enumerate(contract.activity_types):
                mat[col[f"n_{name}_{w}d"], rows] = within[w][:, j]
            mat[col[f"n_activities_{w}d"], rows] = within[w].sum(axis=1)
        recent = within[k].sum(axis=1)
        prior = within[2 * k].sum(axis=1) - recent
        mat[col[f"trend_{k}d"], rows] = (recent - prior) / (recent + prior + 1)

        last_rel = type_last.reshape(n_leads, n_types)[lead]
        t_rel = t - by_type.origin
        days_since = np.where(last_rel >= 0, (t_rel - last_rel) / SECONDS_PER_DAY, np.nan)
        for j, name in enumerate(contract.activity_types):
            mat[col[f"days_since_{name}"], rows] = days_since[:, j]
        latest = last_rel.max(axis=1)
        mat[col["days_since_activity"], rows] = np.where(latest >= 0, (t_rel - latest) / SECONDS_PER_DAY, np.nan)
        mat[col["n_activities_total"], rows] = type_total.reshape(n_leads, n_types)[lead].sum(axis=1)

        value_col = col[f"value_sum_{max_w}d"]
        if acts.values is None:
            mat[value_col, rows] = 0.0
        else:
            lo, hi = acts.values.position(t - max_w * SECONDS_PER_DAY), acts.values.position(t)
            mat[value_col, rows] = acts.values.counts(lo, hi)[lead]

        for (_, name), total in zip(_DISTINCT, distinct_total, strict=True):
            mat[col[name], rows] = total[lead]

        # Topic interest over the largest window.
        if n_topics:
            by_topic = acts.by_topic
            lo, hi = by_topic.position(t - max_w * SECONDS_PER_DAY), by_topic.position(t)
            tcounts = by_topic.counts(lo, hi).reshape(n_leads, n_topics)[lead]
            tagged = tcounts.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                shares = tcounts / tagged[:, None]
            for j, name in enumerate(topics):
                mat[col[f"topic_share_{name}"], rows] = shares[:, j]
            top_topic[rows] = np.where(tagged > 0, tcounts.argmax(axis=1), -1)

        # Labels: the first conversion after as_of (the label window is (as_of, as_of + horizon]).
        conversion, found = stage_index.first_conversion_after(lead, t)
        delta = np.where(found, conversion - t * s_per_s, 0)
        days_to_conv[rows] = np.where(found, delta / s_per_s / SECONDS_PER_DAY, np.nan)
        converted[rows] = found & (delta <= config.horizon_days * SECONDS_PER_DAY * s_per_s)
        observed[rows] = (data_end - date) / pd.Timedelta(days=1)

    row_leads = np.concatenate(open_leads) if open_leads else np.empty(0, dtype=np.int64)
    columns: dict[str, object] = {
        "lead_id": leads["lead_id"].array.take(row_leads),
        "as_of": dates.repeat(counts) if len(dates) else dates,
    }
    for name in categorical:
        if name == "stage":
            columns[name] = pd.Categorical.from_codes(stage_codes, categories=pd.Index(stages.order))
        elif name == "top_topic":
            columns[name] = pd.Categorical.from_codes(top_topic, categories=pd.Index(topics))
        else:
            columns[name] = leads[name].astype("str").array.take(row_leads)
    for name in numeric:
        if name in contract.numeric_attributes:
            columns[name] = leads[name].to_numpy(dtype=FEATURE_DTYPE, na_value=np.nan)[row_leads]
        else:
            columns[name] = mat[col[name]]
    columns["converted"] = converted
    columns["days_to_conversion"] = days_to_conv
    columns["observed_days"] = observed
    return pd.DataFrame(columns, copy=False), spec


def _open_single_snapshot_rows(
    history: ProspectHistory, dates: pd.DatetimeIndex, config: FeatureConfig
) -> tuple[pd.DataFrame, FeatureSpec]:
    """Leads of a single-snapshot data set without a known outcome, one row per ``as_of`` they exist at."""
    from features.single_snapshot import build_single_snapshot_features

    frame, spec = build_single_snapshot_features(history, config)
    # observed_days == 0 marks a lead whose outcome is not known (see features.single_snapshot)
    pending = frame[frame["observed_days"] == 0]
    parts = []
    for when in dates:
        part = pending[pending["as_of"] <= when].copy()
        part["as_of"] = when
        parts.append(part)
    out = pd.concat(parts, ignore_index=True) if parts else pending.iloc[:0].copy()
    out["as_of"] = pd.to_datetime(out["as_of"], utc=True).astype(frame["as_of"].dtype)
    return out.sort_values(["as_of", "lead_id"], kind="stable").reset_index(drop=True), spec
