"""Alert rules, the JSON result and the webhook client (the end-to-end check is tests/pipelines/test_cli_monitor.py)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from models.config import MonitoringConfig
from serving.monitoring.drift import drift_report
from serving.monitoring.monitor import AlertDeliveryError, judge, post_alert, write_result
from serving.monitoring.performance import served_performance


def _drift(shift: float, n: int = 3000) -> Any:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    cur = pd.DataFrame({"a": rng.normal(shift, 1, size=n), "b": rng.normal(size=n)})
    return drift_report(ref, cur, ["a", "b"], rng.beta(2, 30, n), rng.beta(2, 30, n) + shift / 10, top_k=1)


def _outcomes(n: int, signal: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.05).astype(np.int8)
    p = np.clip(0.05 + signal * (y - 0.05) + rng.normal(0, 0.03, n), 0.001, 0.999)
    return pd.DataFrame(
        {
            "batch_id": rng.integers(1, 5, n),
            "lead_id": [f"L{i % (n // 3)}" for i in range(n)],
            "as_of": pd.Timestamp("2025-01-01", tz="UTC"),
            "readiness": p,
            "grade": np.where(p > 0.08, "A", "D"),
            "handed_off": p > 0.08,
            "converted": y,
        }
    )


def test_rules_fire_only_past_their_thresholds() -> None:
    config = MonitoringConfig()
    good = served_performance(_outcomes(4000, 0.3), n_boot=20)
    quiet, notes = judge(_drift(0.0), good, good.pr_auc, config)
    assert quiet == [] and notes == []
    drifted, _ = judge(_drift(1.5), good, good.pr_auc, config)
    assert {a.kind for a in drifted} == {"score_drift", "feature_drift"}
    assert all(a.value > a.threshold for a in drifted)
    weak = served_performance(_outcomes(4000, 0.02), n_boot=20)
    assert weak.pr_auc < 0.8 * good.pr_auc
    (alert,), _ = judge(_drift(0.0), weak, good.pr_auc, config)
    assert alert.kind == "performance" and "matured PR AUC" in alert.message
    # the same weak scores with a lower bar: no alert
    assert judge(_drift(0.0), weak, good.pr_auc, config.model_copy(update={"min_pr_auc_ratio": 0.01}))[0] == []


def test_too_few_matured_scores_are_not_judged_and_say_so() -> None:
    few = served_performance(_outcomes(300, 0.02), n_boot=10)
    alerts, notes = judge(_drift(0.0), few, 0.5, MonitoringConfig())
    assert alerts == [] and "not judged" in notes[0] and "needs 500" in notes[0]


def test_write_result_is_atomic_and_keeps_one_file_per_check(tmp_path: Path) -> None:
    doc = {"checked_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).isoformat(), "status": "ok"}
    path = write_result(doc, tmp_path / "monitor")
    assert path.name == "monitor-20260102T030405000000Z.json"
    assert json.loads((tmp_path / "monitor" / "latest.json").read_text()) == doc
    assert sorted(p.name for p in (tmp_path / "monitor").iterdir()) == ["latest.json", path.name]


class _Handler(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 204

    def do_POST(self) -> None:
        type(self).bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    class Handler(_Handler):
        bodies: ClassVar[list[dict[str, Any]]] = []
        status: ClassVar[int] = 204

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", Handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def test_post_alert_sends_json_and_reports_errors(server: tuple[str, type[_Handler]]) -> None:
    url, handler = server
    assert post_alert(url, {"status": "alert", "alerts": [{"kind": "score_drift"}]}) == 204
    assert handler.bodies == [{"status": "alert", "alerts": [{"kind": "score_drift"}]}]
    handler.status = 500
    with pytest.raises(AlertDeliveryError, match="500"):
        post_alert(url, {"status": "alert"})
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.raises(AlertDeliveryError, match="unreachable"):
        post_alert(f"http://127.0.0.1:{closed}/", {"status": "alert"}, timeout=2)
    with pytest.raises(AlertDeliveryError, match="http"):
        post_alert("file:///etc/passwd", {})
