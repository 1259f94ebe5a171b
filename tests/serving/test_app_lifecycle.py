"""The champion hot swap (serving/model_watch.py) and the service's lifecycle: the served report, a service
without a loadable model, the watcher, the periodic thread, refused settings and keys."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.package.bundle import LoadedModelInfo
from serving.app import create_app
from serving.model_watch import ChampionWatcher
from tests.serving.app_support import (
    AUTH,
    OTHER_KEY,
    Trained,
    known_leads,
    move_champion_to_a_failing_version,
    new_version,
    service_config,
    wait_for,
)


def test_report_is_served_with_the_same_keys_and_is_404_json_before_the_first(trained: Trained, tmp_path: Path) -> None:
    from serving.report.render import build_report, write_report
    from tests.serving.report import factories

    path = tmp_path / "report" / "report.html"
    with TestClient(create_app(service_config(trained, report_path=path)), raise_server_exceptions=False) as app_client:
        assert app_client.get("/v1/report").status_code == 401
        assert app_client.get("/v1/report", headers={"Authorization": f"Bearer {OTHER_KEY}"}).status_code == 403
        missing = app_client.get("/v1/report", headers=AUTH)
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/json")
        body = missing.json()["error"]
        assert body["code"] == "not_found" and "leadscore report" in body["message"] and body["request_id"]

        html, _ = build_report(factories.inputs())
        write_report(html, path)
        found = app_client.get("/v1/report", headers=AUTH)
        assert found.status_code == 200
        assert found.headers["content-type"] == "text/html; charset=utf-8"
        assert found.text == path.read_text() and "Marketing &amp; sales alignment report" in found.text
        assert "/v1/report" in app_client.get("/openapi.json").json()["paths"]
    with TestClient(create_app(service_config(trained)), raise_server_exceptions=False) as no_report:
        assert no_report.get("/v1/report", headers=AUTH).status_code == 404


def test_newly_promoted_champion_is_picked_up_and_a_failing_one_keeps_the_old(trained: Trained) -> None:
    from mlflow import MlflowClient

    registry = MlflowClient(trained.tracking_uri, registry_uri=trained.tracking_uri)
    name = f"hot-{uuid.uuid4().hex[:8]}"
    registry.create_registered_model(name)
    v1 = new_version(trained, name, trained.source)
    registry.set_registered_model_alias(name, "champion", str(v1))
    config = service_config(trained, model_name=name, poll_seconds=0.1)
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        assert test_client.get("/v1/model", headers=AUTH).json()["version"] == str(v1)

        v2 = new_version(trained, name, trained.source)
        registry.set_registered_model_alias(name, "champion", str(v2))
        wait_for(lambda: test_client.get("/ready", headers=AUTH).json()["model"]["version"] == str(v2))
        lead = known_leads(trained, 1)[0]
        scored = test_client.post("/v1/score", headers=AUTH, json={"items": [{"lead_id": lead}]})
        assert scored.json()["predictions"][0]["model"]["version"] == str(v2)

        broken = new_version(trained, name, str(Path(trained.data) / "no-such-model"))
        move_champion_to_a_failing_version(test_client, registry, name, broken, served=v2)
        still = test_client.post("/v1/score", headers=AUTH, json={"items": [{"lead_id": lead}]})
        assert still.status_code == 200 and still.json()["predictions"][0]["model"]["version"] == str(v2)

        # Rolling the alias back to the served version clears the warning.
        registry.set_registered_model_alias(name, "champion", str(v2))
        wait_for(lambda: test_client.get("/ready", headers=AUTH).json()["detail"] is None)


def test_service_without_a_loadable_model_is_not_ready(trained: Trained) -> None:
    config = service_config(trained, model_name=f"missing-{uuid.uuid4().hex[:8]}")
    with TestClient(create_app(config), raise_server_exceptions=False) as test_client:
        ready = test_client.get("/ready", headers=AUTH)
        assert ready.status_code == 503
        detail = ready.json()["detail"]
        assert ready.json()["ready"] is False and "could not be resolved in the registry" in detail
        assert "no model is loaded" in detail
        scored = test_client.post("/v1/score", headers=AUTH, json={"items": [{"lead_id": "x"}]})
        assert scored.status_code == 503 and scored.json()["error"]["code"] == "not_ready"
        assert scored.headers["Retry-After"] == "5"
        assert test_client.get("/health").status_code == 200


def test_watcher_swaps_atomically_and_logs_a_failure_once(caplog: pytest.LogCaptureFixture) -> None:
    versions = iter([1, 1, 2, 3, 3, 2])
    info = {v: LoadedModelInfo(f"models:/m/{v}", "m", v, None, None) for v in (1, 2, 3)}

    def loader(uri: str) -> tuple[Any, LoadedModelInfo]:
        v = int(uri.rsplit("/", 1)[1])
        if v == 3:
            raise OSError("artifact store unreachable")
        return f"model-{v}", info[v]

    watcher: ChampionWatcher[str] = ChampionWatcher(
        "m", "champion", lambda model, i: f"service({model})", loader=loader, resolver=lambda: next(versions)
    )
    with caplog.at_level(logging.DEBUG, logger="serving.model_watch"):
        assert watcher.check_once() is True
        first = watcher.current
        assert first is not None and first.service == "service(model-1)"
        assert watcher.check_once() is False and watcher.current is first  # same version: nothing reloaded
        assert watcher.check_once() is True and watcher.current is not None and watcher.current.version == 2
        assert watcher.check_once() is False and watcher.check_once() is False
    assert watcher.current.service == "service(model-2)"
    assert watcher.last_failure is not None and watcher.last_failure.version == 3
    assert "OSError: artifact store unreachable" in (watcher.status() or "")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # the repeated failure of the same version is not logged at error level again
    assert watcher.check_once() is False and watcher.status() is None  # alias back on the served version
    with pytest.raises(ValueError, match="poll_seconds"):
        ChampionWatcher("m", "champion", lambda m, i: m, poll_seconds=0, loader=loader, resolver=lambda: 1)


def test_serve_command_refuses_to_start_without_api_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.delenv("LEADSCORE_API_KEYS", raising=False)
    monkeypatch.delenv("LEADSCORE_API_KEYS_FILE", raising=False)
    monkeypatch.setenv("LEADSCORE_HOME", str(tmp_path))
    result = CliRunner().invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "LEADSCORE_API_KEYS" in result.output and "Traceback" not in result.output


def test_periodic_thread_survives_a_failing_round_and_stops(caplog: pytest.LogCaptureFixture) -> None:
    from serving.model_watch import PeriodicThread

    calls: list[int] = []

    def task() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("store down")

    thread = PeriodicThread("test-periodic", 0.02, task, "round failed", level=logging.WARNING)
    with caplog.at_level(logging.WARNING, logger="serving.model_watch"):
        thread.start()
        thread.start()  # idempotent: still one thread
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        thread.stop()
    assert len(calls) >= 3  # the failed first round did not end the thread
    failures = [r for r in caplog.records if r.getMessage() == "round failed"]
    assert len(failures) == 1 and failures[0].levelno == logging.WARNING and failures[0].exc_info is not None
    stopped_at = len(calls)
    time.sleep(0.1)
    assert len(calls) == stopped_at
    with pytest.raises(ValueError, match="interval"):
        PeriodicThread("bad", 0, task, "x")


def test_invalid_service_settings_are_refused_before_start(trained: Trained) -> None:
    for field, value in (("store_check_seconds", -1.0), ("poll_seconds", -1.0), ("max_body_bytes", 0)):
        with pytest.raises(ValueError, match=f"{field} must be"):
            create_app(service_config(trained, **{field: value}))
