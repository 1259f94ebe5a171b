"""Reading the export files: CSV/Parquet sources as text, joined columns, times, numbers and value maps."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.mapping.schema import MappingConfig, MappingError, SourceConfig, TimeConfig
from features.parsing import NUMERIC_NA, STR_DTYPE, TIME_UNIT, as_str, localize, parse_time_text, show_value
from features.quarantine import RowProblems

if TYPE_CHECKING:
    pass


# ============================================================================================
# Reading the export
# ============================================================================================
@dataclass
class Source:
    name: str
    path: Path
    frame: pd.DataFrame
    config: SourceConfig


def read_source(
    name: str, config: SourceConfig, base: Path, mapping_path: Path, missing: Sequence[str], nrows: int | None
) -> Source:
    path = Path(config.path).expanduser()
    path = path if path.is_absolute() else base / path
    where = f"{mapping_path}: sources.{name}.path"
    if not path.is_file():
        raise MappingError(f"{where}: file {path} does not exist (relative paths are read from the source directory)")
    kind = config.format or ("parquet" if path.suffix.lower() == ".parquet" else "csv")
    if kind == "csv":
        frame = _read_csv(path, config, name, mapping_path, nrows)
    else:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise MappingError(f"{path}: cannot be read as Parquet (source '{name}' of {mapping_path}): {exc}") from exc
        frame = _parquet_as_text(frame.head(nrows) if nrows is not None else frame)
    for column, table in config.replace.items():
        if column not in frame.columns:
            raise MappingError(
                f"{mapping_path}: sources.{name}.replace: column '{column}' is not in {path.name} "
                f"(columns: {list(frame.columns)})"
            )
        frame[column] = translate(frame[column], table)[0]
    for column in frame.columns:
        text = frame[column]
        blank = text.str.strip() == ""
        drop = blank.to_numpy(dtype=bool, na_value=False).copy()
        if missing:
            drop |= text.isin(missing).to_numpy(dtype=bool)
        if drop.any():
            frame[column] = text.where(~drop)
    return Source(name=name, path=path, frame=frame.reset_index(drop=True), config=config)


def _read_csv(path: Path, config: SourceConfig, name: str, mapping_path: Path, nrows: int | None) -> pd.DataFrame:
    encoding = "utf-8-sig" if config.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else config.encoding
    try:
        with path.open(encoding=encoding, newline="") as handle:
            header = next(csv.reader(handle, delimiter=config.delimiter, quotechar=config.quotechar), [])
        duplicated = sorted(n for n, c in Counter(header).items() if c > 1)
        if duplicated:
            raise MappingError(f"{path}: duplicate column name(s) in the header: {duplicated}")
        frame = pd.read_csv(
            path,
            sep=config.delimiter,
            quotechar=config.quotechar,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            nrows=nrows,
        )
    except MappingError:
        raise
    except (UnicodeDecodeError, LookupError) as exc:
        raise MappingError(
            f"{path}: cannot be decoded as {config.encoding} (set sources.{name}.encoding in {mapping_path}): {exc}"
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise MappingError(
            f"{path}: cannot be read as CSV with delimiter {config.delimiter!r} (source '{name}' of {mapping_path}): "
            f"{exc}"
        ) from exc
    if len(header) == 1:
        likely = [d for d in (";", ",", "\t", "|") if d != config.delimiter and d in header[0]]
        if likely:
            raise MappingError(
                f"{path}: read a single column {header[0][:60]!r} with delimiter {config.delimiter!r}; the file looks "
                f"delimited by {likely[0]!r}: set sources.{name}.delimiter in {mapping_path}"
            )
    if len(header) != len(frame.columns) or [str(c) for c in frame.columns] != header:
        raise MappingError(
            f"{path}: the header has {len(header)} columns but pandas read {len(frame.columns)}; check "
            f"sources.{name}.delimiter ({config.delimiter!r}) and quotechar in {mapping_path}"
        )
    return frame.astype(STR_DTYPE)


def _parquet_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet columns as the text a CSV export would hold (times in ISO 8601 with their offset)."""
    out = {}
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            text = pd.Series(series.map(lambda t: t.isoformat() if t is not pd.NaT else None), dtype=STR_DTYPE)
            out[str(column)] = text
        else:
            out[str(column)] = as_str(series)
    return pd.DataFrame(out)


