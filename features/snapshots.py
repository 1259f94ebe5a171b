"""Snapshot (as-of) dates and duration parsing for the point-in-time feature build.

A *snapshot* is a moment ``as_of`` at which every open lead is described using only what was known
strictly before ``as_of`` (see :mod:`features.build`). This module decides *when* snapshots are taken.

Definitions
-----------
- **Regular snapshots** (:func:`snapshot_dates`): a grid of UTC midnights spaced ``every_days`` apart,
  anchored on the earliest lead creation. The first date is the first midnight at or after the earliest
  ``created_at`` plus ``every_days`` (the first *full* interval after the first lead appeared); dates
  continue every ``every_days`` up to and including the end of the data (``history.span[1]``). ``start``
  and ``end`` only restrict the grid, they never move it, so adding newer data keeps earlier snapshot
  dates (and therefore their rows) unchanged.
- **Explicit dates** (:func:`parse_as_of`): ISO dates or timestamps. Values without an offset are read in
  the given time zone (UTC by default; pass the contract's ``timezone``), then converted to UTC. They must
  be whole seconds, because the feature build compares event times at one-second resolution.
- **Durations** (:func:`parse_duration`): ``"90"``, ``"90d"``, ``"12w"`` (also ``day(s)``/``week(s)``),
  a positive whole number of days.

All returned indexes are ``DatetimeIndex`` with dtype ``datetime64[us, UTC]``, sorted and unique.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

import pandas as pd

from features.config import FeatureConfig
from features.history import ProspectHistory

TIME_UNIT: Literal["us"] = "us"
_DURATION = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>d|days?|w|weeks?)?\s*$", re.IGNORECASE)
_DAYS_PER_UNIT = {"d": 1, "w": 7}


def parse_duration(value: str | int) -> int:
    """Parse a duration such as ``"7d"``, ``"12w"`` or ``"90"`` (days) into a positive number of days.

    Raises:
        ValueError: if the value is not a positive whole number of days or weeks.
    """
    if isinstance(value, bool):  # bool is an int subclass; True days is a mistake, not a duration
        raise ValueError(f"duration {value!r} is not a number of days")
    if isinstance(value, int):
        days = value
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(
                f"duration {value!r} is not understood: expected a whole number of days or weeks "
                "such as '90', '90d', '7d' or '12w'"
            )
        unit = (match["unit"] or "d")[0].lower()
        days = int(match["n"]) * _DAYS_PER_UNIT[unit]
    if days <= 0:
        raise ValueError(f"duration {value!r} must be at least one day")
    return days


def _to_utc(value: str | pd.Timestamp, tz: str, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{what} {value!r} is not a date or time (expected e.g. 2024-03-01, 2024-03-01T12:00:00 or "
            "2024-03-01T12:00:00+02:00)"
        ) from exc
    if ts is pd.NaT:
        raise ValueError(f"{what} {value!r} is not a date or time")
    ts = ts.tz_localize(tz) if ts.tzinfo is None else ts
    ts = ts.tz_convert("UTC").as_unit(TIME_UNIT)
    if ts.microsecond or ts.nanosecond:
        raise ValueError(f"{what} {value!r} has a fraction of a second; as-of times must be whole seconds")
    return ts


def parse_as_of(values: Iterable[str], tz: str = "UTC") -> pd.DatetimeIndex:
    """Parse explicit as-of dates (each value may also hold a comma-separated list).

    Args:
        values: ISO dates or timestamps, e.g. from repeated ``--as-of`` options.
        tz: time zone of values written without an offset (use the contract's ``timezone``).

    Returns:
        Sorted UTC ``DatetimeIndex``.

    Raises:
        ValueError: naming the offending value if one cannot be parsed, has a fraction of a second or
            is given twice, or if no value is given.
    """
    parsed: list[pd.Timestamp] = []
    seen: dict[pd.Timestamp, str] = {}
    for raw in values:
        for part in str(raw).split(","):
            text = part.strip()
            if not text:
                continue
            ts = _to_utc(text, tz, "as-of date")
            if ts in seen:
                raise ValueError(f"as-of date {text!r} is given twice (same instant as {seen[ts]!r})")
            seen[ts] = text
            parsed.append(ts)
    if not parsed:
        raise ValueError("no as-of date given")
    return pd.DatetimeIndex(sorted(parsed)).as_unit(TIME_UNIT)


def snapshot_dates(
    history: ProspectHistory,
    every_days: int,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DatetimeIndex:
    """Regular snapshot dates over the history (see the module docstring for the exact grid).

    Args:
        history: the validated prospect history.
        every_days: spacing of the snapshots in days (> 0).
        start: keep only grid dates at or after this time (naive values are UTC).
        end: keep only grid dates at or before this time; defaults to the end of the data.

    Raises:
        ValueError: if ``every_days`` is not positive, the history has no leads, or no grid date falls in
            the requested range (e.g. the data spans less than one interval).
    """
    if len(history.leads) == 0:
        raise ValueError("cannot place snapshots: the history has no leads")
    return snapshot_grid(history.leads["created_at"].min(), history.span[1], every_days, start=start, end=end)


def snapshot_grid(
    first_created: pd.Timestamp,
    data_end: pd.Timestamp,
    every_days: int,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> pd.DatetimeIndex:
    """The grid of :func:`snapshot_dates` from the earliest lead creation and the end of the data alone.

    The partitioned build (:mod:`features.partitioned`) reduces these two instants over the partitions and
    places the same grid as the single-machine build of the whole history.
    """
    if isinstance(every_days, bool) or not isinstance(every_days, int) or every_days <= 0:
        raise ValueError(f"every_days must be a positive whole number of days, got {every_days!r}")
    first_created = pd.Timestamp(first_created).tz_convert("UTC")
    data_end = pd.Timestamp(data_end).tz_convert("UTC")
    every = pd.Timedelta(days=every_days)
    first = first_created.ceil("D") + every
    lo = first if start is None else max(first, _to_utc(start, "UTC", "snapshot start"))
    hi = data_end if end is None else min(data_end, _to_utc(end, "UTC", "snapshot end"))
    # Stay on the grid anchored at `first`, whatever `start` is.
    skip = max(0, -(-(lo - first) // every))
    lo = first + skip * every
    if lo > hi:
        raise ValueError(
            f"no {every_days}-day snapshot fits between {lo.isoformat()} and {hi.isoformat()} "
            f"(leads are created from {first_created.isoformat()}, data ends {data_end.isoformat()}); "
            "use a shorter interval or explicit as-of dates"
        )
    return pd.date_range(lo, hi, freq=every).as_unit(TIME_UNIT)


def configured_snapshot_dates(history: ProspectHistory, config: FeatureConfig) -> pd.DatetimeIndex:
    """The regular snapshot grid a modelling config asks for.

    Every ``config.snapshot_every_days`` days, restricted to ``[config.snapshot_start, config.snapshot_end]``
    when they are set (UTC dates; the grid itself never moves, see :func:`snapshot_dates`).

    Raises:
        ValueError: as :func:`snapshot_dates`, e.g. when no grid date falls in the configured range.
    """
    start, end = _configured_range(config)
    return snapshot_dates(history, config.snapshot_every_days, start=start, end=end)


def configured_snapshot_grid(
    first_created: pd.Timestamp, data_end: pd.Timestamp, config: FeatureConfig
) -> pd.DatetimeIndex:
    """:func:`configured_snapshot_dates` from the earliest creation and the end of the data (:func:`snapshot_grid`)."""
    start, end = _configured_range(config)
    return snapshot_grid(first_created, data_end, config.snapshot_every_days, start=start, end=end)


def _configured_range(config: FeatureConfig) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    start = None if config.snapshot_start is None else pd.Timestamp(config.snapshot_start)
    # The end date is inclusive: a grid date on that day (always a midnight) is kept.
    end = None if config.snapshot_end is None else pd.Timestamp(config.snapshot_end)
    return start, end
