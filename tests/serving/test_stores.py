"""The score store on SQLite and PostgreSQL (same cases, parametrised over the backend)."""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from features.io import read_table_metadata
from serving import stores
from serving.stores import (
    BatchValidationError,
    FeedbackConflictError,
    NoCurrentBatchError,
    SchemaVersionError,
    ScoreStore,
    UnknownHandoffError,
    default_store_url,
)
from serving.stores import store as store_module

POSTGRES_ENV = "LEADSCORE_TEST_POSTGRES_URL"
T0 = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
STAGES = ["new", "mql", "sql", "opportunity"]


# -- backends --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The test server's URL; the database is created if missing."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{POSTGRES_ENV} is not set but CI=true: the PostgreSQL store tests must run in CI")
        pytest.skip(
            f"PostgreSQL store tests need {POSTGRES_ENV}, e.g. "
            "postgresql+psycopg://postgres@127.0.0.1:5432/leadscore_test"
        )
    parsed = sa.make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": parsed.database})
            if exists.scalar() is None:
                with contextlib.suppress(sa.exc.ProgrammingError):  # created concurrently by another worker
                    conn.exec_driver_sql(f'CREATE DATABASE "{parsed.database}"')
    finally:
        admin.dispose()
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a private schema on the PostgreSQL test server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'home' / 'leadscore.db'}"
        return
    base = sa.make_url(request.getfixturevalue("postgres_url"))
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def open_store(db_url: str) -> Iterator[Callable[[], ScoreStore]]:
    """Open stores on the test database (several = several independent connection pools)."""
    opened: list[ScoreStore] = []

    def factory() -> ScoreStore:
        store = ScoreStore(db_url)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], ScoreStore]) -> ScoreStore:
    return open_store()


# -- data ------------------------------------------------------------------------------------------
def _frame(n: int, seed: int = 0, prefix: str = "L", handoff_top: int = 3) -> pd.DataFrame:
    """A valid scores frame: the ``handoff_top`` best leads are handed off and explained."""
    rng = np.random.default_rng(seed)
    readiness = rng.random(n)
    probs = rng.dirichlet(np.ones(len(STAGES)), size=n)
    best = set(np.argsort(-readiness)[:handoff_top].tolist())
    grade = np.where(readiness >= 0.5, "A", np.where(readiness >= 0.25, "B", np.where(readiness >= 0.1, "C", "D")))
    reasons = [
        {
            "positive": [{"feature": "n_pricing_7d", "text": f"{i % 4 + 1} pricing-page views", "contribution": 0.4}],
            "negative": [{"feature": "days_since_email", "text": "no email for 41 days", "contribution": -0.1}],
        }
        if i in best
        else None
        for i in range(n)
    ]
    return pd.DataFrame(
        {
            "lead_id": [f"{prefix}{i:05d}" for i in range(n)],
            "readiness": readiness,
            "score": np.rint(readiness * 100).astype(int),
            "grade": grade,
            "stage": [STAGES[k] for k in probs.argmax(axis=1)],
            "stage_probabilities": [dict(zip(STAGES, row.tolist(), strict=True)) for row in probs],
            "reasons": reasons,
            "needs": [["pricing"] if i % 2 else [] for i in range(n)],
            "next_best_action": [
                {"action": "invite_to_demo", "label": "Invite to a demo", "readiness_gain": 0.03} if i in best else None
                for i in range(n)
            ],
            "trend": "new",
            "handoff": [i in best for i in range(n)],
            "handoff_rule": [
                "grade A >= min grade B; not handed off in the last 14 days" if i in best else "grade C < min grade B"
                for i in range(n)
            ],
        }
    )


def _write(store: ScoreStore, frame: pd.DataFrame, at: datetime = T0, version: str = "1") -> stores.BatchInfo:
    return store.write_batch(
        frame,
        model_name="leadscore",
        model_version=version,
        policy_version="policy-1",
        as_of=at - timedelta(minutes=5),
        scored_at=at,
        details={"note": "test"},
    )