def translate(text: pd.Series, table: dict[str, str | None]) -> tuple[pd.Series, np.ndarray]:
    """Apply a value map: mapped values replaced (None -> missing), others unchanged; mask of unmapped values."""
    if not table:
        return text, text.notna().to_numpy(dtype=bool)
    known = text.isin(list(table)).to_numpy(dtype=bool)
    mapped = text.map(table).astype(STR_DTYPE)
    out = text.where(~known, mapped)
    return out.astype(STR_DTYPE), text.notna().to_numpy(dtype=bool) & ~known


# ============================================================================================
# Column references
# ============================================================================================
class Columns:
    """The lead rows (lead source + joined sources) and the other sources, with column resolution."""

    def __init__(self, mapping: MappingConfig, sources: dict[str, Source], mapping_path: Path) -> None:
        self.mapping = mapping
        self.sources = sources
        self.path = mapping_path
        self.lead_sources = mapping.lead_sources()
        self.errors: list[str] = []
        self.used: dict[str, set[str]] = {name: set() for name in sources}
        self.features: dict[tuple[str, str], str] = {}  # (source, column) -> where it is used as a feature
        self.indexers: dict[str, np.ndarray] = {}  # joined source -> row in it for each lead row (-1: none)

    def columns_of(self, source: str) -> list[str]:
        return [str(c) for c in self.sources[source].frame.columns]

    def _missing(self, where: str, column: str, sources: Sequence[str]) -> None:
        listing = "; ".join(f"'{s}' ({self.sources[s].path.name}): {self.columns_of(s)}" for s in sources)
        self.errors.append(f"{where}: column '{column}' is not in {listing}")

    def lead_column(self, column: str, source: str | None, where: str, *, feature: bool = False) -> str | None:
        """Resolve a column of the lead rows; returns its source (None after recording an error)."""
        if source is not None:
            if source not in self.lead_sources:
                self.errors.append(
                    f"{where}: source '{source}' is not part of the lead rows ({self.lead_sources}); "
                    "join it under joins first"
                )
                return None
            candidates = [source] if column in self.columns_of(source) else []
        else:
            candidates = [s for s in self.lead_sources if column in self.columns_of(s)]
            if len(candidates) > 1:
                # A joined source's key repeats the lead rows' key (equal wherever it matched): the left side
                # is the one that has a value for every lead.
                right_keys = {j.source: j.right_key for j in self.mapping.joins}
                candidates = [s for s in candidates if right_keys.get(s) != column] or candidates
        if not candidates:
            self._missing(where, column, [source] if source else self.lead_sources)
            return None
        if len(candidates) > 1:
            self.errors.append(
                f"{where}: column '{column}' is in several lead sources {candidates}; say which with source:"
            )
            return None
        self.use(candidates[0], column, where if feature else None)
        return candidates[0]

    def join_key(self, column: str, index: int, where: str) -> str | None:
        """The source of join ``index``'s left key: the lead source, else the earliest join before it that has it."""
        candidates = self.lead_sources[: index + 1]
        for source in candidates:
            if column in self.columns_of(source):
                self.use(source, column, None)
                return source
        self._missing(where, column, candidates)
        return None

    def source_column(self, source: str, column: str, where: str, *, feature: bool = False) -> bool:
        if column not in self.columns_of(source):
            self._missing(where, column, [source])
            return False
        self.use(source, column, where if feature else None)
        return True

    def use(self, source: str, column: str, feature_where: str | None) -> None:
        self.used[source].add(column)
        if feature_where is not None:
            self.features[(source, column)] = feature_where

    def raise_if_errors(self) -> None:
        if self.errors:
            lines = "\n".join(f"  - {e}" for e in self.errors)
            raise MappingError(f"{self.path}: the mapping does not fit the export:\n{lines}")


