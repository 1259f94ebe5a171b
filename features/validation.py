"""Load a prospect-history data directory and validate it against its data contract.

:func:`load_history` reads ``leads``, ``activities`` and ``stage_history`` (CSV or Parquet) and
returns the accepted rows in the canonical dtypes of :class:`~features.history.ProspectHistory`,
the rejected rows (quarantine) with the reason for each, and a report that accounts for every
row: ``rows_read == rows_accepted + rows_quarantined`` for every table.

Two kinds of problem are distinguished:

- **Whole-file problems** raise :class:`~features.contract.ContractError` with a message that
  names the file (and column/row where it applies): a missing table, missing required columns,
  columns the contract does not declare, a timestamp column mixing values with and without a
  time-zone offset, an empty leads table.
- **Row problems** quarantine the row with a readable reason (several reasons joined with
  ``"; "``): missing required values, unparseable or non-existent timestamps, timestamps in the
  future, events before their lead's creation, events of unknown or quarantined leads, unknown
  activity types, topics and stages, unparseable numbers, negative activity values, duplicate
  lead ids and duplicate events.

Timestamps without an offset are read in ``contract.timezone``; timestamps with an offset are
converted to UTC. Accepted forms are ISO 8601 (``2024-01-31``, ``2024-01-31 09:30``,
``2024-01-31T09:30:00.123+01:00``, ``...Z``, ``2024/01/31 09:30``), a trailing ``UTC``/``GMT``
(``2024-01-31 09:30:00 UTC``), day-first dotted dates (``31.01.2024 09:30``) and RFC 2822
(``Wed, 31 Jan 2024 09:30:00 +0100``). Slash dates such as ``01/02/2024`` are rejected because
day and month cannot be told apart. A local time that does not exist or occurs twice in
``contract.timezone`` (daylight-saving changes) is quarantined rather than guessed.

A value is missing when its field is empty (or blank); numeric columns also accept ``NaN``,
``NA``, ``N/A``, ``null`` and ``None`` (any case) as missing. Duplicates are judged among rows
that pass every other check, so "duplicate of row N" always points at an accepted row.

Accepted timestamps are ``datetime64[us, UTC]`` (:data:`TIMESTAMP_DTYPE`), strings are pandas'
``str`` dtype (:data:`STR_DTYPE`) and numbers ``float64``; frames keep the file's row order.

All checks are vectorised; Python-level work (building reason strings) is done only for
rejected rows, once per distinct offending value.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TABLES, Contract, ContractError
from features.history import ProspectHistory
from features.io import atomic_write_text, find_table, read_raw_table, write_table

if TYPE_CHECKING:
    from rich.table import Table

__all__ = [
    "QUARANTINE_COLUMNS",
    "REPORT_FILE",
    "STR_DTYPE",
    "TIMESTAMP_DTYPE",
    "TIME_UNIT",
    "TableReport",
    "ValidationReport",
    "ValidationResult",
    "load_history",
    "write_quarantine",
]

logger = logging.getLogger(__name__)

#: Canonical string dtype (pandas' default ``str``: missing values are NaN).
STR_DTYPE = pd.StringDtype(na_value=np.nan)
#: Canonical timestamp resolution and dtype (pandas 3's default resolution).
TIME_UNIT: Final = "us"
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit=TIME_UNIT, tz="UTC")
#: Columns added to every quarantine frame (besides the original columns).
QUARANTINE_COLUMNS = ("source_row", "reason")
REPORT_FILE = "report.json"

ACTIVITY_COLUMNS = ("lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value")
STAGE_COLUMNS = ("lead_id", "stage", "entered_at")

# Reason kinds (keys of TableReport.reasons). Kinds that can concern several columns are
# suffixed with ":<column>".
MISSING = "missing_value"
INVALID_TIMESTAMP = "invalid_timestamp"
NONEXISTENT_TIME = "nonexistent_local_time"
AMBIGUOUS_TIME = "ambiguous_local_time"
FUTURE = "future_timestamp"
INVALID_NUMBER = "invalid_number"
NOT_FINITE = "not_finite_number"
NEGATIVE = "negative_value"
DUPLICATE_LEAD_ID = "duplicate_lead_id"
DUPLICATE = "duplicate"
UNKNOWN_LEAD = "unknown_lead"
QUARANTINED_LEAD = "quarantined_lead"
BEFORE_CREATED = "before_lead_created"
UNKNOWN_ACTIVITY_TYPE = "unknown_activity_type"
UNKNOWN_TOPIC = "unknown_topic"
UNKNOWN_STAGE = "unknown_stage"

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
_NUMERIC_NA = ("nan", "na", "n/a", "null", "none")
# Up to this many rejected rows, accepted rows are assembled from slices instead of a take.
_MAX_SLICES = 1000


# --------------------------------------------------------------------------------------------
# Report and result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableReport:
    """Row accounting for one table.

    ``reasons`` counts rows per kind of problem; a row with several problems counts once for each
    of its kinds, so the counts may add up to more than ``rows_quarantined``.
    """

    table: str
    path: Path
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def __post_init__(self) -> None:
        # The accounting invariant is checked on construction, so an unbalanced report cannot exist.
        if not self.balanced:
            raise RuntimeError(
                f"{self.path}: row accounting does not balance: read {self.rows_read} != accepted "
                f"{self.rows_accepted} + quarantined {self.rows_quarantined} (this is a bug in leadscore)"
            )

    @property
    def balanced(self) -> bool:
        return self.rows_read == self.rows_accepted + self.rows_quarantined

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "path": str(self.path),
            "rows_read": self.rows_read,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "reasons": dict(self.reasons),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`load_history` read, accepted and quarantined, per table."""

    data_dir: Path
    contract_name: str
    timezone: str
    now: pd.Timestamp
    tables: dict[str, TableReport]

    @property
    def rows_read(self) -> int:
        return sum(t.rows_read for t in self.tables.values())

    @property
    def rows_accepted(self) -> int:
        return sum(t.rows_accepted for t in self.tables.values())

    @property
    def rows_quarantined(self) -> int:
        return sum(t.rows_quarantined for t in self.tables.values())

    @property
    def clean(self) -> bool:
        """True when no row of any table was quarantined."""
        return self.rows_quarantined == 0

    def check(self) -> None:
        """Raise ``RuntimeError`` unless every table satisfies read == accepted + quarantined."""
        for report in self.tables.values():
            if not report.balanced:
                raise RuntimeError(f"{report.path}: row accounting does not balance")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (what ``report.json`` holds)."""
        return {
            "data_dir": str(self.data_dir),
            "contract": self.contract_name,
            "timezone": self.timezone,
            "now": _format_time(self.now),
            "rows_read": self.rows_read,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "tables": {name: report.to_dict() for name, report in self.tables.items()},
        }

    def summary(self) -> str:
        """One line per table, for logs."""
        return "; ".join(
            f"{t.table}: read {t.rows_read}, accepted {t.rows_accepted}, quarantined {t.rows_quarantined}"
            for t in self.tables.values()
        )

    def render(self) -> Table:
        """A rich table for the CLI."""
        from rich.table import Table

        table = Table(title=f"Data validation: {self.data_dir}", show_footer=True)
        table.add_column("table (file)", footer="total")
        table.add_column("read", justify="right", footer=f"{self.rows_read:,}")
        table.add_column("accepted", justify="right", footer=f"{self.rows_accepted:,}")
        table.add_column(
            "quarantined",
            justify="right",
            footer=f"[red]{self.rows_quarantined:,}[/red]" if self.rows_quarantined else "0",
        )
        table.add_column("reasons (rows)", overflow="fold")
        for report in self.tables.values():
            reasons = "\n".join(
                f"{kind}: {count:,}" for kind, count in sorted(report.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
            )
            quarantined = f"[red]{report.rows_quarantined:,}[/red]" if report.rows_quarantined else "0"
            table.add_row(
                report.path.name,
                f"{report.rows_read:,}",
                f"{report.rows_accepted:,}",
                quarantined,
                reasons or "-",
            )
        return table


@dataclass(frozen=True)
class ValidationResult:
    """Accepted history, quarantined rows per table and the accounting report."""

    history: ProspectHistory
    quarantine: dict[str, pd.DataFrame]
    report: ValidationReport


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------
def load_history(
    data_dir: str | Path,
    contract: Contract | None = None,
    *,
    now: pd.Timestamp | None = None,
) -> ValidationResult:
    """Read and validate the three tables of ``data_dir``.

    Args:
        data_dir: Directory holding ``leads``, ``activities`` and ``stage_history`` (``.csv`` or
            ``.parquet``) and, unless ``contract`` is given, ``contract.yaml``.
        contract: The data contract; read from ``data_dir`` when omitted.
        now: Timestamps after this instant are quarantined as "in the future". Must be
            time-zone aware; defaults to the current UTC time.

    Returns:
        The accepted rows as a :class:`ProspectHistory` (canonical dtypes, original row order,
        fresh ``RangeIndex``), the quarantined rows per table (original values as read, plus
        ``source_row`` and ``reason``), and the report.

    Raises:
        ContractError: for whole-file problems (see the module docstring).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ContractError(f"{data_dir}: data directory does not exist")
    if contract is None:
        contract = Contract.load(data_dir)
    now_ts = _resolve_now(now)
    # Locate every table before reading any, so a missing table fails fast.
    paths = {table: find_table(data_dir, table) for table in TABLES}

    started = time.perf_counter()
    raw = _read(paths["leads"])
    leads = _validate_leads(raw, paths["leads"], contract, now_ts)
    leads_seconds = time.perf_counter() - started
    index = _LeadIndex.build(leads.frame, leads.quarantined_ids)
    del raw

    started = time.perf_counter()
    raw = _read(paths["activities"])
    activities = _validate_activities(raw, paths["activities"], contract, now_ts, index)
    activities_seconds = time.perf_counter() - started
    del raw

    started = time.perf_counter()
    raw = _read(paths["stage_history"])
    stages = _validate_stage_history(raw, paths["stage_history"], contract, now_ts, index)
    stages_seconds = time.perf_counter() - started
    del raw

    outcomes = {"leads": leads, "activities": activities, "stage_history": stages}
    seconds = {"leads": leads_seconds, "activities": activities_seconds, "stage_history": stages_seconds}
    tables = {
        name: TableReport(
            table=name,
            path=paths[name],
            rows_read=outcome.rows_read,
            rows_accepted=len(outcome.frame),
            rows_quarantined=len(outcome.quarantine),
            reasons=outcome.reason_counts,
            seconds=seconds[name],
        )
        for name, outcome in outcomes.items()
    }
    report = ValidationReport(
        data_dir=data_dir,
        contract_name=contract.name,
        timezone=contract.timezone,
        now=now_ts,
        tables=tables,
    )
    report.check()
    for table_report in tables.values():
        log = logger.warning if table_report.rows_quarantined else logger.info
        log(
            "%s: read %d rows, accepted %d, quarantined %d %s",
            table_report.path,
            table_report.rows_read,
            table_report.rows_accepted,
            table_report.rows_quarantined,
            table_report.reasons or "",
        )
    history = ProspectHistory(
        contract=contract,
        leads=leads.frame,
        activities=activities.frame,
        stage_history=stages.frame,
    )
    quarantine = {name: outcome.quarantine for name, outcome in outcomes.items()}
    return ValidationResult(history=history, quarantine=quarantine, report=report)