def _count_current_rows(store: ScoreStore) -> int:
    """Rows of the batch the pointer names, in one statement (so one consistent snapshot)."""
    with store.engine.connect() as conn:
        return int(
            conn.execute(
                sa.text("SELECT count(*) FROM scores s JOIN current_batch c ON c.batch_id = s.batch_id")
            ).scalar_one()
        )


# -- schema ----------------------------------------------------------------------------------------
def test_schema_created_on_first_use_and_reopened(db_url: str, open_store: Callable[[], ScoreStore]) -> None:
    first = open_store()
    assert first.schema_version() == stores.SCHEMA_VERSION
    assert first.current_batch() is None
    assert set(sa.inspect(first.engine).get_table_names()) >= {
        "schema_version",
        "score_batches",
        "current_batch",
        "scores",
        "handoffs",
        "feedback",
    }
    _write(first, _frame(5))
    second = open_store()  # existing database: nothing recreated, data kept
    batch = second.current_batch()
    assert batch is not None
    assert batch.n_scores == 5


def test_newer_schema_version_is_refused(db_url: str, open_store: Callable[[], ScoreStore]) -> None:
    store = open_store()
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": stores.SCHEMA_VERSION + 1})
    with pytest.raises(SchemaVersionError, match="newer than this leadscore supports"):
        open_store()


def test_default_store_lives_in_the_home(tmp_path: Path) -> None:
    url = default_store_url(tmp_path / "home")
    assert url == f"sqlite:///{tmp_path / 'home' / 'leadscore.db'}"
    with ScoreStore(url) as store:
        _write(store, _frame(2))
    assert (tmp_path / "home" / "leadscore.db").is_file()


def test_in_memory_sqlite_works() -> None:
    with ScoreStore("sqlite://") as store:
        _write(store, _frame(4))
        assert store.latest_score("L00000") is not None


# -- writing and reading batches -------------------------------------------------------------------
def test_batch_roundtrip(store: ScoreStore) -> None:
    frame = _frame(20, handoff_top=3)
    info = _write(store, frame)
    assert info.n_scores == 20
    assert info.n_handoffs == 3
    batch = store.current_batch()
    assert batch == info
    assert batch.scored_at == T0
    assert batch.details == {"note": "test"}

    best = frame.sort_values("readiness", ascending=False).iloc[0]
    record = store.latest_score(best["lead_id"])
    assert record is not None
    assert record.readiness == pytest.approx(best["readiness"])
    assert record.score == best["score"]
    assert record.grade == best["grade"]
    assert record.stage == best["stage"]
    assert record.stage_probabilities == pytest.approx(best["stage_probabilities"])
    assert record.reasons == best["reasons"]
    assert record.needs == best["needs"]
    assert record.next_best_action == best["next_best_action"]
    assert record.handoff is True
    assert record.handoff_rule == best["handoff_rule"]
    assert record.handoff_id is not None
    assert record.is_current is True
    assert (record.model_name, record.model_version, record.policy_version) == ("leadscore", "1", "policy-1")
    assert record.scored_at == T0
    assert record.scored_at.tzinfo is not None
    assert record.as_of == T0 - timedelta(minutes=5)

    worst = frame.sort_values("readiness").iloc[0]
    plain = store.latest_score(worst["lead_id"])
    assert plain is not None
    assert plain.handoff is False
    assert plain.handoff_id is None
    assert plain.reasons is None
    assert store.latest_score("nobody") is None


