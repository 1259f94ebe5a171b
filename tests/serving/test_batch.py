"""score_batch: atomic batches with history, trends, cool-downs, export; the ``leadscore score`` command."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from serving.batch import score_batch
from serving.policy import HandoffPolicy
from serving.service import default_as_of
from serving.stores import EXPORT_COLUMNS, ScoreStore
from serving.stores import store as store_module
from tests.models.sim_scoring import SimulatedScoring, simulated_scoring
from tests.serving import test_stores
from tests.serving.test_service import Info, model_mode_policy

T0 = datetime(2026, 1, 2, 2, 0, tzinfo=UTC)

# The store tests' backends: a SQLite file and, with LEADSCORE_TEST_POSTGRES_URL, a private PostgreSQL schema.
postgres_url = test_stores.postgres_url
db_url = test_stores.db_url
open_store = test_stores.open_store


@pytest.fixture(scope="module")
def sim() -> SimulatedScoring:
    return simulated_scoring()


@pytest.fixture(scope="module")
def policy() -> HandoffPolicy:
    return model_mode_policy()


def test_batches_are_atomic_keep_history_and_respect_cooldowns(
    sim: SimulatedScoring, policy: HandoffPolicy, open_store: Callable[[], ScoreStore]
) -> None:
    store = open_store()
    first = score_batch(sim.history, sim.model, Info(), policy, store, scored_at=T0)
    assert first.as_of == default_as_of(sim.data_end, T0)  # capped at the data end + 1 day
    assert first.batch.n_scores == first.n_leads > 0
    assert first.trends == {"new": first.n_leads}
    assert first.n_handoffs == first.grades["A"] + first.grades["B"] > 0  # min grade B, nobody cooling down
    current = store.current_frame()
    assert len(current) == first.n_leads and current["batch_id"].eq(first.batch.batch_id).all()
    explained = current["reasons"].notna()
    assert (explained == (current["grade"].isin(["A", "B"]) | current["handoff"])).all()
    assert current["next_best_action"].notna().sum() <= explained.sum()
    assert current["needs"].notna().all()
    assert {q.lead_id for q in first.queue} <= set(current.loc[current["handoff"], "lead_id"])
    assert [q.readiness for q in first.queue] == sorted((q.readiness for q in first.queue), reverse=True)

    # A second night: same data, so the same scores (steady) and every handed-off lead is cooling down.
    second = score_batch(sim.history, sim.model, Info(), policy, store, scored_at=T0 + timedelta(days=1))
    assert second.batch.batch_id > first.batch.batch_id
    assert second.trends == {"steady": second.n_leads}
    assert second.n_handoffs == 0
    rules = store.current_frame().set_index("lead_id")["handoff_rule"]
    handed_first = current.loc[current["handoff"], "lead_id"]
    assert rules.loc[handed_first].str.contains("cool-down: handed off 2026-01-02").all()
    # history is kept: both batches are stored and the first one's scores are still readable
    assert [b.batch_id for b in store.batches()] == [second.batch.batch_id, first.batch.batch_id]
    assert store.latest_score(handed_first.iloc[0]).batch_id == second.batch.batch_id

    # After the cool-down the same leads are handed off again.
    third = score_batch(sim.history, sim.model, Info(), policy, store, scored_at=T0 + timedelta(days=14))
    assert third.n_handoffs == first.n_handoffs


def test_a_failed_write_leaves_the_previous_batch_current(
    sim: SimulatedScoring, policy: HandoffPolicy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ScoreStore(f"sqlite:///{tmp_path / 'leadscore.db'}")
    first = score_batch(sim.history, sim.model, Info(), policy, store, scored_at=T0)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store_module, "insert_many", broken)
    with pytest.raises(OSError, match="disk full"):
        score_batch(sim.history, sim.model, Info(), policy, store, scored_at=T0 + timedelta(days=15))
    assert store.current_batch().batch_id == first.batch.batch_id
    assert len(store.batches()) == 1
    assert store.count_handoffs_since(T0 + timedelta(days=1)) == 0  # the failed batch's handoffs rolled back
    store.close()


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_for_crm_import(sim: SimulatedScoring, policy: HandoffPolicy, tmp_path: Path, suffix: str) -> None:
    store = ScoreStore(f"sqlite:///{tmp_path / 'leadscore.db'}")
    out = tmp_path / f"scores{suffix}"
    as_of = pd.Timestamp(sim.data_end - pd.Timedelta(days=30)).floor("D")
    summary = score_batch(sim.history, sim.model, Info(), policy, store, as_of=as_of, out=out, scored_at=T0)
    assert summary.export == out
    exported = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(exported.columns) == list(EXPORT_COLUMNS)
    assert len(exported) == summary.n_leads
    assert int(exported["handoff"].sum()) == summary.n_handoffs
    assert pd.Timestamp(exported["as_of"].iloc[0]) == as_of
    with pytest.raises(ValueError, match="unsupported export format"):
        score_batch(sim.history, sim.model, Info(), policy, store, out=tmp_path / "scores.xlsx")
    assert len(store.batches()) == 1  # refused before anything was written
    store.close()


# -- the CLI ---------------------------------------------------------------------------------------
runner = CliRunner()
FAST_CONFIG = {
    "version": 1,
    "train": {
        "readiness": {"num_boost_round": 40, "early_stopping_rounds": 10, "params": {"num_threads": 1}},
        "stage": {"num_boost_round": 20, "early_stopping_rounds": 10, "params": {"num_threads": 1}},
        "evaluation": {"plots": False, "shap_sample_rows": 100},
    },
}


@pytest.mark.slow
def test_score_command_scores_with_the_champion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: None
) -> None:
    from pipelines.cli import app

    data, home = tmp_path / "data", tmp_path / "home"
    assert runner.invoke(app, ["generate", "--leads", "3000", "--seed", "5", "--out", str(data)]).exit_code == 0
    config = tmp_path / "leadscore.yaml"
    config.write_text(yaml.safe_dump(FAST_CONFIG))
    monkeypatch.setenv("LEADSCORE_HOME", str(home))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.delenv("LEADSCORE_STORE_URL", raising=False)
    trained = runner.invoke(app, ["train", "--data", str(data), "--config", str(config)])
    assert trained.exit_code == 0, trained.output
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(model_mode_policy().model_dump(mode="json")))

    out = tmp_path / "scores.csv"
    result = runner.invoke(app, ["score", "--data", str(data), "--out", str(out), "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "score batch 1" in text and "leadscore version 1" in text
    assert "top of the handoff queue" in text
    store = ScoreStore(f"sqlite:///{home / 'leadscore.db'}")  # the default store in the home
    batch = store.current_batch()
    assert batch is not None and batch.model_version == "1"
    assert len(pd.read_csv(out)) == batch.n_scores
    assert re.search(rf"open leads scored\W+{batch.n_scores:,}\b", text)
    store.close()

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\npolicy_version: x\nhorizon_days: 90\ngrading: {mode: guess}\n")
    refused = runner.invoke(app, ["score", "--data", str(data), "--policy", str(bad)])
    assert refused.exit_code == 2 and "grading" in refused.output and "Traceback" not in refused.output
