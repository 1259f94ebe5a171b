"""Faults around the served model (issue 15): an unreachable tracking server, corrupted or incompatible versions.

- Tracking server unreachable at start: ``/ready`` is 503 and says why, scoring is 503 ``not_ready``; the
  service retries and becomes ready once a (loopback) tracking server answers. Unreachable again while
  running: the loaded model keeps serving and ``/ready`` says the registry cannot be reached.
- A promoted version whose artifacts are truncated, or whose model does not fit the service (another
  horizon, features the service's data does not have), is rejected and the old version keeps serving.

Shares the module data set and registered model of ``tests/serving/test_app.py``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.package.bundle import SCORING_MODEL_FILE, LoadedModelInfo, read_scoring_model, write_scoring_model
from serving import model_watch
from serving.app import create_app
from serving.model_watch import ChampionWatcher
from tests.serving.app_support import (
    AUTH,
    Trained,
    known_leads,
    move_champion_to_a_failing_version,
    new_version,
    service_config,
    wait_for,
)

MLFLOW = Path(sys.executable).with_name("mlflow")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def fail_fast_mlflow_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``leadscore serve`` sets unless the environment does: the watcher retries, not each MLflow call."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class TrackingServer:
    """``mlflow server`` on a loopback port over the session's tracking store; stopped by :meth:`stop`."""

    def __init__(self, backend_uri: str, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    *(str(MLFLOW), "server", "--backend-store-uri", backend_uri),
                    *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            )

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"mlflow server exited:\n{self.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"mlflow server not up after {timeout:.0f} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server and its workers (own process group)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture
def tracking_server(trained: Trained, tmp_path: Path) -> Iterator[Callable[[int], TrackingServer]]:
    started: list[TrackingServer] = []

    def start(port: int) -> TrackingServer:
        server = TrackingServer(trained.tracking_uri, port, tmp_path / f"mlflow-server-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.mark.slow  # starts a real mlflow server (~20 s)
def test_unreachable_tracking_server_at_start_then_reachable_then_gone_while_serving(
    trained: Trained,
    tracking_server: Callable[[int], TrackingServer],
    fail_fast_mlflow_http: None,
) -> None:
    port = _free_port()  # nothing listens on it yet: connection refused
    config = service_config(trained, tracking_uri=f"http://127.0.0.1:{port}", poll_seconds=0.3, retry_seconds=0.3)
    lead = known_leads(trained, 1)[0]
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        ready = client.get("/ready", headers=AUTH)
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False and body["model"] is None
        detail = body["detail"]
        assert f"models:/{trained.model_name}@champion" in detail and "could not be resolved in the registry" in detail
        assert "no model is loaded" in detail
        scored = client.post("/v2/score", headers=AUTH, json={"items": [{"lead_id": lead}]})
        assert scored.status_code == 503 and scored.json()["error"]["code"] == "not_ready"
        assert scored.headers["Retry-After"]

        server = tracking_server(port)
        server.wait_up()
        # the watcher retries on its own: ready once the tracking server answers
        wait_for(lambda: client.get("/ready", headers=AUTH).status_code == 200, timeout=60)
        ready = client.get("/ready", headers=AUTH).json()
        assert ready["ready"] is True and ready["model"]["version"] == "1" and ready["detail"] is None
        scored = client.post("/v2/score", headers=AUTH, json={"items": [{"lead_id": lead}]})
        assert scored.status_code == 200 and scored.json()["results"][0]["status"] == "scored"

        server.stop()  # the tracking server goes away while the service runs
        wait_for(lambda: client.get("/ready", headers=AUTH).json()["detail"] is not None, timeout=30)
        ready = client.get("/ready", headers=AUTH)
        assert ready.status_code == 200
        body = ready.json()
        assert body["ready"] is True and body["model"]["version"] == "1"
        assert "could not be resolved in the registry" in body["detail"]
        assert "still serving version 1" in body["detail"]
        scored = client.post("/v2/score", headers=AUTH, json={"items": [{"lead_id": lead}]})
        assert scored.status_code == 200
        assert scored.json()["results"][0]["prediction"]["model"]["version"] == "1"


def test_a_registry_check_that_hangs_is_reported_while_the_model_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls = iter([1])

    def resolver() -> int:
        try:
            return next(calls)
        except StopIteration:
            release.wait(30)  # the registry accepts the connection and never answers
            raise TimeoutError("read timed out") from None

    info = LoadedModelInfo("models:/m/1", "m", 1, None, None)
    watcher: ChampionWatcher[str] = ChampionWatcher(
        "m", "champion", lambda model, i: "service", loader=lambda uri: ("model", info), resolver=resolver
    )
    assert watcher.check_once() is True and watcher.status() is None
    monkeypatch.setattr(model_watch, "CHECK_OVERDUE_SECONDS", 0.0)
    hung = threading.Thread(target=watcher.check_once)
    hung.start()
    try:
        wait_for(lambda: watcher.status() is not None, timeout=10)
        status = watcher.status() or ""
        assert "checking models:/m@champion has not finished since" in status and "still serving version 1" in status
        assert watcher.current is not None and watcher.current.version == 1
    finally:
        release.set()
        hung.join(30)
    assert "TimeoutError: read timed out" in (watcher.status() or "")


def test_first_load_waits_only_so_long_then_the_service_answers_not_ready() -> None:
    release = threading.Event()

    def resolver() -> int:
        release.wait(30)
        raise ConnectionError("tracking server unreachable")

    watcher: ChampionWatcher[str] = ChampionWatcher(
        "m",
        "champion",
        lambda m, i: m,
        poll_seconds=30,
        retry_seconds=0.05,
        loader=lambda uri: 1 / 0,
        resolver=resolver,
    )
    watcher.start(follow=False)
    try:
        assert watcher.wait_first_attempt(0.2) is False  # the first attempt hangs: the caller goes on
        assert "first attempt in progress" in (watcher.status() or "")
        release.set()
        assert watcher.wait_first_attempt(10) is True
        assert watcher.current is None
        assert "ConnectionError: tracking server unreachable; no model is loaded" in (watcher.status() or "")
    finally:
        release.set()
        watcher.stop()


# -- corrupted and incompatible versions -----------------------------------------------------------
def _local_copy(trained: Trained, into: Path) -> Path:
    """A copy of version 1's model directory (MLmodel, artifacts/...)."""
    import mlflow

    client = mlflow.MlflowClient(trained.tracking_uri)
    uri = client.get_model_version_download_uri(trained.model_name, "1")
    into.mkdir(parents=True)
    return Path(
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(into), tracking_uri=trained.tracking_uri)
    )


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 100
    path.write_bytes(data[: len(data) // 2])


def _rewrite_model(path: Path, change: Callable[[Any], None]) -> None:
    model = read_scoring_model(path)
    change(model)
    write_scoring_model(model, path)


def _other_horizon(model: Any) -> None:
    model.spec = dataclasses.replace(model.spec, horizon_days=model.spec.horizon_days + 30)


def _unknown_feature(model: Any) -> None:
    model.encoder.numeric = [*model.encoder.numeric[:-1], "feature_of_a_newer_release"]


CORRUPTIONS: dict[str, tuple[Callable[[Path], None], str]] = {
    "scoring-model-truncated": (lambda d: _truncate(next(d.rglob(SCORING_MODEL_FILE))), "failed to load"),
    "mlmodel-truncated": (lambda d: _truncate(d / "MLmodel"), "failed to load"),
    "artifacts-missing": (lambda d: next(d.rglob(SCORING_MODEL_FILE)).unlink(), "failed to load"),
    "other-horizon": (lambda d: _rewrite_model(next(d.rglob(SCORING_MODEL_FILE)), _other_horizon), "horizon"),
    "unknown-feature": (
        lambda d: _rewrite_model(next(d.rglob(SCORING_MODEL_FILE)), _unknown_feature),
        "feature_of_a_newer_release",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupted_or_incompatible_version_is_rejected_and_the_old_one_serves(
    trained: Trained,
    tmp_path: Path,
    corruption: str,
) -> None:
    from mlflow import MlflowClient

    corrupt, expected = CORRUPTIONS[corruption]
    registry = MlflowClient(trained.tracking_uri)
    name = f"faults-{uuid.uuid4().hex[:8]}"
    registry.create_registered_model(name)
    good = new_version(trained, name, trained.source)
    registry.set_registered_model_alias(name, "champion", str(good))
    bad_dir = _local_copy(trained, tmp_path / "bad")
    corrupt(bad_dir)
    bad = new_version(trained, name, str(bad_dir))
    lead = known_leads(trained, 1)[0]
    with TestClient(
        create_app(service_config(trained, model_name=name, poll_seconds=0.1)), raise_server_exceptions=False
    ) as c:
        assert c.get("/ready", headers=AUTH).json()["model"]["version"] == str(good)
        body = move_champion_to_a_failing_version(c, registry, name, bad, served=good)
        assert expected in body["detail"]
        scored = c.post("/v2/score", headers=AUTH, json={"items": [{"lead_id": lead}]})
        assert scored.status_code == 200
        assert scored.json()["results"][0]["prediction"]["model"]["version"] == str(good)


def test_tempdir_is_not_leaked_by_a_failed_load(trained: Trained, tmp_path: Path) -> None:
    """A version that fails to load leaves no downloaded copy behind (``leadscore-load-*`` temporaries)."""
    from models.package.bundle import load_scoring_model

    bad_dir = _local_copy(trained, tmp_path / "bad")
    _truncate(next(bad_dir.rglob(SCORING_MODEL_FILE)))
    before = set(Path(tempfile.gettempdir()).glob("leadscore-load-*"))
    with pytest.raises(Exception):  # noqa: B017  (whatever unpickling a truncated file raises)
        load_scoring_model(str(bad_dir), tracking_uri=trained.tracking_uri)
    assert set(Path(tempfile.gettempdir()).glob("leadscore-load-*")) <= before
