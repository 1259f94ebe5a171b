"""Parsing raw table values, shared by validation and the import mapping: the canonical string and
timestamp dtypes, strings, numbers, timestamps (ISO 8601 and the other accepted forms, local times in
a time zone) and how values are shown in messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ContractError

#: Canonical string dtype (pandas' default ``str``: missing values are NaN).
STR_DTYPE = pd.StringDtype(na_value=np.nan)
#: Canonical timestamp resolution and dtype (pandas 3's default resolution).
TIME_UNIT: Final = "us"
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit=TIME_UNIT, tz="UTC")

# An offset at the end of a timestamp: Z, +HH, +HHMM or +HH:MM. Only after a time part (":" or
# "T" earlier in the value), so that the day of "2024-01-15" is not taken for an offset "-15".
_OFFSET_AT_END = r"[:Tt].*(?:[Zz]|[+-]\d\d(?::?\d\d)?)$"
_UTC_SUFFIX = r"\s*(?:UTC|GMT)$"
# Non-ISO forms tried (in order) for values ISO 8601 parsing rejected: (format, has offset).
_FALLBACK_FORMATS: tuple[tuple[str, bool], ...] = (
    ("%d.%m.%Y %H:%M:%S", False),
    ("%d.%m.%Y %H:%M", False),
    ("%d.%m.%Y", False),
    ("%a, %d %b %Y %H:%M:%S %z", True),
    ("%d %b %Y %H:%M:%S %z", True),
)
_NAT = np.datetime64("NaT", "us")
# Spellings of a missing number accepted in numeric columns (compared lower-case, stripped).
NUMERIC_NA = ("nan", "na", "n/a", "null", "none")


# --------------------------------------------------------------------------------------------
# Formatting values for messages
# --------------------------------------------------------------------------------------------
def show_value(value: Any) -> str:
    """A value as it appears in a reason: strings quoted, numbers and times plain."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "(missing)"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, pd.Timestamp):
        return f"'{value}'"
    return str(value)