def test_history_previous_scores_and_current_flag(store: ScoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _frame(6, seed=1)
    _write(store, first, at=T0)
    # The second batch drops L00005 (closed since) and adds N00000.
    second = pd.concat([_frame(5, seed=2), _frame(1, seed=3, prefix="N", handoff_top=0)], ignore_index=True)
    info2 = _write(store, second, at=T0 + timedelta(days=1), version="2")

    assert store.current_batch().batch_id == info2.batch_id  # type: ignore[union-attr]
    old = store.latest_score("L00005")
    assert old is not None
    assert old.is_current is False
    assert old.model_version == "1"
    assert old.score == first.loc[5, "score"]
    new = store.latest_score("L00000")
    assert new is not None
    assert new.is_current is True
    assert new.score == second.loc[0, "score"]

    ids = ["L00000", "L00005", "N00000", "never"]
    previous = store.previous_scores(ids)
    assert set(previous) == {"L00000", "L00005", "N00000"}
    assert previous["L00000"].score == second.loc[0, "score"]
    assert previous["L00000"].scored_at == T0 + timedelta(days=1)
    assert previous["L00005"].score == first.loc[5, "score"]
    assert previous["L00005"].batch_id < previous["L00000"].batch_id
    # The large-request path (scan the newest batch, then look up the rest) gives the same answer.
    monkeypatch.setattr(store_module, "_WHOLE_BATCH_THRESHOLD", 1)
    assert store.previous_scores(ids) == previous
    assert [b.model_version for b in store.batches()] == ["2", "1"]


def test_handoff_queue_best_first_with_paging(store: ScoreStore) -> None:
    empty = store.handoff_queue()
    assert (empty.items, empty.total, empty.batch) == ([], 0, None)
    frame = _frame(30, handoff_top=7)
    _write(store, frame)
    expected = (
        frame[frame["handoff"]].sort_values(["readiness", "lead_id"], ascending=[False, True])["lead_id"].tolist()
    )
    page1 = store.handoff_queue(limit=3, offset=0)
    page2 = store.handoff_queue(limit=3, offset=3)
    page3 = store.handoff_queue(limit=3, offset=6)
    assert page1.total == page2.total == 7
    assert [r.lead_id for r in page1.items + page2.items + page3.items] == expected
    assert len(page3.items) == 1
    assert all(r.handoff and r.handoff_id for r in page1.items)
    assert store.handoff_queue(limit=5, offset=50).items == []
    with pytest.raises(ValueError, match="limit"):
        store.handoff_queue(limit=0)


def test_handoff_times_and_weekly_counts(store: ScoreStore) -> None:
    frame = _frame(10, handoff_top=2)
    _write(store, frame, at=T0)
    handed = frame.loc[frame["handoff"], "lead_id"].tolist()
    _write(store, frame.assign(handoff=False, handoff_rule="cool-down"), at=T0 + timedelta(days=1))
    times = store.last_handoff_times([*frame["lead_id"], "nobody"])
    assert times == {lead: T0 for lead in handed}
    assert store.last_handoff_times(frame["lead_id"], since=T0 + timedelta(seconds=1)) == {}
    assert store.count_handoffs_since(T0) == 2
    assert store.count_handoffs_since(T0 + timedelta(microseconds=1)) == 0
    # After the cool-down the lead is handed off again: its latest time moves on.
    again = frame.assign(handoff=frame["lead_id"] == handed[0])
    _write(store, again, at=T0 + timedelta(days=15))
    assert store.last_handoff_times([handed[0]]) == {handed[0]: T0 + timedelta(days=15)}
    assert store.count_handoffs_since(T0) == 3


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda f: f.drop(columns=["grade"]), "lacks required columns ['grade']"),
        (lambda f: f.assign(colour="blue"), "columns the store does not keep ['colour']"),
        (lambda f: f.iloc[:0], "empty"),
        (lambda f: f.assign(lead_id=["L00000"] * len(f)), "scores.lead_id: 4 row(s) are not unique"),
        (lambda f: f.assign(readiness=[0.1, 1.2, 0.3, 0.4, 0.5]), "scores.readiness: 1 row(s)"),
        (lambda f: f.assign(readiness=[0.1, np.nan, 0.3, 0.4, 0.5]), "row 1 (lead_id 'L00001')"),
        (lambda f: f.assign(score=[1.5, 2, 3, 4, 5]), "scores.score"),
        (lambda f: f.assign(grade="E"), "scores.grade"),
        (lambda f: f.assign(trend="up"), "scores.trend"),
        (lambda f: f.assign(handoff=1), "scores.handoff"),
        (lambda f: f.assign(stage=None), "scores.stage"),
        (
            lambda f: f.assign(stage_probabilities=[{"new": 0.5, "mql": 0.1}] * len(f), stage="new"),
            "does not sum to 1",
        ),
        (lambda f: f.assign(stage="won"), "no probability for their stage"),
        (
            lambda f: f.assign(
                reasons=[{"positive": [{"feature": "x", "text": "", "contribution": 1.0}], "negative": []}] * 5
            ),
            "scores.reasons: row 0 (lead_id 'L00000') is invalid at positive.0.text",
        ),
        (
            lambda f: f.assign(
                reasons=[{"positive": [{"feature": "x", "text": "t", "contribution": -1.0}], "negative": []}] * 5
            ),
            "positive reason with a negative contribution",
        ),
        (lambda f: f.assign(needs=[["pricing", 3]] * 5), "scores.needs: row 0"),
        (
            lambda f: f.assign(next_best_action=[{"action": "a", "label": "b", "readiness_gain": 2.0}] * 5),
            "scores.next_best_action: row 0",
        ),
    ],
)
def test_invalid_batches_are_refused_and_change_nothing(
    store: ScoreStore, mutate: Callable[[pd.DataFrame], pd.DataFrame], fragment: str
) -> None:
    good = _write(store, _frame(5, seed=9))
    with pytest.raises(BatchValidationError) as info:
        _write(store, mutate(_frame(5, seed=10)), at=T0 + timedelta(days=1))
    assert fragment in str(info.value)
    assert store.current_batch() == good
    assert len(store.batches()) == 1


