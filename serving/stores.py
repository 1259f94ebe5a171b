"""Durable stores for batch scores, handoffs and sales feedback (SQLAlchemy 2 Core).

One database holds everything the serving side writes. SQLite is the default (a file in the project
home, :func:`default_store_url`); any SQLAlchemy URL works (PostgreSQL is tested).

Tables
------
- ``score_batches``: one row per scoring run (model name/version, policy version, ``scored_at``, ``as_of``,
  row counts, free-form JSON ``details``). ``batch_id`` grows with every batch.
- ``scores``: one row per (batch, lead) with readiness, score, grade, stage and stage probabilities,
  reasons / needs / next-best action (JSON), trend and the handoff decision. All batches are kept, so a
  trend can compare with the lead's previous score.
- ``current_batch``: a single pointer row naming the batch readers see.
- ``handoffs``: one row per handoff event (``handoff_id``, lead, batch, ``handed_off_at`` = the batch's
  ``scored_at``); drives cool-downs and weekly capacity.
- ``feedback``: sales' verdict on a handoff, unique per (lead, handoff).
- ``schema_version``: the schema version of this database, so later versions can migrate it.

Atomic batches
--------------
:meth:`ScoreStore.write_batch` inserts the batch row, its handoffs and all its scores, then moves the
``current_batch`` pointer, all in ONE transaction. Readers either resolve the pointer to the old batch or
to the new one; the new batch's rows are invisible until the commit, and a failed write rolls back
completely, leaving the old batch current. Committed batches are never modified, so a reader that has
resolved a batch id can run several statements against it consistently. On SQLite the database runs in
WAL mode, so readers are never blocked by a writer (and vice versa).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool
from typing_extensions import TypedDict

from serving.schemas import FEEDBACK_OUTCOMES, MAX_FEEDBACK_TEXT, REASON_CODE_PATTERN

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_DB_NAME = "leadscore.db"
_CHUNK = 1_000  # ids per IN (...) query: well below SQLite's variable limit, small enough for PostgreSQL plans
_INSERT_CHUNK = 20_000  # score rows per executemany call (bounds memory of the parameter lists)
_WHOLE_BATCH_THRESHOLD = 5_000  # previous_scores: above this many ids, scan the newest batch once
GRADES = ("A", "B", "C", "D")
TRENDS = ("improving", "steady", "declining", "new")

# Columns of a scores frame passed to write_batch; the optional ones default to null.
REQUIRED_SCORE_COLUMNS = (
    "lead_id",
    "readiness",
    "score",
    "grade",
    "stage",
    "stage_probabilities",
    "trend",
    "handoff",
    "handoff_rule",
)
OPTIONAL_SCORE_COLUMNS = ("reasons", "needs", "next_best_action")
# Columns of the export (ScoreStore.current_frame / export_current); JSON fields are JSON text.
EXPORT_COLUMNS = (
    "lead_id", "readiness", "score", "grade", "stage", "stage_probabilities", "reasons", "needs",
    "next_best_action", "trend", "handoff", "handoff_rule", "handoff_id", "model_name", "model_version",
    "policy_version", "scored_at", "as_of", "batch_id",
)  # fmt: skip


class StoreError(RuntimeError):
    """A store operation failed or the database is not usable by this version of leadscore."""


class SchemaVersionError(StoreError):
    """The database was created by an incompatible version of leadscore."""


class BatchValidationError(StoreError, ValueError):
    """A scores frame handed to :meth:`ScoreStore.write_batch` is invalid (nothing was written)."""


class UnknownHandoffError(StoreError, LookupError):
    """Feedback names a handoff that does not exist for that lead."""


class FeedbackConflictError(StoreError):
    """Different feedback was already recorded for the same (lead, handoff)."""


class NoCurrentBatchError(StoreError, LookupError):
    """No batch has been written yet."""


# -- schema ----------------------------------------------------------------------------------------
class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware datetimes in, UTC datetimes out, on every backend.

    SQLite has no time zone support, so values are stored there as naive UTC; naive input is refused
    everywhere rather than guessed.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass a timezone-aware time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_JSON = sa.JSON(none_as_null=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

schema_version_table = sa.Table(
    "schema_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.CheckConstraint("id = 1", name="single_row"),
)

batches_table = sa.Table(
    "score_batches",
    metadata,
    sa.Column("batch_id", _ID, primary_key=True, autoincrement=True),
    sa.Column("scored_at", UTCDateTime, nullable=False, index=True),
    sa.Column("as_of", UTCDateTime, nullable=False),
    sa.Column("model_name", sa.String(255), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("policy_version", sa.String(64), nullable=False),
    sa.Column("n_scores", sa.Integer, nullable=False),
    sa.Column("n_handoffs", sa.Integer, nullable=False),
    sa.Column("details", _JSON, nullable=True),
)

current_batch_table = sa.Table(
    "current_batch",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("batch_id", _ID, sa.ForeignKey("score_batches.batch_id"), nullable=True),
    sa.Column("updated_at", UTCDateTime, nullable=True),
    sa.CheckConstraint("id = 1", name="single_row"),
)

handoffs_table = sa.Table(
    "handoffs",
    metadata,
    sa.Column("handoff_id", sa.String(64), primary_key=True),
    sa.Column("lead_id", sa.String(128), nullable=False),
    sa.Column("batch_id", _ID, sa.ForeignKey("score_batches.batch_id"), nullable=False),
    sa.Column("handed_off_at", UTCDateTime, nullable=False, index=True),
    sa.Index(None, "lead_id", "handed_off_at"),
)

scores_table = sa.Table(
    "scores",
    metadata,
    sa.Column("batch_id", _ID, sa.ForeignKey("score_batches.batch_id"), primary_key=True),
    sa.Column("lead_id", sa.String(128), primary_key=True),
    sa.Column("readiness", sa.Float, nullable=False),
    sa.Column("score", sa.Integer, nullable=False),
    sa.Column("grade", sa.String(1), nullable=False),
    # null only for models without a stage model (data without conversion times)
    sa.Column("stage", sa.String(64), nullable=True),
    sa.Column("stage_probabilities", _JSON, nullable=False),
    sa.Column("reasons", _JSON, nullable=True),
    sa.Column("needs", _JSON, nullable=True),
    sa.Column("next_best_action", _JSON, nullable=True),
    sa.Column("trend", sa.String(16), nullable=False),
    sa.Column("handoff", sa.Boolean, nullable=False),
    sa.Column("handoff_rule", sa.Text, nullable=False),
    sa.Column("handoff_id", sa.String(64), sa.ForeignKey("handoffs.handoff_id"), nullable=True),
    sa.CheckConstraint("readiness >= 0 AND readiness <= 1", name="readiness_range"),
    sa.CheckConstraint("score >= 0 AND score <= 100", name="score_range"),
    sa.CheckConstraint("grade IN ('A', 'B', 'C', 'D')", name="grade_known"),
    sa.CheckConstraint("trend IN ('improving', 'steady', 'declining', 'new')", name="trend_known"),
    sa.CheckConstraint(
        "(handoff AND handoff_id IS NOT NULL) OR (NOT handoff AND handoff_id IS NULL)", name="handoff_id_iff_handoff"
    ),
    sa.Index(None, "lead_id", "batch_id"),
    sa.Index(None, "batch_id", "handoff", "readiness"),
)

feedback_table = sa.Table(
    "feedback",
    metadata,
    sa.Column("feedback_id", _ID, primary_key=True, autoincrement=True),
    sa.Column("lead_id", sa.String(128), nullable=False),
    sa.Column("handoff_id", sa.String(64), sa.ForeignKey("handoffs.handoff_id"), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("reason_code", sa.String(64), nullable=True),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.UniqueConstraint("lead_id", "handoff_id"),
    sa.CheckConstraint("outcome IN ('accepted', 'rejected')", name="outcome_known"),
)


_STATE_TOKEN = sa.select(sa.func.max(batches_table.c.batch_id))  # ScoreStore.state_token


# -- records ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchInfo:
    """A written batch."""

    batch_id: int
    scored_at: datetime
    as_of: datetime
    model_name: str
    model_version: str
    policy_version: str
    n_scores: int
    n_handoffs: int
    details: dict[str, Any] | None = None


@dataclass(frozen=True)
class ScoreRecord:
    """One stored score (field names match ``serving.schemas.Prediction.from_record``)."""

    lead_id: str
    readiness: float
    score: int
    grade: str
    stage: str | None
    stage_probabilities: dict[str, float]
    reasons: dict[str, Any] | None
    needs: list[str] | None
    next_best_action: dict[str, Any] | None
    trend: str
    handoff: bool
    handoff_rule: str
    handoff_id: str | None
    batch_id: int
    is_current: bool
    model_name: str
    model_version: str
    policy_version: str
    scored_at: datetime
    as_of: datetime


@dataclass(frozen=True)
class PreviousScore:
    """A lead's most recent stored score (input to trends)."""

    score: int
    readiness: float
    grade: str
    scored_at: datetime
    batch_id: int