def format_time(value: pd.Timestamp) -> str:
    """UTC timestamp as ISO 8601 with ``Z``; seconds only when non-zero (2024-02-03T10:00Z)."""
    value = pd.Timestamp(value)
    value = value.tz_localize("UTC") if value.tz is None else value.tz_convert("UTC")
    text = value.strftime("%Y-%m-%dT%H:%M")
    if value.second or value.microsecond or value.nanosecond:
        text += value.strftime(":%S")
        if value.microsecond or value.nanosecond:
            text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def list_names(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def as_str(raw: pd.Series) -> pd.Series:
    """Any column as canonical ``str`` (NaN for missing; blank strings count as missing).

    Parquet may deliver dictionary (categorical) columns, integer ids, or integer ids stored as
    float because of nulls; all become the same strings a CSV file would hold ("17", not "17.0").
    """
    dtype = raw.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = as_str(pd.Series(dtype.categories))
        codes = raw.cat.codes.to_numpy()
        out = pd.Series(categories.array.take(codes, allow_fill=True), index=raw.index)
    elif dtype == STR_DTYPE:
        out = raw
    elif pd.api.types.is_float_dtype(dtype):
        values = raw.to_numpy(dtype="float64", na_value=np.nan)
        present = ~np.isnan(values)
        finite = values[present]
        if np.isfinite(finite).all() and (finite == np.round(finite)).all() and (np.abs(finite) < 2**53).all():
            out = pd.Series(values, index=raw.index).astype("Int64").astype(STR_DTYPE)
        else:
            out = raw.astype(STR_DTYPE)
    else:
        out = raw.astype(STR_DTYPE)
    blank = _blank(out)
    if blank is not None:
        out = out.where(~blank)
    return out


def _blank(text: pd.Series) -> np.ndarray | None:
    """Mask of empty or whitespace-only strings, or None when there are none (the usual case)."""
    if not len(text):
        return None
    array = arrow_strings(text)
    if array is None:  # non-Arrow storage: the (slower) pandas way
        mask = ((text == "") | text.str.isspace()).to_numpy(dtype=bool)
        return mask if mask.any() else None
    found = pc.or_(pc.equal(array, ""), pc.utf8_is_space(array))
    if not pc.any(found).as_py():
        return None
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def optional_str(raw: pd.DataFrame, column: str) -> pd.Series:
    if column in raw.columns:
        return as_str(raw[column])
    return pd.Series(np.nan, index=raw.index, dtype=STR_DTYPE)


def parse_numbers(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values and a mask of present values that are not numbers."""
    dtype = raw.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return raw.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(raw), dtype=bool)
    text = as_str(raw)
    values = _arrow_floats(text)
    if values is None:
        numbers = pd.to_numeric(text, errors="coerce")
        values = pd.Series(numbers).to_numpy(dtype="float64", na_value=np.nan)
    unparsed = np.flatnonzero(text.notna().to_numpy() & np.isnan(values))
    invalid = np.zeros(len(text), dtype=bool)
    if unparsed.size:
        # Spelled-out missing values ("NaN", "NA", "null", ...) are missing, not invalid.
        spelled_na = text.iloc[unparsed].str.strip().str.lower().isin(NUMERIC_NA).to_numpy()
        invalid[unparsed[~spelled_na]] = True
    return values, invalid


def _arrow_floats(text: pd.Series) -> np.ndarray | None:
    """Fast path: Arrow's string -> float64 cast, which succeeds when every value is a plain number."""
    array = arrow_strings(text)
    if array is None:
        return None
    try:
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # some value is not a plain number: pandas coerces value by value
        return None


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------
@dataclass
class ParsedTimes:
    """A parsed timestamp column: UTC values (NaT when unusable) and why values are unusable."""

    values: np.ndarray  # datetime64[us], UTC wall clock
    missing: np.ndarray
    invalid: np.ndarray
    nonexistent: np.ndarray
    ambiguous: np.ndarray


def parse_times(raw: pd.Series, *, path: Path, column: str, tz: str) -> ParsedTimes:
    n = len(raw)
    none = np.zeros(n, dtype=bool)
    dtype = raw.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = raw.dt.tz_convert("UTC").dt.as_unit(TIME_UNIT)
        values = np.asarray(utc.array, dtype=f"datetime64[{TIME_UNIT}]")
        return ParsedTimes(values, np.isnat(values), none, none.copy(), none.copy())
    if pd.api.types.is_datetime64_dtype(dtype):
        wall = np.asarray(raw.dt.as_unit(TIME_UNIT).array, dtype=f"datetime64[{TIME_UNIT}]")
        values, nonexistent, ambiguous = localize(wall, tz)
        return ParsedTimes(values, np.isnat(wall), none, nonexistent, ambiguous)

    text = as_str(raw)
    present = text.notna().to_numpy()
    values, aware = parse_time_text(text, present)
    parsed = ~np.isnat(values)
    aware_rows = np.flatnonzero(parsed & aware)
    naive_rows = np.flatnonzero(parsed & ~aware)
    if aware_rows.size and naive_rows.size:
        first_aware, first_naive = int(aware_rows[0]), int(naive_rows[0])
        raise ContractError(
            f"{path}: column '{column}' mixes timestamps with a time-zone offset (first at row "
            f"{first_aware + 1}: {show_value(raw.iloc[first_aware])}) and without one (first at row "
            f"{first_naive + 1}: {show_value(raw.iloc[first_naive])}). Write every value with an offset or none; "
            f"values without an offset are read in the contract time zone '{tz}'."
        )
    invalid = present & ~parsed
    if naive_rows.size:
        values, nonexistent, ambiguous = localize(values, tz)
        return ParsedTimes(values, ~present, invalid, nonexistent, ambiguous)
    return ParsedTimes(values, ~present, invalid, none, none.copy())


def arrow_strings(values: pd.Series) -> Any:
    """The Arrow array behind an Arrow-backed string column, or None."""
    if not isinstance(values.dtype, pd.StringDtype) or values.dtype.storage != "pyarrow":
        return None
    return pa.array(values)


def _has_offset(text: pd.Series) -> np.ndarray:
    """Mask of values ending in a UTC offset (Z, +HH, +HHMM, +HH:MM) after a time part."""
    if not len(text):
        return np.zeros(0, dtype=bool)
    array = arrow_strings(text)
    if array is None:
        return text.str.contains(_OFFSET_AT_END, regex=True, na=False).to_numpy(dtype=bool)
    return pc.fill_null(pc.match_substring_regex(array, _OFFSET_AT_END), False).to_numpy(zero_copy_only=False)


def parse_time_text(
    text: pd.Series, present: np.ndarray, *, aware: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Parse strings into datetime64[us] values: UTC for values with an offset, wall clock otherwise.

    Returns the values (NaT where unparseable or missing) and the mask of values with an offset.
    ``aware`` overrides the pattern-based classification (used when pandas disagrees with it).
    """
    n = len(text)
    values = np.full(n, _NAT)
    reclassified = aware is not None
    aware = (_has_offset(text) & present) if aware is None else aware.copy()
    naive = present & ~aware
    if aware.any():
        rows = None if not naive.any() else np.flatnonzero(aware)
        _assign(values, rows, _iso(text if rows is None else text.iloc[rows], utc=True))
    if naive.any():
        rows = None if not aware.any() else np.flatnonzero(naive)
        subset = text if rows is None else text.iloc[rows]
        try:
            parsed = _iso(subset, utc=False)
        except ValueError:
            # pandas saw offsets the pattern did not: classify those values one by one (rare).
            if reclassified:
                raise RuntimeError(
                    "timestamps classified one by one still mix offsets (this is a bug in leadscore)"
                ) from None
            positions = np.flatnonzero(naive) if rows is None else rows
            offsets = np.array([_iso_has_offset(v) for v in text.iloc[positions]], dtype=bool)
            aware[positions[offsets]] = True
            return parse_time_text(text, present, aware=aware)
        _assign(values, rows, parsed)

    failed = np.flatnonzero(present & np.isnat(values))
    if failed.size:
        # Stripping and the non-ISO forms are tried only for values ISO 8601 parsing rejected.
        original = text.iloc[failed].reset_index(drop=True)
        stripped = original.str.strip()
        padded = (stripped != original).to_numpy(dtype=bool)
        if padded.any():
            rows = failed[padded]
            values[rows], aware[rows] = parse_time_text(
                stripped[padded].reset_index(drop=True), np.ones(rows.size, dtype=bool)
            )
        if not padded.all():
            rows = failed[~padded]
            values[rows], aware[rows] = _parse_other_forms(original[~padded].reset_index(drop=True))
    return values, aware


def _parse_other_forms(text: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Parse (stripped) strings that are not ISO 8601 with the accepted non-ISO forms."""
    values = np.full(len(text), _NAT)
    aware = np.zeros(len(text), dtype=bool)
    # "... UTC" / "... GMT": an explicit UTC designator ISO 8601 does not accept.
    utc_named = text.str.contains(_UTC_SUFFIX, regex=True, na=False).to_numpy(dtype=bool)
    if utc_named.any():
        got = _iso(text[utc_named].str.replace(_UTC_SUFFIX, "+00:00", regex=True), utc=True)
        rows = np.flatnonzero(utc_named)
        values[rows] = got
        aware[rows] = True
    for fmt, with_offset in _FALLBACK_FORMATS:
        rows = np.flatnonzero(np.isnat(values))
        if not rows.size:
            break
        values[rows] = _with_format(text.iloc[rows], fmt, utc=with_offset)
        aware[rows] = with_offset
    # Unparsed values carry no meaningful offset flag.
    aware &= ~np.isnat(values)
    return values, aware


def _iso(text: pd.Series, *, utc: bool) -> np.ndarray:
    parsed = pd.to_datetime(text, format="ISO8601", utc=utc, errors="coerce")
    if not utc and isinstance(parsed.dtype, pd.DatetimeTZDtype):
        # All values had the same offset after all; the caller re-classifies them.
        raise ValueError("offsets found in values classified as naive")
    if utc:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return np.asarray(parsed.dt.as_unit(TIME_UNIT).array, dtype=f"datetime64[{TIME_UNIT}]")


def _with_format(text: pd.Series, fmt: str, *, utc: bool) -> np.ndarray:
    parsed = pd.to_datetime(text, format=fmt, utc=utc, errors="coerce")
    if utc:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return np.asarray(parsed.dt.as_unit(TIME_UNIT).array, dtype=f"datetime64[{TIME_UNIT}]")


def _iso_has_offset(value: str) -> bool:
    parsed = pd.to_datetime(pd.Series([value]), format="ISO8601", errors="coerce")
    return isinstance(parsed.dtype, pd.DatetimeTZDtype)


def _assign(values: np.ndarray, rows: np.ndarray | None, parsed: np.ndarray) -> None:
    if rows is None:
        values[:] = parsed
    else:
        values[rows] = parsed


def localize(wall: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wall-clock times in ``tz`` -> UTC, with masks of non-existent and ambiguous local times."""
    none = np.zeros(len(wall), dtype=bool)
    if tz in {"UTC", "Etc/UTC"}:
        return wall, none, none.copy()
    index = pd.DatetimeIndex(wall)
    local = index.tz_localize(tz, ambiguous="NaT", nonexistent="NaT")
    lost = ~np.isnat(wall) & np.asarray(local.isna())
    utc = np.asarray(local.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT), dtype=f"datetime64[{TIME_UNIT}]")
    if not lost.any():
        return utc, none, none.copy()
    rows = np.flatnonzero(lost)
    # Shifting resolves only the non-existent times; what stays NaT is ambiguous.
    shifted = pd.DatetimeIndex(wall[rows]).tz_localize(tz, ambiguous="NaT", nonexistent="shift_forward")
    nonexistent = none.copy()
    ambiguous = none.copy()
    nonexistent[rows[~np.asarray(shifted.isna())]] = True
    ambiguous[rows[np.asarray(shifted.isna())]] = True
    return utc, nonexistent, ambiguous


def timestamp_series(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values).tz_localize("UTC").as_unit(TIME_UNIT), copy=False)
