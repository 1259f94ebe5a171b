"""The :class:`ScoreStore`: atomic batch writes, reads of the current batch, handoffs and feedback."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from serving.schemas import FEEDBACK_OUTCOMES, MAX_FEEDBACK_TEXT, REASON_CODE_PATTERN
from serving.stores.records import BatchInfo, FeedbackRecord, HandoffPage, PreviousScore, ScoreRecord
from serving.stores.rows import as_utc, chunks, insert_many, insert_returning_id, prepare_rows, require_aware
from serving.stores.schema import (
    EXPORT_COLUMNS,
    SCHEMA_VERSION,
    BatchValidationError,
    FeedbackConflictError,
    NoCurrentBatchError,
    SchemaVersionError,
    UnknownHandoffError,
    batches_table,
    create_store_engine,
    current_batch_table,
    feedback_table,
    handoffs_table,
    metadata,
    schema_version_table,
    scores_table,
)

# -- the store -------------------------------------------------------------------------------------
_ID_CHUNK = 1_000  # ids per IN (...) query: well below SQLite's variable limit, small enough for PostgreSQL plans
_WHOLE_BATCH_THRESHOLD = 5_000  # previous_scores: above this many ids, scan the newest batch once
_STATE_TOKEN_QUERY = sa.select(sa.func.max(batches_table.c.batch_id))  # ScoreStore.state_token


log = logging.getLogger(__name__)


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
        self._engine = create_store_engine(self.url, echo=echo)
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
        scored_at = require_aware(scored_at or datetime.now(UTC), "scored_at")
        as_of = require_aware(as_of, "as_of")
        for what, value, limit in (
            ("model_name", model_name, 255),
            ("model_version", model_version, 64),
            ("policy_version", policy_version, 64),
        ):
            if not isinstance(value, str) or not 0 < len(value) <= limit:
                raise BatchValidationError(f"{what} must be a non-empty string of at most {limit} characters")
        cols = prepare_rows(scores)
        n = len(cols["lead_id"])
        handoff_ids = [uuid.uuid4().hex if h else None for h in cols["handoff"]]
        n_handoffs = sum(1 for h in handoff_ids if h is not None)
        detail_dict = dict(details) if details is not None else None
        cols["handoff_id"] = handoff_ids
        names = ["batch_id", *cols]

        batch_values: dict[str, Any] = {
            "scored_at": scored_at,
            "as_of": as_of,
            "model_name": model_name,
            "model_version": model_version,
            "policy_version": policy_version,
            "n_scores": n,
            "n_handoffs": n_handoffs,
            "details": detail_dict,
        }
        with self._write() as conn:
            batch_id = insert_returning_id(conn, batches_table, batch_values)
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
            insert_many(conn, scores_table, names, [cols[c] for c in names])
            self._make_current(conn, batch_id, scored_at)
        log.info(
            "score batch %d written: %d leads, %d handoffs (model %s v%s)",
            batch_id,
            n,
            n_handoffs,
            model_name,
            model_version,
        )
        return BatchInfo(batch_id=batch_id, **batch_values)

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
            value = conn.execute(_STATE_TOKEN_QUERY).scalar()
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
            for chunk in chunks(remaining, _ID_CHUNK):
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
        """The leads handed off on the current batch's decision day (UTC), best (readiness, then lead_id) first.

        Usually the current batch's handoffs. When the batch was re-run the same day (a second ``leadscore
        score``, a retried deployment), the earlier run's handoffs put those leads in cool-down, so the new
        batch does not hand them off again; they stay in the queue, each with the score of the batch that
        handed it off (``batch_id``, ``scored_at`` say which), so a re-run never empties the queue.
        A lead handed off twice that day (``cooldown_days: 0``) is listed once, with its latest handoff.
        """
        if limit < 1 or offset < 0:
            raise ValueError(f"limit must be >= 1 and offset >= 0, got limit={limit}, offset={offset}")
        s, h = scores_table, handoffs_table
        with self._read() as conn:
            batch_id = self._current_id(conn)
            if batch_id is None:
                return HandoffPage(items=[], total=0, limit=limit, offset=offset, batch=None)
            # Batches are immutable once committed, and the day's handoffs only grow with a newer batch
            # (which would move the current pointer): the page and the total are consistent.
            batch = self._batch_from_row(
                conn.execute(sa.select(batches_table).where(batches_table.c.batch_id == batch_id)).one()
            )
            day = batch.scored_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            # Ranked on three columns first; only the page's rows are read in full.
            keys = conn.execute(
                sa.select(s.c.lead_id, s.c.batch_id, s.c.readiness)
                .join(h, sa.and_(h.c.batch_id == s.c.batch_id, h.c.lead_id == s.c.lead_id))
                .where(
                    s.c.handoff.is_(True),
                    h.c.handed_off_at >= day,
                    h.c.handed_off_at < day + timedelta(days=1),
                    h.c.batch_id <= batch_id,
                )
            ).all()
            latest: dict[str, tuple[int, float]] = {}
            for lead_id, row_batch, readiness in keys:
                if lead_id not in latest or row_batch > latest[lead_id][0]:
                    latest[lead_id] = (int(row_batch), float(readiness))
            ranked = sorted(latest.items(), key=lambda kv: (-kv[1][1], kv[0]))
            page = ranked[offset : offset + limit]
            items: list[ScoreRecord] = []
            if page:
                pairs = [(b, lead) for lead, (b, _) in page]
                rows = conn.execute(self._score_select().where(sa.tuple_(s.c.batch_id, s.c.lead_id).in_(pairs)))
                by_key = {(int(r.batch_id), r.lead_id): self._record(r) for r in rows}
                items = [by_key[(b, lead)] for lead, (b, _) in page]
        return HandoffPage(items=items, total=len(ranked), limit=limit, offset=offset, batch=batch)

    def last_handoff_times(self, lead_ids: Iterable[str], since: datetime | None = None) -> dict[str, datetime]:
        """Each lead's latest handoff time; leads never handed off (at or after ``since``) are absent.

        For the cool-down only recent handoffs matter: pass ``since = now - cooldown_days`` and a large
        batch is answered from one scan of the recent handoffs instead of one lookup per lead.
        """
        ids = list(dict.fromkeys(lead_ids))
        h = handoffs_table
        latest = sa.select(h.c.lead_id, sa.func.max(h.c.handed_off_at).label("at")).group_by(h.c.lead_id)
        if since is not None:
            latest = latest.where(h.c.handed_off_at >= require_aware(since, "since"))
        found: list[tuple[str, datetime]] = []
        with self._read() as conn:
            if since is not None and len(ids) > _WHOLE_BATCH_THRESHOLD:
                wanted = set(ids)
                found = [(lead, at) for lead, at in conn.execute(latest) if lead in wanted]
            else:
                for chunk in chunks(ids, _ID_CHUNK):
                    found.extend(conn.execute(latest.where(h.c.lead_id.in_(chunk))))
        return {lead: as_utc(at) for lead, at in found}

    def count_handoffs_since(self, since: datetime) -> int:
        """Handoffs made at or after ``since`` (capacity mode: pass ``policy.week_start(now)``)."""
        since = require_aware(since, "since")
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
        _check_feedback(outcome, reason_code, text)
        when = require_aware(recorded_at or datetime.now(UTC), "recorded_at")
        wanted = {"outcome": outcome, "reason_code": reason_code, "text": text}
        values: dict[str, Any] = {"lead_id": lead_id, "handoff_id": handoff_id, "recorded_at": when, **wanted}
        try:
            with self._write() as conn:
                owner = conn.execute(
                    sa.select(handoffs_table.c.lead_id).where(handoffs_table.c.handoff_id == handoff_id)
                ).scalar()
                if owner != lead_id:
                    raise UnknownHandoffError(f"lead {lead_id!r} has no handoff {handoff_id!r}")
                existing = self._existing_feedback(conn, lead_id, handoff_id)
                if existing is not None:
                    return self._replayed(existing, wanted)
                feedback_id = insert_returning_id(conn, feedback_table, values)
        except sa.exc.IntegrityError:
            # A concurrent identical request won the race (PostgreSQL); answer like a replay.
            with self._read() as conn:
                existing = self._existing_feedback(conn, lead_id, handoff_id)
            if existing is None:
                raise
            return self._replayed(existing, wanted)
        log.info("feedback %d recorded: lead %s handoff %s %s", feedback_id, lead_id, handoff_id, outcome)
        return FeedbackRecord(feedback_id=feedback_id, created=True, **values)

    @staticmethod
    def _existing_feedback(conn: Connection, lead_id: str, handoff_id: str) -> Any:
        f = feedback_table
        return conn.execute(sa.select(f).where(f.c.lead_id == lead_id, f.c.handoff_id == handoff_id)).first()

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

    def handoffs_without_feedback(self) -> pd.DataFrame:
        """Every handoff no verdict is recorded for: ``handoff_id``, ``lead_id``, ``handed_off_at`` (UTC)."""
        h, f = handoffs_table, feedback_table
        query = (
            sa.select(h.c.handoff_id, h.c.lead_id, h.c.handed_off_at)
            .outerjoin(f, sa.and_(f.c.handoff_id == h.c.handoff_id, f.c.lead_id == h.c.lead_id))
            .where(f.c.feedback_id.is_(None))
            .order_by(h.c.handed_off_at, h.c.handoff_id)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        frame = pd.DataFrame(rows, columns=["handoff_id", "lead_id", "handed_off_at"])
        frame["handed_off_at"] = pd.to_datetime(frame["handed_off_at"], utc=True)
        return frame

    def record_feedback_many(self, verdicts: pd.DataFrame) -> int:
        """Store many verdicts (``lead_id``, ``handoff_id``, ``outcome``, ``reason_code``, ``recorded_at``, optional
        ``text``) in one transaction, skipping handoffs that already have feedback; returns how many were stored.

        Raises:
            ValueError: an invalid outcome or reason code, or a handoff that is not the lead's (nothing stored).
        """
        records = [{str(k): v for k, v in r.items()} for r in verdicts.to_dict("records")]
        rows: list[dict[str, Any]] = [
            {
                "lead_id": str(r["lead_id"]),
                "handoff_id": str(r["handoff_id"]),
                "outcome": str(r["outcome"]),
                "reason_code": None if _missing(r.get("reason_code")) else str(r["reason_code"]),
                "text": None if _missing(r.get("text")) else str(r["text"]),
                "recorded_at": require_aware(pd.Timestamp(r["recorded_at"]).to_pydatetime(), "recorded_at"),
            }
            for r in records
        ]
        for outcome, reason_code, text in {(r["outcome"], r["reason_code"], r["text"]) for r in rows}:
            _check_feedback(outcome, reason_code, text)  # the checks of record_feedback, once per distinct value
        if not rows:
            return 0
        h, f = handoffs_table, feedback_table
        with self._write() as conn:
            owners: dict[str, str] = {}
            for part in chunks([r["handoff_id"] for r in rows], 500):
                owners.update(
                    conn.execute(sa.select(h.c.handoff_id, h.c.lead_id).where(h.c.handoff_id.in_(part))).all()
                )
            foreign = [r for r in rows if owners.get(r["handoff_id"]) != r["lead_id"]]
            if foreign:
                raise ValueError(f"lead {foreign[0]['lead_id']!r} has no handoff {foreign[0]['handoff_id']!r}")
            done: set[str] = set()
            for part in chunks([r["handoff_id"] for r in rows], 500):
                done.update(conn.execute(sa.select(f.c.handoff_id).where(f.c.handoff_id.in_(part))).scalars())
            fresh = [r for r in rows if r["handoff_id"] not in done]
            if fresh:
                conn.execute(f.insert(), fresh)
        log.info("feedback: %d verdicts recorded in one transaction (%d already had feedback)", len(fresh), len(done))
        return len(fresh)

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


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _check_feedback(outcome: str, reason_code: str | None, text: str | None) -> None:
    import re

    if outcome not in FEEDBACK_OUTCOMES:
        raise ValueError(f"outcome must be one of {list(FEEDBACK_OUTCOMES)}, got {outcome!r}")
    if reason_code is not None and not re.match(REASON_CODE_PATTERN, reason_code):
        raise ValueError(f"reason_code must match {REASON_CODE_PATTERN}, got {reason_code!r}")
    if text is not None and len(text) > MAX_FEEDBACK_TEXT:
        raise ValueError(f"text is {len(text)} characters; at most {MAX_FEEDBACK_TEXT} are kept")
