"""SIGKILL of ``leadscore score`` inside its batch write leaves exactly the previous batch; the rerun completes.

The kill has to land *inside* the write transaction, after the batch's rows went in and before the commit,
without a hook in the product code. The test makes the store itself hold the writer there:

- PostgreSQL: the test locks the ``current_batch`` row (``SELECT ... FOR UPDATE``). ``write_batch`` inserts
  the batch, its handoffs and all its scores, then blocks on ``UPDATE current_batch``; the test finds that
  backend waiting on its lock (``pg_blocking_pids``), SIGKILLs the command, then releases the lock. The
  server sees the client gone and rolls the transaction back.
- SQLite (one writer, WAL): the test installs a ``BEFORE UPDATE ON current_batch`` trigger that first writes
  a 64 MiB blob (more than the page cache holds, so the uncommitted pages spill into the ``-wal`` file)
  and then runs a cross join of billions of rows. Once the WAL has grown by that much while the write lock
  is held, the writer is provably past its inserts and stuck before its commit: SIGKILL. The uncommitted
  WAL frames are ignored by the next connection. The trigger is dropped before the checks.

Afterwards every table of the store holds exactly the previous batch (no rows of the killed one anywhere),
and ``leadscore score`` run again writes a complete new batch.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from typer.testing import CliRunner

from pipelines.cli import app
from serving.stores import ScoreStore
from tests.serving.test_stores import db_url, postgres_url  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow
LEADSCORE = Path(sys.executable).with_name("leadscore")
runner = CliRunner()
FAST_CONFIG = {
    "version": 1,
    "train": {
        "readiness": {"num_boost_round": 40, "early_stopping_rounds": 10},
        "stage": {"num_boost_round": 20, "early_stopping_rounds": 10},
        "evaluation": {"plots": False, "shap_sample_rows": 200},
    },
}
STORE_TABLES = ("score_batches", "current_batch", "handoffs", "scores", "feedback", "schema_version")
STALL_BLOB_BYTES = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> Iterator[dict[str, Any]]:
    """A simulated data set and a champion trained on it (fast config), in a home of its own."""
    from prefect.settings import PREFECT_API_URL

    base = tmp_path_factory.mktemp("killed-score")
    home = base / "home"
    env = {
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        # the killed command runs its flow on the session's Prefect server instead of starting its own
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        data = base / "data"
        result = runner.invoke(app, ["generate", "--leads", "2000", "--seed", "11", "--out", str(data)])
        assert result.exit_code == 0, result.output
        config = base / "leadscore.yaml"
        config.write_text(yaml.safe_dump(FAST_CONFIG))
        trained = runner.invoke(app, ["train", "--data", str(data), "--config", str(config), "--work-dir", str(base)])
        assert trained.exit_code == 0, trained.output
        yield {"data": data, "env": env}
    finally:
        mp.undo()


def _score_in_process(champion: dict[str, Any], store_url: str) -> None:
    result = runner.invoke(
        app, ["score", "--data", str(champion["data"])], env={**champion["env"], "LEADSCORE_STORE_URL": store_url}
    )
    assert result.exit_code == 0, result.output


def _start_score(champion: dict[str, Any], store_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **champion["env"], "LEADSCORE_STORE_URL": store_url}
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(LEADSCORE), "score", "--data", str(champion["data"])], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_until(proc: subprocess.Popen[bytes], log: Path, found: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"leadscore score ended ({proc.returncode}) before it was caught mid-write:\n{log.read_text()[-3000:]}"
            )
        if found():
            return
        time.sleep(0.02)
    raise AssertionError(f"leadscore score was not caught mid-write within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _rows(store_url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every store table (the tables the store defines must all be there)."""
    engine = sa.create_engine(store_url)
    try:
        with engine.connect() as conn:
            assert set(STORE_TABLES) <= set(sa.inspect(conn).get_table_names())
            return {t: [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {t}"))] for t in STORE_TABLES}
    finally:
        engine.dispose()


def _assert_only_batch(store_url: str, batch_id: int, n_scores: int, n_handoffs: int) -> None:
    rows = _rows(store_url)
    assert [r["batch_id"] for r in rows["score_batches"]] == [batch_id]
    assert [r["batch_id"] for r in rows["current_batch"]] == [batch_id]
    assert len(rows["scores"]) == n_scores and {r["batch_id"] for r in rows["scores"]} == {batch_id}
    assert len(rows["handoffs"]) == n_handoffs and {r["batch_id"] for r in rows["handoffs"]} <= {batch_id}
    assert rows["feedback"] == []
    assert len(rows["schema_version"]) == 1


# -- catching the writer between its inserts and its commit -------------------------------------------
def _sqlite_path(store_url: str) -> Path:
    database = sa.make_url(store_url).database
    assert database
    return Path(database)


def _install_sqlite_stall(path: Path) -> None:
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("CREATE TABLE stall_rows (x INTEGER)")
        conn.executemany("INSERT INTO stall_rows VALUES (?)", [(i,) for i in range(3000)])
        conn.execute("CREATE TABLE stall_blob (b BLOB)")
        conn.execute(
            "CREATE TRIGGER stall_before_commit BEFORE UPDATE ON current_batch BEGIN "
            f"INSERT INTO stall_blob VALUES (randomblob({STALL_BLOB_BYTES})); "
            "SELECT count(*) FROM stall_rows a, stall_rows b, stall_rows c; "
            "END"
        )
    conn.close()


def _remove_sqlite_stall(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("DROP TRIGGER stall_before_commit")
        conn.execute("DROP TABLE stall_blob")
        conn.execute("DROP TABLE stall_rows")
    finally:
        conn.close()


def _write_locked(path: Path) -> bool:
    """True while another connection holds the database's write lock (probe: BEGIN IMMEDIATE, no waiting)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return True
    finally:
        conn.close()


def _kill_sqlite_writer(champion: dict[str, Any], store_url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    path = _sqlite_path(store_url)
    wal = path.with_name(path.name + "-wal")
    _install_sqlite_stall(path)
    before = wal.stat().st_size if wal.exists() else 0
    log = tmp_path / "killed-score.log"
    proc = _start_score(champion, store_url, log)
    try:
        # Past its inserts, inside the trigger: the blob's uncommitted pages are in the WAL, the lock still held.
        _wait_until(
            proc,
            log,
            lambda: wal.exists() and wal.stat().st_size > before + STALL_BLOB_BYTES // 2 and _write_locked(path),
        )
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _remove_sqlite_stall(path)
    return proc


def _kill_postgres_writer(champion: dict[str, Any], store_url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    engine = sa.create_engine(store_url)
    log = tmp_path / "killed-score.log"
    proc: subprocess.Popen[bytes] | None = None
    writer_pid: int | None = None
    try:
        with engine.connect() as lock:
            lock.execute(sa.text("SELECT batch_id FROM current_batch WHERE id = 1 FOR UPDATE"))
            me = lock.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            proc = _start_score(champion, store_url, log)
            blocked = sa.text(
                "SELECT pid, query FROM pg_stat_activity WHERE CAST(:me AS integer) = ANY(pg_blocking_pids(pid))"
            )
            with engine.connect() as watch:

                def writer_blocked() -> bool:
                    nonlocal writer_pid
                    found = watch.execute(blocked, {"me": me}).all()
                    watch.rollback()
                    if found:
                        assert len(found) == 1 and "current_batch" in found[0].query, found
                        writer_pid = int(found[0].pid)
                    return bool(found)

                _wait_until(proc, log, writer_blocked)
                proc.kill()  # the batch, its handoffs and scores are inserted; the commit never comes
                proc.wait(timeout=10)
            lock.rollback()  # release the row: the orphaned backend finishes its UPDATE, finds no client, rolls back
        assert writer_pid is not None
        with engine.connect() as watch:
            deadline = time.monotonic() + 30
            alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
            while watch.execute(alive, {"pid": writer_pid}).scalar_one() and time.monotonic() < deadline:
                watch.rollback()
                time.sleep(0.05)
            assert watch.execute(alive, {"pid": writer_pid}).scalar_one() == 0, "the killed writer's backend lingers"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        engine.dispose()
    return proc


def test_sigkill_inside_the_batch_write_leaves_the_previous_batch_and_the_rerun_completes(
    champion: dict[str, Any],
    db_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    _score_in_process(champion, db_url)
    with ScoreStore(db_url) as store:
        previous = store.current_batch()
    assert previous is not None and previous.n_scores > 0

    kill = _kill_postgres_writer if sa.make_url(db_url).get_backend_name() == "postgresql" else _kill_sqlite_writer
    proc = kill(champion, db_url, tmp_path)
    assert proc.returncode == -9  # SIGKILL, mid-write
    _assert_only_batch(db_url, previous.batch_id, previous.n_scores, previous.n_handoffs)

    _score_in_process(champion, db_url)
    with ScoreStore(db_url) as store:
        batches = store.batches(limit=10)
        current = store.current_batch()
        frame = store.current_frame()
    assert current is not None and current.batch_id != previous.batch_id
    assert [b.batch_id for b in batches] == [current.batch_id, previous.batch_id]
    assert current.n_scores == previous.n_scores == len(frame)  # same data, same open leads: complete
    rows = _rows(db_url)
    assert len(rows["scores"]) == previous.n_scores + current.n_scores
    assert {r["batch_id"] for r in rows["scores"]} == {previous.batch_id, current.batch_id}