@dataclass(frozen=True)
class HandoffPage:
    """One page of the current handoff queue."""

    items: list[ScoreRecord]
    total: int
    limit: int
    offset: int
    batch: BatchInfo | None


@dataclass(frozen=True)
class FeedbackRecord:
    """Stored feedback; ``created`` is False when an identical earlier record was returned instead."""

    feedback_id: int
    lead_id: str
    handoff_id: str
    outcome: str
    reason_code: str | None
    text: str | None
    recorded_at: datetime
    created: bool


# -- engine ----------------------------------------------------------------------------------------
def default_store_url(home: str | Path) -> str:
    """The default store: a SQLite file in the project home."""
    return f"sqlite:///{Path(home).expanduser().resolve() / DEFAULT_DB_NAME}"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json_dumps(value: Any) -> str:
    # orjson is ~10x faster than json for the 100,000-row batch writes; output is the same compact JSON.
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def _create_engine(url: str | sa.URL, echo: bool = False) -> Engine:
    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {"json_serializer": _json_dumps, "echo": echo}
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, pool_pre_ping=True, **kwargs)

    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if in_memory:
        kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs.update(connect_args={"timeout": 30.0})
    engine = sa.create_engine(parsed, **kwargs)

    @sa.event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from the sqlite3 module (it would not BEGIN before SELECTs,
        # breaking read snapshots), then turn on what this store relies on.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 30000")
        if not in_memory:
            # WAL: readers see the last committed state and are never blocked by a writer.
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        # A writer takes the write lock up front, so two writers queue instead of failing to upgrade.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("leadscore_write") else "BEGIN")

    return engine


# -- validation of a scores frame -----------------------------------------------------------------
# Storage shapes of the JSON columns: the same constraints as serving.schemas.Prediction, checked with
# TypedDicts because pydantic-core validates those several times faster than models (100,000-row batches).
_Text = Annotated[str, Field(min_length=1)]
_Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Reason(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    feature: _Text
    text: _Text
    contribution: _Finite


class _Reasons(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    positive: Annotated[list[_Reason], Field(max_length=20)]
    negative: Annotated[list[_Reason], Field(max_length=20)]


class _Action(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    action: _Text
    label: _Text
    readiness_gain: Annotated[float, Field(ge=-1.0, le=1.0)]


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


def _prepare_rows(frame: pd.DataFrame) -> dict[str, list[Any]]:
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


def _aware(value: datetime, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (got naive {value.isoformat()})")
    return value.astimezone(UTC)


_JSON_COLUMNS = frozenset({"stage_probabilities", "reasons", "needs", "next_best_action"})


def _insert_many(conn: Connection, table: sa.Table, names: Sequence[str], columns: Sequence[list[Any]]) -> None:
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
            part[i] = [None if v is None else _json_dumps(v) for v in part[i]]
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


def _as_utc(value: datetime | str) -> datetime:
    """An aggregate's datetime (SQLite may hand back text), as an aware UTC datetime."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _new_id(result: sa.CursorResult[Any]) -> int:
    """The generated primary key of a single-row INSERT."""
    key = result.inserted_primary_key
    if key is None or key[0] is None:
        raise StoreError("the database did not return the id of the inserted row")
    return int(key[0])


def _chunks(values: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# -- the store -------------------------------------------------------------------------------------
class ScoreStore:
    """Scores, the handoff queue and feedback in one SQL database.

    Thread-safe: every method checks a connection out of the engine's pool for its own use. Create one
    per process and share it. (An in-memory SQLite URL, ``sqlite://``, shares one connection and is meant
    for single-threaded tests only.)

    Args:
        url: a SQLAlchemy URL (``sqlite:///path/leadscore.db``, ``postgresql+psycopg://user@host/db``).
        echo: log SQL statements (debugging).
    """

    def __init__(self, url: str | sa.URL, *, echo: bool = False) -> None:
        self.url = sa.make_url(url)
        self._engine = _create_engine(self.url, echo=echo)
        self._writer = self._engine.execution_options(leadscore_write=True)
        self._postgres = self._engine.dialect.name == "postgresql"
        self._ensure_schema()

    def __repr__(self) -> str:
        return f"ScoreStore({self.url.render_as_string(hide_password=True)!r})"

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Release pooled connections."""
        self._engine.dispose()

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- transactions --------------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[Connection]:
        """A read transaction; ``snapshot=True`` makes all its statements see the same committed state.

        Single statements are always consistent, and readers that pin a batch id need no snapshot
        (committed batches never change), so only multi-statement reads across batches ask for one.
        On SQLite every transaction is a snapshot (WAL); on PostgreSQL it costs REPEATABLE READ.
        """
        with self._engine.connect() as conn:
            if snapshot and self._postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn

    # -- schema ---------------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        try:
            metadata.create_all(self._engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process may have created the tables between the check and the CREATE; if so the
            # second attempt finds them, otherwise it raises the real problem.
            metadata.create_all(self._engine, checkfirst=True)
        with self._read() as conn:
            found = conn.execute(sa.select(schema_version_table.c.version)).scalar()
        if found is None:
            # A new database. Opening an existing one never takes the write lock, so a service can start
            # while a batch is being written.
            try:
                with self._write() as conn:
                    found = conn.execute(sa.select(schema_version_table.c.version)).scalar()
                    if found is None:
                        now = datetime.now(UTC)
                        conn.execute(schema_version_table.insert().values(id=1, version=SCHEMA_VERSION, created_at=now))
                        conn.execute(current_batch_table.insert().values(id=1, batch_id=None, updated_at=None))
                        return
            except sa.exc.IntegrityError:
                # Another process initialised the database at the same moment; use its rows.
                with self._read() as conn:
                    found = conn.execute(sa.select(schema_version_table.c.version)).scalar_one()
        found = int(found)
        if found != SCHEMA_VERSION:
            where = self.url.render_as_string(hide_password=True)
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{where}: store schema version {found} is newer than this leadscore supports "
                    f"({SCHEMA_VERSION}); upgrade leadscore"
                )
            raise SchemaVersionError(
                f"{where}: store schema version {found} is older than {SCHEMA_VERSION} and no migration exists; "
                "export what you need and point the store at a new database"
            )

    def schema_version(self) -> int:
        with self._read() as conn:
            return int(conn.execute(sa.select(schema_version_table.c.version)).scalar_one())

    # -- writing a batch ------------------------------------------------------------------------
    def write_batch(
        self,
        scores: pd.DataFrame,
        *,
        model_name: str,
        model_version: str,
        policy_version: str,
        as_of: datetime,
        scored_at: datetime | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> BatchInfo:
        """Write a scored batch and make it current, atomically.

        ``scores`` has one row per lead with the columns :data:`REQUIRED_SCORE_COLUMNS` (and optionally
        :data:`OPTIONAL_SCORE_COLUMNS`): ``lead_id`` (str, unique), ``readiness`` (float in [0, 1]),
        ``score`` (whole number 0..100), ``grade`` (A-D), ``stage`` (str), ``stage_probabilities`` (dict
        stage -> probability, containing ``stage``), ``trend``, ``handoff`` (bool), ``handoff_rule`` (str),
        ``reasons`` ({"positive": [...], "negative": [...]} or None), ``needs`` (list of str or None),
        ``next_best_action`` ({"action", "label", "readiness_gain"} or None). Every handed-off row gets a
        new ``handoff_id``; its handoff time is ``scored_at``.

        Everything is validated before anything is written; invalid input raises
        :class:`BatchValidationError` naming the column, row and lead, and the current batch is unchanged.
        """
        scored_at = _aware(scored_at or datetime.now(UTC), "scored_at")
        as_of = _aware(as_of, "as_of")
        for what, value, limit in (
            ("model_name", model_name, 255),
            ("model_version", model_version, 64),
            ("policy_version", policy_version, 64),
        ):
            if not isinstance(value, str) or not 0 < len(value) <= limit:
                raise BatchValidationError(f"{what} must be a non-empty string of at most {limit} characters")
        cols = _prepare_rows(scores)
        n = len(cols["lead_id"])
        handoff_ids = [uuid.uuid4().hex if h else None for h in cols["handoff"]]
        n_handoffs = sum(1 for h in handoff_ids if h is not None)
        detail_dict = dict(details) if details is not None else None
        cols["handoff_id"] = handoff_ids
        names = ["batch_id", *cols]

        with self._write() as conn:
            batch_id = _new_id(
                conn.execute(
                    batches_table.insert().values(
                        scored_at=scored_at,
                        as_of=as_of,
                        model_name=model_name,
                        model_version=model_version,
                        policy_version=policy_version,
                        n_scores=n,
                        n_handoffs=n_handoffs,
                        details=detail_dict,
                    )
                )
            )
            cols["batch_id"] = [batch_id] * n
            if n_handoffs:
                conn.execute(
                    handoffs_table.insert(),
                    [
                        {"handoff_id": h, "lead_id": lead, "batch_id": batch_id, "handed_off_at": scored_at}
                        for h, lead in zip(handoff_ids, cols["lead_id"], strict=True)
                        if h is not None
                    ],
                )
            _insert_many(conn, scores_table, names, [cols[c] for c in names])
            self._make_current(conn, batch_id, scored_at)
        log.info(
            "score batch %d written: %d leads, %d handoffs (model %s v%s)",
            batch_id,
            n,
            n_handoffs,
            model_name,
            model_version,
        )
        return BatchInfo(
            batch_id=batch_id,
            scored_at=scored_at,
            as_of=as_of,
            model_name=model_name,
            model_version=model_version,
            policy_version=policy_version,
            n_scores=n,
            n_handoffs=n_handoffs,
            details=detail_dict,
        )

    def _make_current(self, conn: Connection, batch_id: int, when: datetime) -> None:
        conn.execute(
            current_batch_table.update().where(current_batch_table.c.id == 1).values(batch_id=batch_id, updated_at=when)
        )

    # -- reading --------------------------------------------------------------------------------
    def _current_id(self, conn: Connection) -> int | None:
        value = conn.execute(sa.select(current_batch_table.c.batch_id).where(current_batch_table.c.id == 1)).scalar()
        return None if value is None else int(value)

    @staticmethod
    def _batch_from_row(row: Any) -> BatchInfo:
        return BatchInfo(
            batch_id=int(row.batch_id),
            scored_at=row.scored_at,
            as_of=row.as_of,
            model_name=row.model_name,
            model_version=row.model_version,
            policy_version=row.policy_version,
            n_scores=int(row.n_scores),
            n_handoffs=int(row.n_handoffs),
            details=row.details,
        )

    def current_batch(self) -> BatchInfo | None:
        """The batch readers currently see (None before the first batch)."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(batches_table).join(
                    current_batch_table, current_batch_table.c.batch_id == batches_table.c.batch_id
                )
            ).first()
            return None if row is None else self._batch_from_row(row)

    def state_token(self) -> int:
        """The newest batch id (0 before the first batch): changes whenever trend or cool-down facts can.

        :meth:`previous_scores` and :meth:`last_handoff_times` only change when :meth:`write_batch` commits
        (it inserts a new batch with its handoffs; batches are append-only and feedback records no
        handoff), and every committed write gets a larger batch id. So facts read after seeing token ``t``
        stay valid while the token is still ``t``: the scoring service caches them on it. One indexed
        single-statement read, no snapshot needed.
        """
        with self._engine.connect() as conn:
            value = conn.execute(_STATE_TOKEN).scalar()
        return 0 if value is None else int(value)

    def batches(self, limit: int = 20) -> list[BatchInfo]:
        """The most recent batches, newest first."""
        with self._read() as conn:
            rows = conn.execute(sa.select(batches_table).order_by(batches_table.c.batch_id.desc()).limit(limit))
            return [self._batch_from_row(r) for r in rows]

    def _score_select(self) -> sa.Select[Any]:
        s, b, cur = scores_table, batches_table, current_batch_table
        return (
            sa.select(
                s,
                (s.c.batch_id == sa.func.coalesce(cur.c.batch_id, -1)).label("is_current"),
                b.c.model_name,
                b.c.model_version,
                b.c.policy_version,
                b.c.scored_at,
                b.c.as_of,
            )
            .join(b, b.c.batch_id == s.c.batch_id)
            .join(cur, cur.c.id == 1)
        )

    @staticmethod
    def _record(row: Any) -> ScoreRecord:
        return ScoreRecord(
            lead_id=row.lead_id,
            readiness=float(row.readiness),
            score=int(row.score),
            grade=row.grade,
            stage=row.stage,
            stage_probabilities=row.stage_probabilities,
            reasons=row.reasons,
            needs=row.needs,
            next_best_action=row.next_best_action,
            trend=row.trend,
            handoff=bool(row.handoff),
            handoff_rule=row.handoff_rule,
            handoff_id=row.handoff_id,
            batch_id=int(row.batch_id),
            is_current=bool(row.is_current),
            model_name=row.model_name,
            model_version=row.model_version,
            policy_version=row.policy_version,
            scored_at=row.scored_at,
            as_of=row.as_of,
        )

    def latest_score(self, lead_id: str) -> ScoreRecord | None:
        """The lead's most recent batch score (``is_current`` tells whether it is in the current batch).

        A lead missing from the current batch (closed since, or not yet open then) keeps its last score.
        """
        with self._read() as conn:
            row = conn.execute(
                self._score_select()
                .where(scores_table.c.lead_id == lead_id)
                .order_by(scores_table.c.batch_id.desc())
                .limit(1)
            ).first()
            return None if row is None else self._record(row)

    def previous_scores(self, lead_ids: Iterable[str]) -> dict[str, PreviousScore]:
        """Each lead's most recent stored score (call before writing the new batch, for trends).

        Leads never scored are absent from the result.
        """
        ids = list(dict.fromkeys(lead_ids))
        s, b = scores_table, batches_table
        columns = (s.c.lead_id, s.c.score, s.c.readiness, s.c.grade, s.c.batch_id)
        found: list[tuple[Any, ...]] = []
        with self._read(snapshot=True) as conn:
            remaining = ids
            if len(ids) > _WHOLE_BATCH_THRESHOLD:
                # Most leads were in the newest batch: read it in one pass, then look up the rest by id.
                newest = sa.select(sa.func.max(b.c.batch_id)).scalar_subquery()
                wanted = set(ids)
                found = [r for r in conn.execute(sa.select(*columns).where(s.c.batch_id == newest)) if r[0] in wanted]
                seen = {r[0] for r in found}
                remaining = [i for i in ids if i not in seen]
            for chunk in _chunks(remaining, _CHUNK):
                latest = (
                    sa.select(s.c.lead_id, sa.func.max(s.c.batch_id).label("batch_id"))
                    .where(s.c.lead_id.in_(chunk))
                    .group_by(s.c.lead_id)
                    .subquery()
                )
                query = sa.select(*columns).join(
                    latest, sa.and_(latest.c.lead_id == s.c.lead_id, latest.c.batch_id == s.c.batch_id)
                )
                found.extend(conn.execute(query))
            batch_ids = {r[4] for r in found}
            scored_at = {
                int(bid): at
                for bid, at in conn.execute(
                    sa.select(b.c.batch_id, b.c.scored_at).where(b.c.batch_id.in_(sorted(batch_ids)))
                )
            }
        return {
            lead: PreviousScore(
                score=int(score),
                readiness=float(readiness),
                grade=grade,
                scored_at=scored_at[int(bid)],
                batch_id=int(bid),
            )
            for lead, score, readiness, grade, bid in found
        }

    def handoff_queue(self, limit: int = 50, offset: int = 0) -> HandoffPage:
        """Handed-off leads of the current batch, best (highest readiness, then lead_id) first."""
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0, got limit={limit}, offset={offset}")
        s = scores_table
        with self._read() as conn:
            batch_id = self._current_id(conn)
            if batch_id is None:
                return HandoffPage(items=[], total=0, limit=limit, offset=offset, batch=None)
            # The batch is immutable once committed, so pinning its id keeps the page and the total consistent.
            batch = self._batch_from_row(
                conn.execute(sa.select(batches_table).where(batches_table.c.batch_id == batch_id)).one()
            )
            rows = conn.execute(
                self._score_select()
                .where(s.c.batch_id == batch_id, s.c.handoff.is_(True))
                .order_by(s.c.readiness.desc(), s.c.lead_id.asc())
                .limit(limit)
                .offset(offset)
            )
            items = [self._record(r) for r in rows]
        return HandoffPage(items=items, total=batch.n_handoffs, limit=limit, offset=offset, batch=batch)

    def last_handoff_times(self, lead_ids: Iterable[str], since: datetime | None = None) -> dict[str, datetime]:
        """Each lead's latest handoff time; leads never handed off (at or after ``since``) are absent.

        For the cool-down only recent handoffs matter: pass ``since = now - cooldown_days`` and a large
        batch is answered from one scan of the recent handoffs instead of one lookup per lead.
        """
        ids = list(dict.fromkeys(lead_ids))
        h = handoffs_table
        latest = sa.select(h.c.lead_id, sa.func.max(h.c.handed_off_at).label("at")).group_by(h.c.lead_id)
        if since is not None:
            latest = latest.where(h.c.handed_off_at >= _aware(since, "since"))
        found: list[tuple[str, datetime]] = []
        with self._read() as conn:
            if since is not None and len(ids) > _WHOLE_BATCH_THRESHOLD:
                wanted = set(ids)
                found = [(lead, at) for lead, at in conn.execute(latest) if lead in wanted]
            else:
                for chunk in _chunks(ids, _CHUNK):
                    found.extend(conn.execute(latest.where(h.c.lead_id.in_(chunk))))
        return {lead: _as_utc(at) for lead, at in found}

    def count_handoffs_since(self, since: datetime) -> int:
        """Handoffs made at or after ``since`` (capacity mode: pass ``policy.week_start(now)``)."""
        since = _aware(since, "since")
        with self._read() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count())
                    .select_from(handoffs_table)
                    .where(handoffs_table.c.handed_off_at >= since)
                ).scalar_one()
            )

    # -- feedback -------------------------------------------------------------------------------
    def record_feedback(
        self,
        lead_id: str,
        handoff_id: str,
        outcome: str,
        reason_code: str | None = None,
        text: str | None = None,
        *,
        recorded_at: datetime | None = None,
    ) -> FeedbackRecord:
        """Store sales' verdict on a handoff, durably and idempotently per (lead, handoff).

        The same feedback twice stores one row and returns it (``created=False`` the second time).

        Raises:
            ValueError: invalid outcome, reason code or text.
            UnknownHandoffError: no such handoff for this lead.
            FeedbackConflictError: different feedback is already recorded for this handoff.
        """
        import re

        if outcome not in FEEDBACK_OUTCOMES:
            raise ValueError(f"outcome must be one of {list(FEEDBACK_OUTCOMES)}, got {outcome!r}")
        if reason_code is not None and not re.match(REASON_CODE_PATTERN, reason_code):
            raise ValueError(f"reason_code must match {REASON_CODE_PATTERN}, got {reason_code!r}")
        if text is not None and len(text) > MAX_FEEDBACK_TEXT:
            raise ValueError(f"text is {len(text)} characters; at most {MAX_FEEDBACK_TEXT} are kept")
        when = _aware(recorded_at or datetime.now(UTC), "recorded_at")
        wanted = {"outcome": outcome, "reason_code": reason_code, "text": text}
        f = feedback_table
        try:
            with self._write() as conn:
                owner = conn.execute(
                    sa.select(handoffs_table.c.lead_id).where(handoffs_table.c.handoff_id == handoff_id)
                ).scalar()
                if owner != lead_id:
                    raise UnknownHandoffError(f"lead {lead_id!r} has no handoff {handoff_id!r}")
                existing = conn.execute(
                    sa.select(f).where(f.c.lead_id == lead_id, f.c.handoff_id == handoff_id)
                ).first()
                if existing is not None:
                    return self._replayed(existing, wanted)
                feedback_id = _new_id(
                    conn.execute(
                        f.insert().values(
                            lead_id=lead_id,
                            handoff_id=handoff_id,
                            recorded_at=when,
                            outcome=outcome,
                            reason_code=reason_code,
                            text=text,
                        )
                    )
                )
        except sa.exc.IntegrityError:
            # A concurrent identical request won the race (PostgreSQL); answer like a replay.
            with self._read() as conn:
                existing = conn.execute(
                    sa.select(f).where(f.c.lead_id == lead_id, f.c.handoff_id == handoff_id)
                ).first()
            if existing is None:
                raise
            return self._replayed(existing, wanted)
        log.info("feedback %d recorded: lead %s handoff %s %s", feedback_id, lead_id, handoff_id, outcome)
        return FeedbackRecord(
            feedback_id=feedback_id,
            lead_id=lead_id,
            handoff_id=handoff_id,
            outcome=outcome,
            reason_code=reason_code,
            text=text,
            recorded_at=when,
            created=True,
        )

    @staticmethod
    def _feedback(row: Any, created: bool) -> FeedbackRecord:
        return FeedbackRecord(
            feedback_id=int(row.feedback_id),
            lead_id=row.lead_id,
            handoff_id=row.handoff_id,
            outcome=row.outcome,
            reason_code=row.reason_code,
            text=row.text,
            recorded_at=row.recorded_at,
            created=created,
        )

    def _replayed(self, existing: Any, wanted: Mapping[str, Any]) -> FeedbackRecord:
        differing = [k for k, v in wanted.items() if getattr(existing, k) != v]
        if differing:
            raise FeedbackConflictError(
                f"feedback for lead {existing.lead_id!r}, handoff {existing.handoff_id!r} was already recorded "
                f"at {existing.recorded_at.isoformat()} as outcome={existing.outcome!r}, "
                f"reason_code={existing.reason_code!r}; the new request differs in {differing} and was not stored"
            )
        return self._feedback(existing, created=False)

    def feedback_for(self, lead_id: str) -> list[FeedbackRecord]:
        """All feedback recorded for a lead, oldest first."""
        f = feedback_table
        with self._read() as conn:
            rows = conn.execute(sa.select(f).where(f.c.lead_id == lead_id).order_by(f.c.feedback_id))
            return [self._feedback(r, created=True) for r in rows]

    # -- export ---------------------------------------------------------------------------------
    def current_frame(self) -> pd.DataFrame:
        """The current batch as a flat table (JSON fields as JSON text), best first.

        Raises:
            NoCurrentBatchError: before the first batch.
        """
        s = scores_table
        json_cols = ("stage_probabilities", "reasons", "needs", "next_best_action")
        plain = [c for c in s.c if c.name not in json_cols]
        with self._read() as conn:
            batch_id = self._current_id(conn)
            if batch_id is None:
                raise NoCurrentBatchError(f"{self!r}: no score batch has been written yet")
            batch = self._batch_from_row(
                conn.execute(sa.select(batches_table).where(batches_table.c.batch_id == batch_id)).one()
            )
            result = conn.execute(
                sa.select(*plain, *(sa.cast(s.c[name], sa.Text).label(name) for name in json_cols))
                .where(s.c.batch_id == batch_id)
                .order_by(s.c.readiness.desc(), s.c.lead_id.asc())
            )
            names = list(result.keys())
            frame = pd.DataFrame(dict(zip(names, map(list, zip(*result, strict=True)), strict=True)), columns=names)
        frame["handoff"] = frame["handoff"].astype(bool)
        frame["score"] = frame["score"].astype(np.int64)
        frame["readiness"] = frame["readiness"].astype(np.float64)
        frame["batch_id"] = frame["batch_id"].astype(np.int64)
        frame["model_name"] = batch.model_name
        frame["model_version"] = batch.model_version
        frame["policy_version"] = batch.policy_version
        frame["scored_at"] = pd.Timestamp(batch.scored_at)
        frame["as_of"] = pd.Timestamp(batch.as_of)
        return frame[list(EXPORT_COLUMNS)]

    def export_current(self, path: str | Path) -> Path:
        """Write the current batch to ``path`` (``.parquet`` or ``.csv``) atomically, for CRM import."""
        from features.io import write_table

        path = Path(path)
        if path.suffix not in (".parquet", ".csv"):
            raise ValueError(f"{path}: unsupported export format (use .parquet or .csv)")
        frame = self.current_frame()
        first = frame.iloc[0]  # a batch always has at least one row
        meta = {
            "leadscore.batch_id": str(int(first["batch_id"])),
            "leadscore.model": f"{first['model_name']}:{first['model_version']}",
            "leadscore.policy_version": str(first["policy_version"]),
            "leadscore.scored_at": pd.Timestamp(first["scored_at"]).isoformat(),
        }
        return write_table(frame, path, metadata=meta)