def write_quarantine(result: ValidationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the quarantined rows and the report to ``out_dir``.

    Each non-empty quarantine becomes ``<out_dir>/<table>.csv``; a quarantine file left by an
    earlier run for a table that is now clean is removed, so the directory always describes this
    run. ``<out_dir>/report.json`` holds :meth:`ValidationReport.to_dict` plus the files written.
    All writes are atomic.

    Returns:
        Paths written, keyed by table name, plus ``"report"``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for table in TABLES:
        path = out_dir / f"{table}.csv"
        frame = result.quarantine.get(table)
        if frame is not None and len(frame):
            written[table] = write_table(frame, path)
        else:
            path.unlink(missing_ok=True)
    report = result.report.to_dict()
    report["quarantine_files"] = {table: str(path) for table, path in written.items()}
    report_path = out_dir / REPORT_FILE
    atomic_write_text(report_path, json.dumps(report, indent=2) + "\n")
    written["report"] = report_path
    return written


# --------------------------------------------------------------------------------------------
# Row problems
# --------------------------------------------------------------------------------------------
class _RowProblems:
    """Problems found in the rows of one table: which rows, of which kind, with which message."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self.bad = np.zeros(n_rows, dtype=bool)
        self._kinds: list[str] = []
        self._positions: list[np.ndarray] = []
        self._messages: list[np.ndarray] = []

    def add(self, kind: str, where: Any, describe: Callable[[np.ndarray], Iterable[str]]) -> None:
        """Record ``kind`` for rows selected by ``where`` (boolean mask or row positions).

        ``describe`` receives the row positions and returns one message per row; it is only
        called when there is at least one such row.
        """
        positions = _positions(where, self.n_rows)
        if positions.size == 0:
            return
        described = describe(positions)
        messages = described if isinstance(described, np.ndarray) else _object_array(list(described))
        if len(messages) != positions.size:
            raise RuntimeError(f"{kind}: {len(messages)} messages for {positions.size} rows")
        self.bad[positions] = True
        self._kinds.append(kind)
        self._positions.append(positions)
        self._messages.append(messages)

    def add_constant(self, kind: str, where: Any, message: str) -> None:
        """Record ``kind`` with the same message for every selected row."""
        self.add(kind, where, lambda pos: np.full(pos.size, message, dtype=object))

    def add_per_value(
        self, kind: str, where: Any, values: pd.Series | np.ndarray, message: Callable[[Any], str]
    ) -> None:
        """Record ``kind`` with ``message(value)`` for each selected row's value in ``values``.

        Messages are built once per distinct value: a systematic problem (an undeclared activity
        type on millions of rows) then costs one string, not one per row.
        """

        def describe(positions: np.ndarray) -> np.ndarray:
            subset = values.iloc[positions] if isinstance(values, pd.Series) else values[positions]
            codes, uniques = pd.factorize(subset, use_na_sentinel=False)
            return _object_array([message(value) for value in uniques])[codes]

        self.add(kind, where, describe)

    def reason_counts(self) -> dict[str, int]:
        by_kind: dict[str, list[np.ndarray]] = {}
        for kind, positions in zip(self._kinds, self._positions, strict=True):
            by_kind.setdefault(kind, []).append(positions)
        return {
            kind: parts[0].size if len(parts) == 1 else int(np.unique(np.concatenate(parts)).size)
            for kind, parts in sorted(by_kind.items())
        }

    def reasons(self) -> tuple[np.ndarray, list[str]]:
        """Rejected row positions (ascending) and their reasons (in check order, ``"; "``-joined)."""
        if not self._positions:
            return np.empty(0, dtype=np.int64), []
        positions = np.concatenate(self._positions)
        messages = np.concatenate(self._messages)
        # A stable sort keeps each row's messages in the order the checks ran.
        order = np.argsort(positions, kind="stable")
        positions, messages = positions[order], messages[order]
        starts = np.flatnonzero(np.r_[True, positions[1:] != positions[:-1]])
        if starts.size == positions.size:  # one problem per row: nothing to join
            return positions, messages.tolist()
        sizes = np.diff(np.r_[starts, positions.size])
        reasons = messages[starts]
        for group in np.flatnonzero(sizes > 1).tolist():
            start = starts[group]
            reasons[group] = "; ".join(messages[start : start + sizes[group]])
        return positions[starts], reasons.tolist()


def _object_array(items: Sequence[Any]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _positions(where: Any, n_rows: int) -> np.ndarray:
    if isinstance(where, pd.Series):
        where = where.to_numpy(dtype=bool, na_value=False) if where.dtype != bool else where.to_numpy()
    array = np.asarray(where)
    if array.dtype == bool:
        if array.shape != (n_rows,):
            raise RuntimeError(f"mask of shape {array.shape} for {n_rows} rows")
        return np.flatnonzero(array)
    return array.astype(np.int64, copy=False)


@dataclass
class _TableOutcome:
    frame: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int
    reason_counts: dict[str, int]
    quarantined_ids: pd.Index | None = None


def _finish(raw: pd.DataFrame, columns: dict[str, Any], problems: _RowProblems) -> _TableOutcome:
    """Accepted rows in canonical form, and the quarantine frame with original values."""
    frame = _drop_rows(pd.DataFrame(columns), problems.bad)
    positions, reasons = problems.reasons()
    quarantine = raw.iloc[positions].reset_index(drop=True)
    # A data column called like a quarantine column is kept under another name.
    quarantine = quarantine.rename(columns={c: f"original_{c}" for c in QUARANTINE_COLUMNS if c in quarantine})
    quarantine.insert(0, "source_row", pd.Series(positions + 1, dtype=np.int64))
    quarantine["reason"] = pd.Series(reasons, dtype=STR_DTYPE)
    return _TableOutcome(
        frame=frame,
        quarantine=quarantine,
        rows_read=len(raw),
        reason_counts=problems.reason_counts(),
    )


def _drop_rows(frame: pd.DataFrame, bad: np.ndarray) -> pd.DataFrame:
    """``frame`` without the rows flagged in ``bad``, with a fresh RangeIndex."""
    rejected = np.flatnonzero(bad)
    if not rejected.size:
        return frame.reset_index(drop=True)
    if rejected.size > _MAX_SLICES:
        return frame.iloc[np.flatnonzero(~bad)].reset_index(drop=True)
    # Few rejects: concatenating the slices between them is zero-copy for Arrow-backed string
    # columns, where a take/filter would copy every string (about 1 s per 5M-row table).
    bounds = np.concatenate(([-1], rejected, [len(frame)]))
    parts = [frame.iloc[start + 1 : stop] for start, stop in pairwise(bounds) if stop > start + 1]
    if not parts:
        return frame.iloc[:0].reset_index(drop=True)
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Formatting values for messages
# --------------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    """A value as it appears in a reason: strings quoted, numbers and times plain."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "(missing)"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, pd.Timestamp):
        return f"'{value}'"
    return str(value)


def _format_time(value: pd.Timestamp) -> str:
    """UTC timestamp as ISO 8601 with ``Z``; seconds only when non-zero (2024-02-03T10:00Z)."""
    value = pd.Timestamp(value)
    value = value.tz_localize("UTC") if value.tz is None else value.tz_convert("UTC")
    text = value.strftime("%Y-%m-%dT%H:%M")
    if value.second or value.microsecond or value.nanosecond:
        text += value.strftime(":%S")
        if value.microsecond or value.nanosecond:
            text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _list(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


# --------------------------------------------------------------------------------------------
# Column and value normalisation
# --------------------------------------------------------------------------------------------
def _check_columns(raw: pd.DataFrame, path: Path, table: str, contract: Contract) -> None:
    names = [str(c) for c in raw.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ContractError(f"{path}: table '{table}' has duplicate column name(s) in its header: {duplicated}")
    required, allowed = contract.expected_columns(table)
    ordered_required = [*REQUIRED_COLUMNS[table]]
    if table == "leads":
        ordered_required += [a.name for a in contract.attributes]
    missing = [c for c in ordered_required if c in required and c not in names]
    extra = [c for c in names if c not in allowed]
    problems = []
    if missing:
        if table == "leads":
            expected = "lead_id, created_at and every attribute declared in the contract"
        else:
            expected = ", ".join(REQUIRED_COLUMNS[table])
        problems.append(f"missing required column(s) {', '.join(repr(c) for c in missing)} (required: {expected})")
    if extra:
        if table == "leads":
            hint = "declare them as attributes in contract.yaml (kind categorical or numeric) or list them"
        elif OPTIONAL_COLUMNS[table]:
            hint = f"the optional columns of {table} are {', '.join(OPTIONAL_COLUMNS[table])}; list others"
        else:
            hint = "list them"
        problems.append(
            f"column(s) {', '.join(repr(c) for c in extra)} are not declared in the data contract; {hint} "
            f"under ignore_columns: {{{table}: [...]}} in contract.yaml to keep them out of the data set"
        )
    if problems:
        raise ContractError(f"{path}: table '{table}': " + "; ".join(problems))


def _read(path: Path) -> pd.DataFrame:
    """Read a table; a named index restored by Parquet becomes a column again."""
    if path.suffix == ".csv":
        _check_csv_header(path)
    raw = read_raw_table(path)
    if isinstance(raw.index, pd.RangeIndex) and raw.index.start == 0 and raw.index.step == 1:
        return raw
    named = any(name is not None for name in raw.index.names)
    return raw.reset_index(drop=not named)


def _check_csv_header(path: Path) -> None:
    """Reject duplicate header names, which the CSV reader would silently rename ("x", "x.1")."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        header = next(csv.reader(handle), [])
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicated:
        raise ContractError(f"{path}: duplicate column name(s) in the header: {', '.join(repr(c) for c in duplicated)}")


def _as_str(raw: pd.Series) -> pd.Series:
    """Any column as canonical ``str`` (NaN for missing; blank strings count as missing).

    Parquet may deliver dictionary (categorical) columns, integer ids, or integer ids stored as
    float because of nulls; all become the same strings a CSV file would hold ("17", not "17.0").
    """
    dtype = raw.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories = _as_str(pd.Series(dtype.categories))
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
    array = _arrow(text)
    if array is None:  # non-Arrow storage: the (slower) pandas way
        mask = ((text == "") | text.str.isspace()).to_numpy(dtype=bool)
        return mask if mask.any() else None
    found = pc.or_(pc.equal(array, ""), pc.utf8_is_space(array))
    if not pc.any(found).as_py():
        return None
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def _optional_str(raw: pd.DataFrame, column: str) -> pd.Series:
    if column in raw.columns:
        return _as_str(raw[column])
    return pd.Series(np.nan, index=raw.index, dtype=STR_DTYPE)


def _parse_numbers(raw: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Float64 values and a mask of present values that are not numbers."""
    dtype = raw.dtype
    if pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype):
        return raw.to_numpy(dtype="float64", na_value=np.nan), np.zeros(len(raw), dtype=bool)
    text = _as_str(raw)
    values = _arrow_floats(text)
    if values is None:
        numbers = pd.to_numeric(text, errors="coerce")
        values = pd.Series(numbers).to_numpy(dtype="float64", na_value=np.nan)
    unparsed = np.flatnonzero(text.notna().to_numpy() & np.isnan(values))
    invalid = np.zeros(len(text), dtype=bool)
    if unparsed.size:
        # Spelled-out missing values ("NaN", "NA", "null", ...) are missing, not invalid.
        spelled_na = text.iloc[unparsed].str.strip().str.lower().isin(_NUMERIC_NA).to_numpy()
        invalid[unparsed[~spelled_na]] = True
    return values, invalid


def _arrow_floats(text: pd.Series) -> np.ndarray | None:
    """Fast path: Arrow's string -> float64 cast, which succeeds when every value is a plain number."""
    array = _arrow(text)
    if array is None:
        return None
    try:
        return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # some value is not a plain number: pandas coerces value by value
        return None


def _check_numbers(
    problems: _RowProblems, column: str, raw: pd.Series, values: np.ndarray, invalid: np.ndarray
) -> None:
    problems.add_per_value(f"{INVALID_NUMBER}:{column}", invalid, raw, lambda v: f"{column} {_show(v)} is not a number")
    problems.add_per_value(
        f"{NOT_FINITE}:{column}", np.isinf(values), raw, lambda v: f"{column} {_show(v)} is not a finite number"
    )


def _require(problems: _RowProblems, column: str, values: pd.Series) -> np.ndarray:
    """Quarantine rows where a required value is missing; return the mask of present values."""
    present = values.notna().to_numpy()
    problems.add_constant(f"{MISSING}:{column}", ~present, f"{column} is missing")
    return present


def _check_allowed(
    problems: _RowProblems,
    kind: str,
    column: str,
    values: pd.Series,
    allowed: Sequence[str],
    expectation: str,
) -> None:
    bad = values.notna().to_numpy() & ~values.isin(list(allowed)).to_numpy()
    problems.add_per_value(kind, bad, values, lambda v: f"{column} {_show(v)} {expectation}")


# --------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------
@dataclass
class _Times:
    """A parsed timestamp column: UTC values (NaT when unusable) and why values are unusable."""

    values: np.ndarray  # datetime64[us], UTC wall clock
    missing: np.ndarray
    invalid: np.ndarray
    nonexistent: np.ndarray
    ambiguous: np.ndarray


def _parse_times(raw: pd.Series, *, path: Path, column: str, tz: str) -> _Times:
    n = len(raw)
    none = np.zeros(n, dtype=bool)
    dtype = raw.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        utc = raw.dt.tz_convert("UTC").dt.as_unit(TIME_UNIT)
        values = np.asarray(utc.array, dtype=f"datetime64[{TIME_UNIT}]")
        return _Times(values, np.isnat(values), none, none.copy(), none.copy())
    if pd.api.types.is_datetime64_dtype(dtype):
        wall = np.asarray(raw.dt.as_unit(TIME_UNIT).array, dtype=f"datetime64[{TIME_UNIT}]")
        values, nonexistent, ambiguous = _localize(wall, tz)
        return _Times(values, np.isnat(wall), none, nonexistent, ambiguous)

    text = _as_str(raw)
    present = text.notna().to_numpy()
    values, aware = _parse_time_text(text, present)
    parsed = ~np.isnat(values)
    aware_rows = np.flatnonzero(parsed & aware)
    naive_rows = np.flatnonzero(parsed & ~aware)
    if aware_rows.size and naive_rows.size:
        first_aware, first_naive = int(aware_rows[0]), int(naive_rows[0])
        raise ContractError(
            f"{path}: column '{column}' mixes timestamps with a time-zone offset (first at row "
            f"{first_aware + 1}: {_show(raw.iloc[first_aware])}) and without one (first at row "
            f"{first_naive + 1}: {_show(raw.iloc[first_naive])}). Write every value with an offset or none; "
            f"values without an offset are read in the contract time zone '{tz}'."
        )
    invalid = present & ~parsed
    if naive_rows.size:
        values, nonexistent, ambiguous = _localize(values, tz)
        return _Times(values, ~present, invalid, nonexistent, ambiguous)
    return _Times(values, ~present, invalid, none, none.copy())


def _arrow(values: pd.Series) -> Any:
    """The Arrow array behind an Arrow-backed string column, or None."""
    if not isinstance(values.dtype, pd.StringDtype) or values.dtype.storage != "pyarrow":
        return None
    return pa.array(values)


def _has_offset(text: pd.Series) -> np.ndarray:
    """Mask of values ending in a UTC offset (Z, +HH, +HHMM, +HH:MM) after a time part."""
    if not len(text):
        return np.zeros(0, dtype=bool)
    array = _arrow(text)
    if array is None:
        return text.str.contains(_OFFSET_AT_END, regex=True, na=False).to_numpy(dtype=bool)
    return pc.fill_null(pc.match_substring_regex(array, _OFFSET_AT_END), False).to_numpy(zero_copy_only=False)


def _parse_time_text(
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
            return _parse_time_text(text, present, aware=aware)
        _assign(values, rows, parsed)

    failed = np.flatnonzero(present & np.isnat(values))
    if failed.size:
        # Stripping and the non-ISO forms are tried only for values ISO 8601 parsing rejected.
        original = text.iloc[failed].reset_index(drop=True)
        stripped = original.str.strip()
        padded = (stripped != original).to_numpy(dtype=bool)
        if padded.any():
            rows = failed[padded]
            values[rows], aware[rows] = _parse_time_text(
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


def _localize(wall: np.ndarray, tz: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def _check_times(
    problems: _RowProblems,
    column: str,
    raw: pd.Series,
    times: _Times,
    tz: str,
    now: pd.Timestamp,
) -> None:
    problems.add_constant(f"{MISSING}:{column}", times.missing, f"{column} is missing")
    problems.add_per_value(
        INVALID_TIMESTAMP, times.invalid, raw, lambda v: f"{column} {_show(v)} is not a valid timestamp"
    )
    problems.add_per_value(
        NONEXISTENT_TIME,
        times.nonexistent,
        raw,
        lambda v: (
            f"{column} {_show(v)} does not exist in time zone {tz} (skipped by a daylight-saving change); "
            "write it with a UTC offset"
        ),
    )
    problems.add_per_value(
        AMBIGUOUS_TIME,
        times.ambiguous,
        raw,
        lambda v: (
            f"{column} {_show(v)} is ambiguous in time zone {tz} (repeated by a daylight-saving change); "
            "write it with a UTC offset"
        ),
    )
    now_value = now.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT).to_datetime64()
    now_text = _format_time(now)
    problems.add_per_value(
        FUTURE,
        times.values > now_value,  # NaT compares False
        times.values,
        lambda t: f"{column} {_format_time(pd.Timestamp(t))} is in the future (now is {now_text})",
    )


def _resolve_now(now: pd.Timestamp | None) -> pd.Timestamp:
    if now is None:
        return pd.Timestamp.now(tz="UTC").as_unit(TIME_UNIT)
    now = pd.Timestamp(now)
    if now.tz is None:
        raise ValueError(f"now must be time-zone aware (got {now}); pass e.g. pd.Timestamp(..., tz='UTC')")
    return now.tz_convert("UTC").as_unit(TIME_UNIT)


def _timestamp_series(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values).tz_localize("UTC").as_unit(TIME_UNIT), copy=False)


# --------------------------------------------------------------------------------------------
# Leads and references to them
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LeadIndex:
    accepted: pd.Index  # accepted lead ids; position = row of the accepted leads frame
    created: np.ndarray  # datetime64[us] UTC creation time, aligned with ``accepted``
    quarantined: pd.Index  # ids that only occur in quarantined lead rows

    @classmethod
    def build(cls, leads: pd.DataFrame, quarantined: pd.Index | None) -> _LeadIndex:
        accepted = pd.Index(leads["lead_id"])
        created = np.asarray(leads["created_at"].array, dtype=f"datetime64[{TIME_UNIT}]")
        return cls(accepted, created, quarantined if quarantined is not None else pd.Index([], dtype=STR_DTYPE))


def _validate_leads(raw: pd.DataFrame, path: Path, contract: Contract, now: pd.Timestamp) -> _TableOutcome:
    _check_columns(raw, path, "leads", contract)
    if len(raw) == 0:
        raise ContractError(f"{path}: the leads table has no rows; a data set needs at least one lead")
    problems = _RowProblems(len(raw))

    lead_id = _as_str(raw["lead_id"])
    present = _require(problems, "lead_id", lead_id)
    created = _parse_times(raw["created_at"], path=path, column="created_at", tz=contract.timezone)
    _check_times(problems, "created_at", raw["created_at"], created, contract.timezone, now)

    columns: dict[str, Any] = {"lead_id": lead_id, "created_at": _timestamp_series(created.values)}
    for attribute in contract.attributes:
        name = attribute.name
        if attribute.kind == "categorical":
            columns[name] = _as_str(raw[name])
        else:
            values, invalid = _parse_numbers(raw[name])
            _check_numbers(problems, name, raw[name], values, invalid)
            columns[name] = values

    # Keep the first row of each lead id; later rows with the same id are quarantined.
    duplicate = present & lead_id.duplicated(keep="first").to_numpy()
    if duplicate.any():
        first_rows = np.flatnonzero(present & ~duplicate)
        first_of = first_rows[pd.Index(lead_id.iloc[first_rows]).get_indexer(lead_id[duplicate])]
        ids = lead_id[duplicate].tolist()
        problems.add(
            DUPLICATE_LEAD_ID,
            duplicate,
            lambda pos: [f"lead_id '{i}' is a duplicate of row {r + 1}" for i, r in zip(ids, first_of, strict=True)],
        )

    outcome = _finish(raw, columns, problems)
    rejected_ids = pd.Index(lead_id[problems.bad & present].unique())
    outcome.quarantined_ids = rejected_ids.difference(pd.Index(outcome.frame["lead_id"]))
    return outcome


def _check_lead_refs(problems: _RowProblems, lead_id: pd.Series, index: _LeadIndex) -> np.ndarray:
    """Quarantine events of missing, unknown or quarantined leads; return row -> accepted lead position."""
    present = _require(problems, "lead_id", lead_id)
    codes = _lookup(index.accepted, lead_id)
    unresolved = np.flatnonzero(present & (codes < 0))
    if unresolved.size:
        ids = lead_id.iloc[unresolved]
        cascaded = np.asarray(ids.isin(index.quarantined)) if len(index.quarantined) else np.zeros(len(ids), bool)
        problems.add_per_value(
            QUARANTINED_LEAD,
            unresolved[cascaded],
            lead_id,
            lambda v: f"lead_id {_show(v)} was quarantined in leads (see leads quarantine)",
        )
        problems.add_per_value(
            UNKNOWN_LEAD, unresolved[~cascaded], lead_id, lambda v: f"lead_id {_show(v)} is not in leads"
        )
    return codes


def _lookup(ids: pd.Index, values: pd.Series) -> np.ndarray:
    """Position of each value in the unique ``ids`` (-1 when absent or missing)."""
    array = _arrow(values)
    if array is not None and len(values) and isinstance(ids.dtype, pd.StringDtype):
        value_set = pa.array(ids.tolist(), type=array.type)
        found = pc.index_in(array, value_set=value_set)
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return ids.get_indexer(pd.Index(values))


def _check_after_creation(
    problems: _RowProblems, column: str, times: np.ndarray, codes: np.ndarray, index: _LeadIndex
) -> None:
    if not len(index.accepted):
        return
    # codes of -1 pick the last lead; those rows are masked out by `codes >= 0`.
    early = np.flatnonzero((times < index.created[codes]) & (codes >= 0) & ~np.isnat(times))
    if not early.size:
        return
    early_created = index.created[codes[early]]
    problems.add(
        BEFORE_CREATED,
        early,
        lambda pos: [
            f"{column} {_format_time(pd.Timestamp(t))} is before the lead's created_at {_format_time(pd.Timestamp(c))}"
            for t, c in zip(times[pos], early_created, strict=True)
        ],
    )


def _check_duplicates(problems: _RowProblems, keys: dict[str, Any]) -> None:
    """Quarantine all but the first of rows (not otherwise rejected) whose ``keys`` are all equal.

    Rejected rows take no part: a row is only a duplicate of a row that is accepted, so a reason
    never points at a row that was itself quarantined. The first two keys must be int64 arrays
    (lead position and time); they pre-select the few rows that can be duplicates at all.
    """
    candidates = np.flatnonzero(~problems.bad)
    if candidates.size < 2:
        return
    names = list(keys)
    candidates = candidates[_may_repeat(keys[names[0]][candidates], keys[names[1]][candidates])]
    if not candidates.size:
        return
    frame = pd.DataFrame({name: _values_subset(keys[name], candidates) for name in names})
    group = frame.groupby(names, sort=False, dropna=False).ngroup().to_numpy()
    is_first = ~pd.Series(group).duplicated(keep="first").to_numpy()
    first_row = np.empty(group.max() + 1, dtype=np.int64)
    first_row[group[is_first]] = candidates[is_first]
    duplicates = candidates[~is_first]
    firsts = first_row[group[~is_first]]
    problems.add(DUPLICATE, duplicates, lambda pos: [f"duplicate of row {r + 1}" for r in firsts])


def _may_repeat(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Mask of rows whose (first, second) pair may occur more than once (a superset of the repeats).

    Both int64 keys are mixed into one 64-bit hash; equal pairs have equal hashes, so every true
    repeat is selected, and the rare hash collisions only add candidates that the exact comparison
    afterwards rejects. Sorting one uint64 array is much faster than hashing two columns.
    """
    if first.size < 2:
        return np.zeros(first.size, dtype=bool)
    mixed = second.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= first.astype(np.uint64)
    ordered = np.sort(mixed)
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if not repeated.size:
        return np.zeros(first.size, dtype=bool)
    return np.isin(mixed, repeated)


def _values_subset(values: pd.Series | np.ndarray, rows: np.ndarray) -> Any:
    if isinstance(values, pd.Series):
        return values.iloc[rows].to_numpy()
    return values[rows]


# --------------------------------------------------------------------------------------------
# Event tables
# --------------------------------------------------------------------------------------------
def _validate_activities(
    raw: pd.DataFrame, path: Path, contract: Contract, now: pd.Timestamp, index: _LeadIndex
) -> _TableOutcome:
    _check_columns(raw, path, "activities", contract)
    problems = _RowProblems(len(raw))

    lead_id = _as_str(raw["lead_id"])
    codes = _check_lead_refs(problems, lead_id, index)
    occurred = _parse_times(raw["occurred_at"], path=path, column="occurred_at", tz=contract.timezone)
    _check_times(problems, "occurred_at", raw["occurred_at"], occurred, contract.timezone, now)
    _check_after_creation(problems, "occurred_at", occurred.values, codes, index)

    activity_type = _as_str(raw["activity_type"])
    _require(problems, "activity_type", activity_type)
    _check_allowed(
        problems,
        UNKNOWN_ACTIVITY_TYPE,
        "activity_type",
        activity_type,
        contract.activity_types,
        f"is not one of {_list(contract.activity_types)}",
    )
    channel = _optional_str(raw, "channel")
    campaign_id = _optional_str(raw, "campaign_id")
    topic = _optional_str(raw, "topic")
    _check_allowed(
        problems,
        UNKNOWN_TOPIC,
        "topic",
        topic,
        contract.topics,
        f"is not declared in the contract (topics: {_list(contract.topics)})",
    )
    if "value" in raw.columns:
        value, invalid = _parse_numbers(raw["value"])
        _check_numbers(problems, "value", raw["value"], value, invalid)
        problems.add_per_value(NEGATIVE, value < 0, value, lambda v: f"value {float(v)!r} is negative")
    else:
        value = np.full(len(raw), np.nan)

    times = occurred.values.view(np.int64)
    _check_duplicates(
        problems,
        {
            "lead": codes,
            "time": times,
            "activity_type": activity_type,
            "channel": channel,
            "campaign_id": campaign_id,
            "topic": topic,
            "value": value,
        },
    )
    columns = {
        "lead_id": lead_id,
        "occurred_at": _timestamp_series(occurred.values),
        "activity_type": activity_type,
        "channel": channel,
        "campaign_id": campaign_id,
        "topic": topic,
        "value": value,
    }
    return _finish(raw, columns, problems)


def _validate_stage_history(
    raw: pd.DataFrame, path: Path, contract: Contract, now: pd.Timestamp, index: _LeadIndex
) -> _TableOutcome:
    _check_columns(raw, path, "stage_history", contract)
    problems = _RowProblems(len(raw))

    lead_id = _as_str(raw["lead_id"])
    codes = _check_lead_refs(problems, lead_id, index)
    stage = _as_str(raw["stage"])
    _require(problems, "stage", stage)
    _check_allowed(
        problems, UNKNOWN_STAGE, "stage", stage, contract.stages.order, f"is not one of {_list(contract.stages.order)}"
    )
    entered = _parse_times(raw["entered_at"], path=path, column="entered_at", tz=contract.timezone)
    _check_times(problems, "entered_at", raw["entered_at"], entered, contract.timezone, now)
    _check_after_creation(problems, "entered_at", entered.values, codes, index)

    _check_duplicates(problems, {"lead": codes, "time": entered.values.view(np.int64), "stage": stage})
    columns = {"lead_id": lead_id, "stage": stage, "entered_at": _timestamp_series(entered.values)}
    return _finish(raw, columns, problems)
