"""Quarantine: the problems found in the rows of a table (which rows, of which kind, with which
message), the reason kinds, the rows kept apart with their reason, and the validation report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.contract import TABLES
from features.history import ProspectHistory
from features.io import atomic_write_text, write_table
from features.parsing import STR_DTYPE, format_time

if TYPE_CHECKING:
    from rich.table import Table


#: Columns added to every quarantine frame (besides the original columns).
QUARANTINE_COLUMNS = ("source_row", "reason")
REPORT_FILE = "report.json"

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
    #: Problems that stop nothing but make the data set suspect (e.g. an activities file with no rows).
    warnings: tuple[str, ...] = ()

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
            "now": format_time(self.now),
            "rows_read": self.rows_read,
            "rows_accepted": self.rows_accepted,
            "rows_quarantined": self.rows_quarantined,
            "tables": {name: report.to_dict() for name, report in self.tables.items()},
            "warnings": list(self.warnings),
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


def empty_table_warnings(tables: dict[str, TableReport], mode: str) -> tuple[str, ...]:
    """Warnings for event tables left without accepted rows (history mode needs activities and stage entries)."""
    consequences = {
        "activities": (
            "no activities",
            "every lead looks unengaged (all activity features are zero); check the export of activities",
        ),
        "stage_history": (
            "no stage entries",
            "no lead has a stage or an outcome, so there is nothing to train on; check the export of stage history",
        ),
    }
    warnings = []
    for table, (what, consequence) in consequences.items():
        report = tables.get(table)
        if report is None or report.rows_accepted or (table == "activities" and mode == "single_snapshot"):
            continue
        if report.rows_read == 0:
            found = "the file has a header but no rows"
        else:
            found = f"all {report.rows_read:,} rows were quarantined (see the quarantine)"
        warnings.append(f"{report.path}: {what}: {found}; {consequence}")
    return tuple(warnings)


@dataclass(frozen=True)
class ValidationResult:
    """Accepted history, quarantined rows per table and the accounting report."""

    history: ProspectHistory
    quarantine: dict[str, pd.DataFrame]
    report: ValidationReport


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
class RowProblems:
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
class TableOutcome:
    frame: pd.DataFrame
    quarantine: pd.DataFrame
    rows_read: int
    reason_counts: dict[str, int]
    quarantined_ids: pd.Index | None = None


def finish_table(raw: pd.DataFrame, columns: dict[str, Any], problems: RowProblems) -> TableOutcome:
    """Accepted rows in canonical form, and the quarantine frame with original values."""
    frame = _drop_rows(pd.DataFrame(columns), problems.bad)
    positions, reasons = problems.reasons()
    quarantine = raw.iloc[positions].reset_index(drop=True)
    # A data column called like a quarantine column is kept under another name.
    quarantine = quarantine.rename(columns={c: f"original_{c}" for c in QUARANTINE_COLUMNS if c in quarantine})
    quarantine.insert(0, "source_row", pd.Series(positions + 1, dtype=np.int64))
    quarantine["reason"] = pd.Series(reasons, dtype=STR_DTYPE)
    return TableOutcome(
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
