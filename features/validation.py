"""Load a prospect-history data directory and validate it against its data contract.

:func:`load_history` reads ``leads``, ``activities`` and ``stage_history`` (CSV or Parquet) and
returns the accepted rows in the canonical dtypes of :class:`~features.history.ProspectHistory`,
the rejected rows (quarantine) with the reason for each, and a report that accounts for every
row: ``rows_read == rows_accepted + rows_quarantined`` for every table.

Two kinds of problem are distinguished:

- **Whole-file problems** raise :class:`~features.contract.ContractError` with a message that
  names the file (and column/row where it applies): a missing table, missing required columns,
  columns the contract does not declare, a timestamp column mixing values with and without a
  time-zone offset, an empty leads table; a CSV file that cannot be read (empty, not in the contract's
  ``encoding``, another ``delimiter``, rows with the wrong number of fields, a line over
  :data:`features.io.MAX_CSV_LINE_BYTES`), named with its line and the fix (see :func:`features.io.read_raw_table`).
- **Row problems** quarantine the row with a readable reason (several reasons joined with
  ``"; "``): missing required values, unparseable or non-existent timestamps, timestamps in the
  future, events before their lead's creation, events of unknown or quarantined leads, unknown
  activity types, topics and stages, unparseable numbers, negative activity values, duplicate
  lead ids and duplicate events.
- **Warnings** (``report.warnings``) stop nothing: an event table without accepted rows (no activities,
  no stage entries) is logged and reported.

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

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import OPTIONAL_COLUMNS, REQUIRED_COLUMNS, TABLES, Contract, ContractError
from features.history import ProspectHistory
from features.io import find_table, read_raw_table
from features.parsing import (
    STR_DTYPE,
    TIME_UNIT,
    TIMESTAMP_DTYPE,
    ParsedTimes,
    arrow_strings,
    as_str,
    format_time,
    list_names,
    optional_str,
    parse_numbers,
    parse_times,
    show_value,
    timestamp_series,
)
from features.quarantine import (
    AMBIGUOUS_TIME,
    BEFORE_CREATED,
    DUPLICATE,
    DUPLICATE_LEAD_ID,
    FUTURE,
    INVALID_NUMBER,
    INVALID_TIMESTAMP,
    MISSING,
    NEGATIVE,
    NONEXISTENT_TIME,
    NOT_FINITE,
    QUARANTINE_COLUMNS,
    QUARANTINED_LEAD,
    REPORT_FILE,
    UNKNOWN_ACTIVITY_TYPE,
    UNKNOWN_LEAD,
    UNKNOWN_STAGE,
    UNKNOWN_TOPIC,
    RowProblems,
    TableOutcome,
    TableReport,
    ValidationReport,
    ValidationResult,
    empty_table_warnings,
    finish_table,
    write_quarantine,
)

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


ACTIVITY_COLUMNS = ("lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value")
STAGE_COLUMNS = ("lead_id", "stage", "entered_at")


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
    raw = _read(paths["leads"], "leads", contract)
    leads = _validate_leads(raw, paths["leads"], contract, now_ts)
    leads_seconds = time.perf_counter() - started
    index = _LeadIndex.build(leads.frame, leads.quarantined_ids)
    del raw

    started = time.perf_counter()
    raw = _read(paths["activities"], "activities", contract)
    activities = _validate_activities(raw, paths["activities"], contract, now_ts, index)
    activities_seconds = time.perf_counter() - started
    del raw

    started = time.perf_counter()
    raw = _read(paths["stage_history"], "stage_history", contract)
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
        warnings=empty_table_warnings(tables, contract.mode),
    )
    report.check()
    for warning in report.warnings:
        logger.warning("%s", warning)
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


def _read(path: Path, table: str, contract: Contract) -> pd.DataFrame:
    """Read a table (CSV in the contract's encoding and delimiter); a named index restored by Parquet becomes a
    column again."""
    raw = read_raw_table(
        path, encoding=contract.encoding, delimiter=contract.delimiter, expected=REQUIRED_COLUMNS[table]
    )
    if isinstance(raw.index, pd.RangeIndex) and raw.index.start == 0 and raw.index.step == 1:
        return raw
    named = any(name is not None for name in raw.index.names)
    return raw.reset_index(drop=not named)


def _check_numbers(problems: RowProblems, column: str, raw: pd.Series, values: np.ndarray, invalid: np.ndarray) -> None:
    problems.add_per_value(
        f"{INVALID_NUMBER}:{column}", invalid, raw, lambda v: f"{column} {show_value(v)} is not a number"
    )
    problems.add_per_value(
        f"{NOT_FINITE}:{column}", np.isinf(values), raw, lambda v: f"{column} {show_value(v)} is not a finite number"
    )


def _require(problems: RowProblems, column: str, values: pd.Series) -> np.ndarray:
    """Quarantine rows where a required value is missing; return the mask of present values."""
    present = values.notna().to_numpy()
    problems.add_constant(f"{MISSING}:{column}", ~present, f"{column} is missing")
    return present


def _check_allowed(
    problems: RowProblems,
    kind: str,
    column: str,
    values: pd.Series,
    allowed: Sequence[str],
    expectation: str,
) -> None:
    bad = values.notna().to_numpy() & ~values.isin(list(allowed)).to_numpy()
    problems.add_per_value(kind, bad, values, lambda v: f"{column} {show_value(v)} {expectation}")


def _check_times(
    problems: RowProblems,
    column: str,
    raw: pd.Series,
    times: ParsedTimes,
    tz: str,
    now: pd.Timestamp,
) -> None:
    problems.add_constant(f"{MISSING}:{column}", times.missing, f"{column} is missing")
    problems.add_per_value(
        INVALID_TIMESTAMP, times.invalid, raw, lambda v: f"{column} {show_value(v)} is not a valid timestamp"
    )
    problems.add_per_value(
        NONEXISTENT_TIME,
        times.nonexistent,
        raw,
        lambda v: (
            f"{column} {show_value(v)} does not exist in time zone {tz} (skipped by a daylight-saving change); "
            "write it with a UTC offset"
        ),
    )
    problems.add_per_value(
        AMBIGUOUS_TIME,
        times.ambiguous,
        raw,
        lambda v: (
            f"{column} {show_value(v)} is ambiguous in time zone {tz} (repeated by a daylight-saving change); "
            "write it with a UTC offset"
        ),
    )
    now_value = now.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT).to_datetime64()
    now_text = format_time(now)
    problems.add_per_value(
        FUTURE,
        times.values > now_value,  # NaT compares False
        times.values,
        lambda t: f"{column} {format_time(pd.Timestamp(t))} is in the future (now is {now_text})",
    )


def _resolve_now(now: pd.Timestamp | None) -> pd.Timestamp:
    if now is None:
        return pd.Timestamp.now(tz="UTC").as_unit(TIME_UNIT)
    now = pd.Timestamp(now)
    if now.tz is None:
        raise ValueError(f"now must be time-zone aware (got {now}); pass e.g. pd.Timestamp(..., tz='UTC')")
    return now.tz_convert("UTC").as_unit(TIME_UNIT)


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


def _validate_leads(raw: pd.DataFrame, path: Path, contract: Contract, now: pd.Timestamp) -> TableOutcome:
    _check_columns(raw, path, "leads", contract)
    if len(raw) == 0:
        raise ContractError(f"{path}: the leads table has no rows; a data set needs at least one lead")
    problems = RowProblems(len(raw))

    lead_id = as_str(raw["lead_id"])
    present = _require(problems, "lead_id", lead_id)
    created = parse_times(raw["created_at"], path=path, column="created_at", tz=contract.timezone)
    _check_times(problems, "created_at", raw["created_at"], created, contract.timezone, now)

    columns: dict[str, Any] = {"lead_id": lead_id, "created_at": timestamp_series(created.values)}
    for attribute in contract.attributes:
        name = attribute.name
        if attribute.kind == "categorical":
            columns[name] = as_str(raw[name])
        else:
            values, invalid = parse_numbers(raw[name])
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

    outcome = finish_table(raw, columns, problems)
    rejected_ids = pd.Index(lead_id[problems.bad & present].unique())
    outcome.quarantined_ids = rejected_ids.difference(pd.Index(outcome.frame["lead_id"]))
    return outcome


def _check_lead_refs(problems: RowProblems, lead_id: pd.Series, index: _LeadIndex) -> np.ndarray:
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
            lambda v: f"lead_id {show_value(v)} was quarantined in leads (see leads quarantine)",
        )
        problems.add_per_value(UNKNOWN_LEAD, unresolved[~cascaded], lead_id, lambda v: _unknown_lead_reason(v, index))
    return codes


def _unknown_lead_reason(value: Any, index: _LeadIndex) -> str:
    reason = f"lead_id {show_value(value)} is not in leads"
    stripped = value.strip() if isinstance(value, str) else value
    if stripped != value and stripped in index.accepted:
        reason += f" ({show_value(stripped)} is: remove the spaces around the id in the export)"
    return reason


def _lookup(ids: pd.Index, values: pd.Series) -> np.ndarray:
    """Position of each value in the unique ``ids`` (-1 when absent or missing)."""
    array = arrow_strings(values)
    if array is not None and len(values) and isinstance(ids.dtype, pd.StringDtype):
        value_set = pa.array(ids.tolist(), type=array.type)
        found = pc.index_in(array, value_set=value_set)
        return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    return ids.get_indexer(pd.Index(values))


def _check_after_creation(
    problems: RowProblems, column: str, times: np.ndarray, codes: np.ndarray, index: _LeadIndex
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
            f"{column} {format_time(pd.Timestamp(t))} is before the lead's created_at {format_time(pd.Timestamp(c))}"
            for t, c in zip(times[pos], early_created, strict=True)
        ],
    )


def _check_duplicates(problems: RowProblems, keys: dict[str, Any]) -> None:
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
) -> TableOutcome:
    _check_columns(raw, path, "activities", contract)
    problems = RowProblems(len(raw))

    lead_id = as_str(raw["lead_id"])
    codes = _check_lead_refs(problems, lead_id, index)
    occurred = parse_times(raw["occurred_at"], path=path, column="occurred_at", tz=contract.timezone)
    _check_times(problems, "occurred_at", raw["occurred_at"], occurred, contract.timezone, now)
    _check_after_creation(problems, "occurred_at", occurred.values, codes, index)

    activity_type = as_str(raw["activity_type"])
    _require(problems, "activity_type", activity_type)
    _check_allowed(
        problems,
        UNKNOWN_ACTIVITY_TYPE,
        "activity_type",
        activity_type,
        contract.activity_types,
        f"is not one of {list_names(contract.activity_types)}",
    )
    channel = optional_str(raw, "channel")
    campaign_id = optional_str(raw, "campaign_id")
    topic = optional_str(raw, "topic")
    _check_allowed(
        problems,
        UNKNOWN_TOPIC,
        "topic",
        topic,
        contract.topics,
        f"is not declared in the contract (topics: {list_names(contract.topics)})",
    )
    if "value" in raw.columns:
        value, invalid = parse_numbers(raw["value"])
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
        "occurred_at": timestamp_series(occurred.values),
        "activity_type": activity_type,
        "channel": channel,
        "campaign_id": campaign_id,
        "topic": topic,
        "value": value,
    }
    return finish_table(raw, columns, problems)


def _validate_stage_history(
    raw: pd.DataFrame, path: Path, contract: Contract, now: pd.Timestamp, index: _LeadIndex
) -> TableOutcome:
    _check_columns(raw, path, "stage_history", contract)
    problems = RowProblems(len(raw))

    lead_id = as_str(raw["lead_id"])
    codes = _check_lead_refs(problems, lead_id, index)
    stage = as_str(raw["stage"])
    _require(problems, "stage", stage)
    _check_allowed(
        problems,
        UNKNOWN_STAGE,
        "stage",
        stage,
        contract.stages.order,
        f"is not one of {list_names(contract.stages.order)}",
    )
    entered = parse_times(raw["entered_at"], path=path, column="entered_at", tz=contract.timezone)
    _check_times(problems, "entered_at", raw["entered_at"], entered, contract.timezone, now)
    _check_after_creation(problems, "entered_at", entered.values, codes, index)

    _check_duplicates(problems, {"lead": codes, "time": entered.values.view(np.int64), "stage": stage})
    columns = {"lead_id": lead_id, "stage": stage, "entered_at": timestamp_series(entered.values)}
    return finish_table(raw, columns, problems)