def test_naive_times_are_refused(store: ScoreStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.write_batch(_frame(2), model_name="m", model_version="1", policy_version="p", as_of=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        store.count_handoffs_since(datetime(2026, 1, 1))


def test_drivers_with_other_parameter_styles_take_the_core_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create_engine = sa.create_engine
    monkeypatch.setattr(sa, "create_engine", lambda *a, **k: real_create_engine(*a, paramstyle="named", **k))
    with ScoreStore(f"sqlite:///{tmp_path / 'named.db'}") as store:
        assert store.engine.dialect.paramstyle == "named"
        frame = _frame(6, handoff_top=2)
        _write(store, frame)
        for i in range(6):
            record = store.latest_score(frame.loc[i, "lead_id"])
            assert record is not None
            assert record.stage_probabilities == pytest.approx(
                frame.loc[i, "stage_probabilities"]
            )  # not double-encoded
            assert record.reasons == frame.loc[i, "reasons"]
            assert record.needs == frame.loc[i, "needs"]


# -- atomicity -------------------------------------------------------------------------------------
def test_failed_write_leaves_the_old_batch_current(store: ScoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _write(store, _frame(8, seed=1))
    handoffs_before = store.count_handoffs_since(T0 - timedelta(days=1))

    def explode(self: ScoreStore, conn: sa.Connection, batch_id: int, when: datetime) -> None:
        raise RuntimeError("disk full")

    # Fails after the batch row, its handoffs and all its score rows were inserted.
    monkeypatch.setattr(ScoreStore, "_make_current", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(store, _frame(12, seed=2), at=T0 + timedelta(days=1))
    monkeypatch.undo()

    assert store.current_batch() == old
    assert _count_current_rows(store) == 8
    assert [b.batch_id for b in store.batches()] == [old.batch_id]
    assert store.count_handoffs_since(T0 - timedelta(days=1)) == handoffs_before
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM scores")).scalar_one() == 8
    # The store is still usable.
    assert _write(store, _frame(3, seed=3), at=T0 + timedelta(days=2)).n_scores == 3


def test_reader_sees_only_complete_batches_during_a_write(
    open_store: Callable[[], ScoreStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, reader = open_store(), open_store()  # separate pools: separate connections
    old = _write(writer, _frame(50, seed=1, handoff_top=5))
    old_queue = [r.lead_id for r in reader.handoff_queue(limit=100).items]
    rows_inserted, release = threading.Event(), threading.Event()
    real_insert = store_module.insert_many

    def paused_insert(*args: Any, **kwargs: Any) -> None:
        real_insert(*args, **kwargs)
        rows_inserted.set()  # every row of the new batch is in, the transaction is still open
        assert release.wait(30), "test did not release the writer"

    monkeypatch.setattr(store_module, "insert_many", paused_insert)
    failure: list[BaseException] = []

    def write() -> None:
        try:
            _write(writer, _frame(2_000, seed=2, prefix="N", handoff_top=20), at=T0 + timedelta(days=1))
        except BaseException as exc:  # surfaced in the main thread below
            failure.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    try:
        assert rows_inserted.wait(30), "writer never reached the pause"
        assert reader.current_batch() == old
        assert _count_current_rows(reader) == 50
        assert reader.latest_score("N00000") is None
        assert [r.lead_id for r in reader.handoff_queue(limit=100).items] == old_queue
        assert len(reader.current_frame()) == 50
    finally:
        release.set()
        thread.join(60)
    assert not failure, failure
    new = reader.current_batch()
    assert new is not None
    assert new.batch_id != old.batch_id
    assert _count_current_rows(reader) == 2_000
    assert reader.handoff_queue().total == 20


def test_a_same_day_rerun_keeps_the_days_handoffs_in_the_queue(store: ScoreStore) -> None:
    morning = _frame(30, seed=4, handoff_top=5)
    first = _write(store, morning, at=T0)
    first_ids = {r.lead_id: r.handoff_id for r in store.handoff_queue(limit=100).items}
    assert len(first_ids) == 5
    # The re-run an hour later: the morning's five are in cool-down (not handed off again), two others are.
    rerun = morning.copy()
    rerun["handoff"] = False
    rerun.loc[rerun["lead_id"].isin(["L00028", "L00029"]), "handoff"] = True
    rerun.loc[rerun["lead_id"] == "L00029", "readiness"] = 0.999
    second = _write(store, rerun, at=T0 + timedelta(hours=1))
    assert second.n_handoffs == 2
    queue = store.handoff_queue(limit=100)
    assert queue.batch == second and queue.total == 7
    by_lead = {r.lead_id: r for r in queue.items}
    assert {k: by_lead[k].handoff_id for k in first_ids} == first_ids  # the morning's handoffs, unchanged
    assert {by_lead[k].batch_id for k in first_ids} == {first.batch_id}
    assert by_lead["L00029"].batch_id == second.batch_id and queue.items[0].lead_id == "L00029"
    assert [r.readiness for r in queue.items] == sorted((r.readiness for r in queue.items), reverse=True)
    paged = store.handoff_queue(limit=3).items + store.handoff_queue(limit=3, offset=3).items
    assert [r.lead_id for r in paged] == [r.lead_id for r in queue.items[:6]]
    # Handed off in both runs of the day (no cool-down): listed once, with the latest handoff.
    again = rerun.copy()
    again.loc[again["lead_id"] == next(iter(first_ids)), "handoff"] = True
    third = _write(store, again, at=T0 + timedelta(hours=2))
    queue = store.handoff_queue(limit=100)
    assert queue.total == 7 and queue.batch == third
    assert {r.lead_id: r.batch_id for r in queue.items}[next(iter(first_ids))] == third.batch_id
    # The next day's batch starts a new queue.
    _write(store, _frame(30, seed=5, handoff_top=4), at=T0 + timedelta(days=1))
    assert store.handoff_queue(limit=100).total == 4


@pytest.mark.slow
def test_polling_reader_never_sees_a_partial_batch(open_store: Callable[[], ScoreStore]) -> None:
    writer, reader = open_store(), open_store()
    sizes = [300, 5_000, 700, 4_000]
    _write(writer, _frame(sizes[0], seed=0))
    done = threading.Event()
    seen: list[tuple[int, int, int]] = []

    def observe() -> tuple[int, int, int]:
        with reader.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT b.batch_id, b.n_scores, count(s.lead_id) FROM current_batch c "
                    "JOIN score_batches b ON b.batch_id = c.batch_id "
                    "JOIN scores s ON s.batch_id = c.batch_id GROUP BY b.batch_id, b.n_scores"
                )
            ).one()
        return int(row[0]), int(row[1]), int(row[2])

    def poll() -> None:
        while not done.is_set():
            seen.append(observe())

    thread = threading.Thread(target=poll)
    thread.start()
    try:
        for i, n in enumerate(sizes[1:], start=1):
            _write(writer, _frame(n, seed=i, prefix=f"B{i}_"), at=T0 + timedelta(days=i))
    finally:
        done.set()
        thread.join(60)
    seen.append(observe())
    assert len({batch for batch, _, _ in seen}) >= 2  # the reader really ran while batches changed
    assert all(n_scores == counted for _, n_scores, counted in seen), [s for s in seen if s[1] != s[2]][:3]
    assert seen[-1][1:] == (sizes[-1], sizes[-1])


# -- feedback --------------------------------------------------------------------------------------
def _handed_off(store: ScoreStore) -> tuple[str, str]:
    _write(store, _frame(10, handoff_top=2))
    item = store.handoff_queue(limit=1).items[0]
    assert item.handoff_id is not None
    return item.lead_id, item.handoff_id


def test_feedback_is_idempotent_per_lead_and_handoff(store: ScoreStore) -> None:
    lead, handoff = _handed_off(store)
    first = store.record_feedback(lead, handoff, "rejected", "no_budget", "Budget frozen until Q2")
    again = store.record_feedback(lead, handoff, "rejected", "no_budget", "Budget frozen until Q2")
    assert first.created is True
    assert again.created is False
    assert again.feedback_id == first.feedback_id
    assert again.recorded_at == first.recorded_at
    assert len(store.feedback_for(lead)) == 1

    with pytest.raises(FeedbackConflictError, match=r"differs in \['outcome', 'reason_code', 'text'\]"):
        store.record_feedback(lead, handoff, "accepted")
    with pytest.raises(FeedbackConflictError, match=r"differs in \['text'\]"):
        store.record_feedback(lead, handoff, "rejected", "no_budget", "changed my mind")
    assert [f.outcome for f in store.feedback_for(lead)] == ["rejected"]


def test_feedback_needs_a_real_handoff_of_that_lead(store: ScoreStore) -> None:
    lead, handoff = _handed_off(store)
    other = next(r.lead_id for r in [store.latest_score(f"L{i:05d}") for i in range(10)] if r and r.lead_id != lead)
    with pytest.raises(UnknownHandoffError):
        store.record_feedback(lead, "0" * 32, "accepted")
    with pytest.raises(UnknownHandoffError):
        store.record_feedback(other, handoff, "accepted")
    with pytest.raises(ValueError, match="outcome"):
        store.record_feedback(lead, handoff, "maybe")
    with pytest.raises(ValueError, match="reason_code"):
        store.record_feedback(lead, handoff, "rejected", "Not Ready!")
    assert store.feedback_for(lead) == []


def test_feedback_is_durable(db_url: str, open_store: Callable[[], ScoreStore]) -> None:
    store = open_store()
    lead, handoff = _handed_off(store)
    stored = store.record_feedback(lead, handoff, "accepted", recorded_at=T0 + timedelta(hours=3))
    store.close()
    reopened = open_store()
    [found] = reopened.feedback_for(lead)
    assert (found.feedback_id, found.outcome, found.recorded_at) == (stored.feedback_id, "accepted", stored.recorded_at)


CONCURRENT_CLIENTS = 8  # issue 15: eight clients sending the same feedback at once


def test_concurrent_identical_feedback_stores_one_row(open_store: Callable[[], ScoreStore]) -> None:
    first = open_store()
    lead, handoff = _handed_off(first)
    clients = [first, *(open_store() for _ in range(CONCURRENT_CLIENTS - 1))]
    barrier = threading.Barrier(len(clients))
    results: list[Any] = []

    def send(client: ScoreStore) -> None:
        barrier.wait(10)
        try:
            results.append(client.record_feedback(lead, handoff, "accepted", "qualified"))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(isinstance(r, stores.FeedbackRecord) for r in results), results
    assert len(results) == CONCURRENT_CLIENTS
    assert sorted(r.created for r in results) == [False] * (CONCURRENT_CLIENTS - 1) + [True]
    assert len({r.feedback_id for r in results}) == 1
    assert len(first.feedback_for(lead)) == 1


# -- export ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_current_batch(store: ScoreStore, tmp_path: Path, suffix: str) -> None:
    with pytest.raises(NoCurrentBatchError):
        store.export_current(tmp_path / f"scores{suffix}")
    _write(store, _frame(4, seed=1), at=T0)
    frame = _frame(9, seed=2, handoff_top=2)
    info = _write(store, frame, at=T0 + timedelta(days=1), version="2")
    path = store.export_current(tmp_path / "out" / f"scores{suffix}")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    exported = pd.read_parquet(path) if suffix == ".parquet" else pd.read_csv(path)
    assert list(exported.columns) == list(stores.EXPORT_COLUMNS)
    expected = frame.sort_values(["readiness", "lead_id"], ascending=[False, True])
    assert exported["lead_id"].tolist() == expected["lead_id"].tolist()
    assert exported["score"].tolist() == expected["score"].tolist()
    assert exported["handoff"].tolist() == expected["handoff"].tolist()
    assert set(exported["batch_id"]) == {info.batch_id}
    assert set(exported["model_version"].astype(str)) == {"2"}
    import json

    first = json.loads(exported["stage_probabilities"].iloc[0])
    assert first == pytest.approx(expected["stage_probabilities"].iloc[0])
    if suffix == ".parquet":
        assert read_table_metadata(path)["leadscore.batch_id"] == str(info.batch_id)
        assert str(exported["scored_at"].dtype) == "datetime64[us, UTC]"
    else:  # ISO 8601 in UTC, which a CRM's strict date parser reads (not pyarrow's "2025-01-02 00:00:00Z")
        scored_at = pd.Timestamp(T0 + timedelta(days=1)).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        assert set(exported["scored_at"]) == {scored_at}
        assert exported["as_of"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").all()
    with pytest.raises(ValueError, match="unsupported export format"):
        store.export_current(tmp_path / "scores.xlsx")


def test_many_verdicts_in_one_transaction_skip_handoffs_with_feedback(store: ScoreStore) -> None:
    _write(store, _frame(10, handoff_top=3))
    open_ = store.handoffs_without_feedback()
    assert len(open_) == 3 and str(open_["handed_off_at"].dt.tz) == "UTC"
    (lead, handoff), rest = open_[["lead_id", "handoff_id"]].iloc[0], open_.iloc[1:]
    store.record_feedback(lead, handoff, "rejected", "no_budget")  # the CRM's own verdict is kept
    verdicts = pd.DataFrame(
        {
            "lead_id": [lead, *rest["lead_id"]],
            "handoff_id": [handoff, *rest["handoff_id"]],
            "outcome": ["accepted", "accepted", "rejected"],
            "reason_code": [None, None, "crm_disqualified"],
            "text": [None, "from the CRM stage history: entered sql", None],
            "recorded_at": [T0 + timedelta(days=d) for d in (1, 2, 3)],
        }
    )
    assert store.record_feedback_many(verdicts) == 2
    assert store.record_feedback_many(verdicts) == 0  # again: nothing new
    assert store.handoffs_without_feedback().empty
    assert [f.outcome for f in store.feedback_for(lead)] == ["rejected"]
    (stored,) = store.feedback_for(str(rest["lead_id"].iloc[1]))
    assert stored.reason_code == "crm_disqualified" and stored.recorded_at == T0 + timedelta(days=3)
    with pytest.raises(ValueError, match="has no handoff"):
        store.record_feedback_many(verdicts.assign(lead_id="someone-else"))
    with pytest.raises(ValueError, match="outcome must be one of"):
        store.record_feedback_many(verdicts.assign(outcome="maybe"))
