"""``leadscore monitor`` end to end: silent on undrifted data, an alert (exit 1, error line, webhook) on drift.

Both data sets come from the same seed; the drifted one (``generate --drift-after``) is identical before
the drift date, so the champion trained on the undrifted data is the one a user would have had when the
behaviour changed.
"""

from __future__ import annotations

import itertools
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()
SEED = 5
LEADS = 3000
DRIFT_AFTER = "2025-08-01"  # five months before the data end: every feature window has drifted
FAST_CONFIG = {
    "version": 1,
    "train": {
        "readiness": {"num_boost_round": 60, "early_stopping_rounds": 10},
        "stage": {"num_boost_round": 30, "early_stopping_rounds": 10},
        "evaluation": {"plots": False, "shap_sample_rows": 200},
    },
}


def _flat(text: str) -> str:
    return " ".join(text.split())


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "type": self.headers["Content-Type"], "body": json.loads(body)})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, type[_Hook]]]:
    """A JSON webhook on a free loopback port, stopped at the end of the test."""

    class Hook(_Hook):
        received: ClassVar[list[dict[str, Any]]] = []
        status = 200

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alerts", Hook
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory, prefect_harness: None) -> dict[str, Path]:
    """Undrifted and drifted data (same seed), a champion trained on the undrifted data, two stores."""
    base = tmp_path_factory.mktemp("monitor")
    home = base / "home"
    mp = pytest.MonkeyPatch()
    mp.setenv("LEADSCORE_HOME", str(home))
    mp.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.delenv("LEADSCORE_ALERT_WEBHOOK_URL", raising=False)
    try:
        plain, drifted = base / "plain", base / "drifted"
        for out, extra in ((plain, []), (drifted, ["--drift-after", DRIFT_AFTER])):
            args = ["generate", "--leads", str(LEADS), "--seed", str(SEED), "--out", str(out), *extra]
            result = runner.invoke(app, args)
            assert result.exit_code == 0, result.output
        config = base / "leadscore.yaml"
        config.write_text(yaml.safe_dump(FAST_CONFIG))
        trained = runner.invoke(app, ["train", "--data", str(plain), "--config", str(config), "--work-dir", str(base)])
        assert trained.exit_code == 0, trained.output
        stores = {"plain_store": f"sqlite:///{base / 'plain.db'}", "drifted_store": f"sqlite:///{base / 'drifted.db'}"}
        for name, data, backfill in (("plain", plain, "16"), ("drifted", drifted, "0")):
            mp.setenv("LEADSCORE_STORE_URL", stores[f"{name}_store"])
            scored = runner.invoke(app, ["score", "--data", str(data), "--backfill", backfill])
            assert scored.exit_code == 0, scored.output
        mp.delenv("LEADSCORE_STORE_URL")
        yield {"base": base, "home": home, "plain": plain, "drifted": drifted, "config": config, **stores}  # type: ignore[misc]
    finally:
        mp.undo()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, monitored: dict[str, Any]) -> dict[str, Any]:
    monkeypatch.setenv("LEADSCORE_HOME", str(monitored["home"]))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", f"sqlite:///{monitored['home'] / 'mlflow.db'}")
    monkeypatch.delenv("LEADSCORE_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("LEADSCORE_STORE_URL", raising=False)
    return monitored


def test_backfill_wrote_past_batches_with_matured_labels(env: dict[str, Any]) -> None:
    from serving.stores import ScoreStore

    store = ScoreStore(env["plain_store"])
    try:
        batches = sorted(store.batches(limit=100), key=lambda b: b.batch_id)
    finally:
        store.close()
    assert len(batches) == 17  # 16 past weeks, then today's batch
    as_of = [pd.Timestamp(b.as_of) for b in batches[:-1]]
    assert as_of == sorted(as_of) and all(b - a == pd.Timedelta(days=7) for a, b in itertools.pairwise(as_of))
    assert all(pd.Timestamp(b.scored_at) == pd.Timestamp(b.as_of) for b in batches[:-1])
    # scoring again the same day skips the dates the store already covers (on a copy of the store)
    copy = env["base"] / "plain-copy.db"
    shutil.copyfile(env["base"] / "plain.db", copy)
    again = runner.invoke(
        app,
        ["score", "--data", str(env["plain"]), "--backfill", "16"],
        env={"LEADSCORE_STORE_URL": f"sqlite:///{copy}"},
    )
    assert again.exit_code == 0, again.output
    assert "backfill skipped 16 date(s)" in _flat(again.output)


def test_monitor_is_silent_on_undrifted_data(env: dict[str, Any], webhook: tuple[str, type[_Hook]]) -> None:
    url, hook = webhook
    out = env["base"] / "results-plain"
    result = runner.invoke(
        app,
        ["monitor", "--data", str(env["plain"]), "--store", env["plain_store"], "--out-dir", str(out)],
        env={"LEADSCORE_ALERT_WEBHOOK_URL": url},
    )
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "no alert" in text and "ALERT" not in text
    doc = json.loads((out / "latest.json").read_text())
    assert doc["status"] == "ok" and doc["alerts"] == []
    assert doc["reference"]["source"] == "logged with the champion's training run"
    assert doc["drift"]["score_psi"] < 0.2
    top = [f for f in doc["drift"]["features"] if f["top"]]
    assert len(top) == 10 and max(f["psi"] for f in top) < 0.25
    # the backfill left matured batches: served performance is measured (and judged)
    perf = doc["performance"]
    assert perf["n"] > 500 and perf["n_batches"] >= 2 and 0.5 < perf["roc_auc"] <= 1
    assert {g["grade"] for g in perf["by_grade"]} == {"A", "B", "C", "D"}
    assert hook.received == []  # no alert, no POST
    assert len(list(out.glob("monitor-*.json"))) == 1


def test_monitor_logs_each_check_as_an_mlflow_run(env: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    out = env["base"] / "results-mlflow"
    result = runner.invoke(
        app, ["monitor", "--data", str(env["plain"]), "--store", env["plain_store"], "--out-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{env['home'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("leadscore")
    runs = client.search_runs([experiment.experiment_id], "tags.`leadscore.kind` = 'monitor'")
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    newest = max(runs, key=lambda r: r.info.start_time)
    assert "monitor.score_psi" in newest.data.metrics and newest.data.tags["leadscore.monitor.status"] == "ok"
    assert {a.path for a in client.list_artifacts(newest.info.run_id)} == {"monitor.json"}


def test_monitor_bad_input_exits_2(env: dict[str, Any], tmp_path: Path) -> None:
    missing = runner.invoke(app, ["monitor", "--data", str(tmp_path / "nope"), "--store", env["plain_store"]])
    assert missing.exit_code == 2, missing.output
    fresh = runner.invoke(
        app,
        ["monitor", "--data", str(env["plain"]), "--store", env["plain_store"]],
        env={
            "LEADSCORE_HOME": str(tmp_path / "empty"),
            "LEADSCORE_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}",
        },
    )
    assert fresh.exit_code == 2, fresh.output
    assert "champion" in _flat(fresh.output)


def test_generate_drift_after_outside_the_span_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["generate", "--leads", "100", "--out", str(tmp_path / "d"), "--drift-after", "2030-01-01"]
    )
    assert result.exit_code == 2
    assert "inside the simulated span" in _flat(result.output)


def test_monitor_alerts_on_drifted_data(env: dict[str, Any], webhook: tuple[str, type[_Hook]]) -> None:
    url, hook = webhook
    out = env["base"] / "results-drifted"
    result = runner.invoke(
        app,
        ["monitor", "--data", str(env["drifted"]), "--store", env["drifted_store"], "--out-dir", str(out)],
        env={"LEADSCORE_ALERT_WEBHOOK_URL": url},
    )
    assert result.exit_code == 1, result.output
    text = _flat(result.output)
    doc = json.loads((out / "latest.json").read_text())
    assert doc["status"] == "alert"
    features = {f["feature"]: f for f in doc["drift"]["features"]}
    alerting = sorted(name for name, f in features.items() if f["top"] and f["psi"] > 0.25)
    assert alerting and "ALERT" in text and all(name in text for name in alerting)
    # both shifts show: the revenue unit change and the behaviour change (e-mail opens turned into visits)
    assert features["annual_revenue_musd"]["psi"] > 0.2 and features["n_email_open_90d"]["psi"] > 0.25
    kinds = {a["kind"] for a in doc["alerts"]}
    assert "feature_drift" in kinds
    (post,) = hook.received
    assert post["path"] == "/alerts" and post["type"].startswith("application/json")
    assert post["body"]["status"] == "alert" and {a["kind"] for a in post["body"]["alerts"]} == kinds
    assert all(name in post["body"]["text"] for name in alerting)


def test_undrifted_and_drifted_data_agree_before_the_drift_date(env: dict[str, Any]) -> None:
    plain = pd.read_parquet(env["plain"] / "activities.parquet")
    drifted = pd.read_parquet(env["drifted"] / "activities.parquet")
    cut = pd.Timestamp(DRIFT_AFTER, tz="UTC")
    before_plain = plain[pd.to_datetime(plain["occurred_at"], utc=True) < cut].reset_index(drop=True)
    before_drifted = drifted[pd.to_datetime(drifted["occurred_at"], utc=True) < cut].reset_index(drop=True)
    pd.testing.assert_frame_equal(before_plain, before_drifted)
    leads_plain = pd.read_parquet(env["plain"] / "leads.parquet")
    leads_drifted = pd.read_parquet(env["drifted"] / "leads.parquet")
    old = pd.to_datetime(leads_plain["created_at"], utc=True) < cut
    pd.testing.assert_frame_equal(leads_plain[old], leads_drifted[old])
    new_rev = leads_drifted.loc[~old, "annual_revenue_musd"] / leads_plain.loc[~old, "annual_revenue_musd"]
    share = float((new_rev.dropna().round(6) == 1000.0).mean())
    assert 0.4 < share < 0.6  # half of the new leads typed revenue in thousands


def test_feedback_from_the_stage_history(env: dict[str, Any]) -> None:
    copy = env["base"] / "plain-feedback.db"
    shutil.copyfile(env["base"] / "plain.db", copy)
    url = f"sqlite:///{copy}"
    result = runner.invoke(app, ["feedback", "--data", str(env["plain"]), "--store", url])
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert "sales verdicts from the stage history (sql or later = accepted" in text
    from serving.stores import ScoreStore

    with ScoreStore(url) as store:
        left = len(store.handoffs_without_feedback())
    stored = int(text.split("; ")[-1].split(" stored")[0].replace(",", ""))
    assert stored > 0 and f"of {stored + left:,} handoffs without feedback" in text
    again = runner.invoke(app, ["feedback", "--data", str(env["plain"]), "--store", url])
    assert again.exit_code == 0 and "; 0 stored" in _flat(again.output)
    wrong = runner.invoke(app, ["feedback", "--data", str(env["plain"]), "--store", url, "--accept-stage", "lost"])
    assert wrong.exit_code == 2 and "accept stage 'lost'" in _flat(wrong.output)
