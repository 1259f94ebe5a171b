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

from serving.stores.records import BatchInfo, FeedbackRecord, HandoffPage, PreviousScore, ScoreRecord
from serving.stores.schema import (
    DEFAULT_DB_NAME,
    EXPORT_COLUMNS,
    GRADES,
    OPTIONAL_SCORE_COLUMNS,
    REQUIRED_SCORE_COLUMNS,
    SCHEMA_VERSION,
    TRENDS,
    BatchValidationError,
    FeedbackConflictError,
    NoCurrentBatchError,
    SchemaVersionError,
    StoreError,
    UnknownHandoffError,
    default_store_url,
)
from serving.stores.store import ScoreStore

__all__ = [
    "DEFAULT_DB_NAME",
    "EXPORT_COLUMNS",
    "GRADES",
    "OPTIONAL_SCORE_COLUMNS",
    "REQUIRED_SCORE_COLUMNS",
    "SCHEMA_VERSION",
    "TRENDS",
    "BatchInfo",
    "BatchValidationError",
    "FeedbackConflictError",
    "FeedbackRecord",
    "HandoffPage",
    "NoCurrentBatchError",
    "PreviousScore",
    "SchemaVersionError",
    "ScoreRecord",
    "ScoreStore",
    "StoreError",
    "UnknownHandoffError",
    "default_store_url",
]
