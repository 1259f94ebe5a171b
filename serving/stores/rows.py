"""Writing a scores frame: validated, JSON-encoded columns and bulk inserts (COPY on PostgreSQL)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NotRequired

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy.engine import Connection
from typing_extensions import TypedDict

from serving.stores.schema import (
    GRADES,
    OPTIONAL_SCORE_COLUMNS,
    REQUIRED_SCORE_COLUMNS,
    TRENDS,
    BatchValidationError,
    StoreError,
    json_dumps,
)

# -- validation of a scores frame -----------------------------------------------------------------
# Storage shapes of the JSON columns: the same constraints as serving.schemas.Prediction, checked with
# TypedDicts because pydantic-core validates those several times faster than models (100,000-row batches).
_Text = Annotated[str, Field(min_length=1)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]


_INSERT_CHUNK = 20_000  # score rows per executemany call (bounds memory of the parameter lists)


class _Reason(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    feature: _Text
    text: _Text
    contribution: _Finite


class _Reasons(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    positive: Annotated[list[_Reason], Field(max_length=20)]
    negative: Annotated[list[_Reason], Field(max_length=20)]
    context: NotRequired[Annotated[list[_Reason], Field(max_length=20)]]
    rest: NotRequired[_Finite]


class _Action(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    action: _Text | None
    label: _Text
    readiness_gain: Annotated[float, Field(ge=-1.0, le=1.0)]
    ci_low: NotRequired[_Finite | None]
    ci_high: NotRequired[_Finite | None]
    segment: NotRequired[_Text | None]
    estimated: NotRequired[bool]


_REASONS = TypeAdapter(list[_Reasons | None])
_ACTIONS = TypeAdapter(list[_Action | None])
_NEEDS = TypeAdapter(list[list[_Text] | None])
_STAGE_PROBS = TypeAdapter(list[dict[_Text, Annotated[float, Field(ge=0.0, le=1.0)]]])
_PROBABILITY_SUM_TOLERANCE = 0.01  # as serving.schemas.Prediction


def _first_bad(frame: pd.DataFrame, mask: np.ndarray, column: str, expected: str) -> BatchValidationError:
    positions = np.flatnonzero(mask)
    i = int(positions[0])
    return BatchValidationError(
        f"scores.{column}: {len(positions)} row(s) are not {expected}; the first is row {i} "
        f"(lead_id {frame['lead_id'].iloc[i]!r}): {frame[column].iloc[i]!r}"
    )


def _json_column(frame: pd.DataFrame, column: str, adapter: TypeAdapter[Any]) -> list[Any]:
    values = frame[column].tolist()
    values = [None if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v in values]
    try:
        validated = adapter.validate_python(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        row = int(err["loc"][0])
        where = ".".join(str(p) for p in err["loc"][1:])
        raise BatchValidationError(
            f"scores.{column}: row {row} (lead_id {frame['lead_id'].iloc[row]!r}) is invalid"
            f"{' at ' + where if where else ''}: {err['msg']} ({exc.error_count()} error(s) in this column)"
        ) from None
    return validated  # type: ignore[no-any-return]


def prepare_rows(frame: pd.DataFrame) -> dict[str, list[Any]]:
    """Validate a scores frame and return its columns as plain Python lists."""
    missing = [c for c in REQUIRED_SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise BatchValidationError(f"scores frame lacks required columns {missing}")
    unknown = sorted(set(frame.columns) - set(REQUIRED_SCORE_COLUMNS) - set(OPTIONAL_SCORE_COLUMNS))
    if unknown:
        raise BatchValidationError(
            f"scores frame has columns the store does not keep {unknown}; allowed: "
            f"{[*REQUIRED_SCORE_COLUMNS, *OPTIONAL_SCORE_COLUMNS]}"
        )
    if len(frame) == 0:
        raise BatchValidationError("scores frame is empty: a batch needs at least one lead")
    frame = frame.reset_index(drop=True)

    ids = frame["lead_id"]
    bad = ids.isna().to_numpy() | ~np.array([isinstance(v, str) and 0 < len(v) <= 128 for v in ids], dtype=bool)
    if bad.any():
        raise _first_bad(frame, bad, "lead_id", "non-empty strings of at most 128 characters")
    dup = ids.duplicated(keep="first").to_numpy()
    if dup.any():
        raise _first_bad(frame, dup, "lead_id", "unique (a lead appears twice in the batch)")

    readiness = pd.to_numeric(frame["readiness"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(readiness) | (readiness < 0) | (readiness > 1)
    if bad.any():
        raise _first_bad(frame, bad, "readiness", "probabilities in [0, 1]")

    score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(score) | (score < 0) | (score > 100) | (score != np.round(score))
    if bad.any():
        raise _first_bad(frame, bad, "score", "whole numbers in 0..100")

    for column, allowed in (("grade", GRADES), ("trend", TRENDS)):
        bad = ~frame[column].isin(allowed).to_numpy()
        if bad.any():
            raise _first_bad(frame, bad, column, f"one of {list(allowed)}")

    handoff = frame["handoff"]
    bad = ~np.array([isinstance(v, bool | np.bool_) for v in handoff], dtype=bool)
    if bad.any():
        raise _first_bad(frame, bad, "handoff", "booleans")

    for column, limit in (("stage", 64), ("handoff_rule", 10_000)):
        nullable = column == "stage"
        bad = ~np.array(
            [(nullable and v is None) or (isinstance(v, str) and 0 < len(v) <= limit) for v in frame[column]],
            dtype=bool,
        )
        if bad.any():
            raise _first_bad(frame, bad, column, f"non-empty strings of at most {limit} characters")

    n = len(frame)
    cols: dict[str, list[Any]] = {
        "lead_id": ids.tolist(),
        "readiness": readiness.tolist(),
        "score": score.astype(np.int64).tolist(),
        "grade": frame["grade"].tolist(),
        "stage": frame["stage"].tolist(),
        "trend": frame["trend"].tolist(),
        "handoff": [bool(v) for v in handoff],
        "handoff_rule": frame["handoff_rule"].tolist(),
        "stage_probabilities": _json_column(frame, "stage_probabilities", _STAGE_PROBS),
    }
    for column, adapter in (("reasons", _REASONS), ("needs", _NEEDS), ("next_best_action", _ACTIONS)):
        cols[column] = _json_column(frame, column, adapter) if column in frame.columns else [None] * n
    _check_json_semantics(cols)
    missing_stage = [
        i
        for i, (s, p) in enumerate(zip(cols["stage"], cols["stage_probabilities"], strict=True))
        if (s is None and p) or (s is not None and s not in p)
    ]
    if missing_stage:
        i = missing_stage[0]
        raise BatchValidationError(
            f"scores.stage_probabilities: {len(missing_stage)} row(s) have no probability for their stage; the first "
            f"is row {i} (lead_id {cols['lead_id'][i]!r}, stage {cols['stage'][i]!r})"
        )
    return cols


def _check_json_semantics(cols: dict[str, list[Any]]) -> None:
    """What the TypedDicts cannot express: reason signs and probabilities that sum to one."""
    for i, probs in enumerate(cols["stage_probabilities"]):
        total = sum(probs.values())
        if not probs and cols["stage"][i] is None:
            continue  # a model without a stage model
        if not probs or abs(total - 1.0) > _PROBABILITY_SUM_TOLERANCE:
            raise BatchValidationError(
                f"scores.stage_probabilities: row {i} (lead_id {cols['lead_id'][i]!r}) does not sum to 1 "
                f"(sum {total:.4f})"
            )
    for i, reasons in enumerate(cols["reasons"]):
        if reasons is None:
            continue
        if any(r["contribution"] < 0 for r in reasons["positive"]) or any(
            r["contribution"] > 0 for r in reasons["negative"]
        ):
            raise BatchValidationError(
                f"scores.reasons: row {i} (lead_id {cols['lead_id'][i]!r}) has a positive reason with a negative "
                "contribution or a negative reason with a positive one"
            )


def require_aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


_JSON_COLUMNS = frozenset({"stage_probabilities", "reasons", "needs", "next_best_action"})


def insert_many(conn: Connection, table: sa.Table, names: Sequence[str], columns: Sequence[list[Any]]) -> None:
    """Insert column-wise data with the driver's executemany.

    SQLAlchemy's per-row parameter processing costs more than SQLite's own insert work at 100,000 rows,
    so JSON values are serialised here and plain tuples go straight to the driver (one statement per
    chunk). Drivers with an unusual parameter style take the ordinary Core path.
    """
    dialect = conn.dialect
    placeholder = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
    n = len(columns[0]) if columns else 0
    json_idx = [i for i, name in enumerate(names) if name in _JSON_COLUMNS]
    for start in range(0, n, _INSERT_CHUNK):
        part = [list(c[start : start + _INSERT_CHUNK]) for c in columns]
        for i in json_idx:
            part[i] = [None if v is None else json_dumps(v) for v in part[i]]
        if dialect.name == "postgresql" and dialect.driver == "psycopg":
            _copy_rows(conn, table.name, names, zip(*part, strict=True))
            continue
        if placeholder is None:
            text_table = sa.table(table.name, *(sa.column(name) for name in names))
            conn.execute(text_table.insert(), [dict(zip(names, row, strict=True)) for row in zip(*part, strict=True)])
            continue
        quote = dialect.identifier_preparer.quote
        values = ", ".join(
            placeholder if name not in _JSON_COLUMNS or dialect.name == "sqlite" else f"CAST({placeholder} AS JSON)"
            for name in names
        )
        sql = f"INSERT INTO {quote(table.name)} ({', '.join(quote(name) for name in names)}) VALUES ({values})"
        conn.exec_driver_sql(sql, list(zip(*part, strict=True)))


def _copy_rows(conn: Connection, table: str, names: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """PostgreSQL + psycopg 3: COPY is several times faster than executemany, in the same transaction."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    quote = conn.dialect.identifier_preparer.quote
    with cursor.copy(f"COPY {quote(table)} ({', '.join(quote(n) for n in names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def as_utc(value: datetime | str) -> datetime:
    """An aggregate's datetime (SQLite may hand back text), as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def insert_returning_id(conn: Connection, table: sa.Table, values: Mapping[str, Any]) -> int:
    """Insert one row and return its generated primary key."""
    key = conn.execute(table.insert().values(**values)).inserted_primary_key
    if key is None or key[0] is None:
        raise StoreError("the database did not return the id of the inserted row")
    return int(key[0])


def chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