# ============================================================================================
# Times, numbers and problems
# ============================================================================================
@dataclass
class _ParsedTimes:
    values: np.ndarray  # datetime64[us], UTC; NaT where missing or unusable
    missing: np.ndarray


def parse_mapped_times(
    text: pd.Series,
    fmt: str | None,
    tz: str,
    label: str,
    problems: RowProblems,
    *,
    file: Path,
) -> _ParsedTimes:
    """Parse an export time column to UTC, recording unusable values in ``problems`` (with the original text)."""
    n = len(text)
    present = text.notna().to_numpy(dtype=bool)
    if fmt is not None:
        aware_format = "%z" in fmt or "%Z" in fmt
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=aware_format)
        if aware_format:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        values = np.asarray(parsed.dt.as_unit(TIME_UNIT).array, dtype=f"datetime64[{TIME_UNIT}]")
        aware = np.full(n, aware_format)
    else:
        values, aware = parse_time_text(text.astype(STR_DTYPE), present)
    parsed_ok = ~np.isnat(values)
    aware_rows = np.flatnonzero(parsed_ok & aware)
    naive_rows = np.flatnonzero(parsed_ok & ~aware)
    if aware_rows.size and naive_rows.size:
        raise MappingError(
            f"{file}: column {label} mixes times with a time-zone offset (first at row {aware_rows[0] + 1}: "
            f"{show_value(text.iloc[aware_rows[0]])}) and without one (first at row {naive_rows[0] + 1}: "
            f"{show_value(text.iloc[naive_rows[0]])}); one of the two readings would be wrong"
        )
    expected = f" (expected format {fmt})" if fmt else ""
    problems.add_per_value(
        f"invalid_timestamp:{label}",
        present & ~parsed_ok,
        text,
        lambda v: f"{label} {show_value(v)} is not a valid timestamp{expected}",
    )
    if naive_rows.size:
        values, nonexistent, ambiguous = localize(values, tz)
        problems.add_per_value(
            f"nonexistent_local_time:{label}",
            nonexistent,
            text,
            lambda v: f"{label} {show_value(v)} does not exist in time zone {tz} (skipped by a daylight-saving change)",
        )
        problems.add_per_value(
            f"ambiguous_local_time:{label}",
            ambiguous,
            text,
            lambda v: f"{label} {show_value(v)} is ambiguous in time zone {tz} (repeated by a daylight-saving change)",
        )
        values = values.copy()
        values[nonexistent | ambiguous] = np.datetime64("NaT", TIME_UNIT)
    return _ParsedTimes(values=values, missing=~present)


def fixed_time(config: TimeConfig, tz: str, where: str) -> np.datetime64:
    stamp = pd.Timestamp(str(config.fixed))
    if stamp.tzinfo is None:
        try:
            stamp = stamp.tz_localize(tz, ambiguous="raise", nonexistent="raise")
        except (ValueError, TypeError) as exc:  # pytz-style errors subclass ValueError
            raise MappingError(f"{where}: fixed time {config.fixed!r} does not exist once in time zone {tz}") from exc
    return stamp.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT).to_datetime64()


def parse_mapped_numbers(text: pd.Series, label: str, problems: RowProblems) -> np.ndarray:
    """Float64 values; spelled-out missing values (NaN, NA, null, ...) are missing, other non-numbers rejected."""
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    present = text.notna().to_numpy(dtype=bool)
    unparsed = present & np.isnan(values)
    if unparsed.any():
        spelled = text.str.strip().str.lower().isin(NUMERIC_NA).to_numpy(dtype=bool, na_value=False)
        problems.add_per_value(
            f"invalid_number:{label}", unparsed & ~spelled, text, lambda v: f"{label} {show_value(v)} is not a number"
        )
    problems.add_per_value(
        f"not_finite_number:{label}",
        np.isinf(values),
        text,
        lambda v: f"{label} {show_value(v)} is not a finite number",
    )
    return np.where(np.isinf(values), np.nan, values)


def column_label(source: str, column: str) -> str:
    return f"{source}.{column}"
