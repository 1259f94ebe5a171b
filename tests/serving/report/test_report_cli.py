"""``leadscore report`` and the ``report`` flow on the report demo (kept next to the demo fixture it shares:
training the demo champion once for the package saves most of a minute of suite time)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from serving.stores import ScoreStore
from tests.serving.report.conftest import Demo

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, demo: Demo, tmp_path: Path, prefect_harness: None) -> Path:
    monkeypatch.setenv("LEADSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LEADSCORE_MLFLOW_TRACKING_URI", demo.tracking_uri)
    monkeypatch.setenv("LEADSCORE_MODEL_NAME", demo.model_name)
    monkeypatch.setenv("LEADSCORE_STORE_URL", demo.store_url)
    return tmp_path


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_report_command_writes_the_page_and_logs_it_to_the_champion_run(env: Path, demo: Demo) -> None:
    from mlflow import MlflowClient

    out = env / "out" / "alignment.html"
    result = runner.invoke(app, ["report", "--data", str(demo.data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = _flat(result.output)
    assert f"report written: {out}" in _flat(result.output.replace("\n", ""))
    assert "Sales accepted 50 %" in text
    assert f"logged to MLflow run {demo.run_id}" in text
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "6. Model card" in html
    # drift against the reference logged with the champion's run (the same simulated data: nothing moved much)
    assert "Drift could not be computed" not in html and "has no drift reference" not in html
    assert "No feature drifted" in html or "features drifted" in html
    assert not list(out.parent.glob(".*.tmp"))  # atomic: no temporary file left behind
    artifacts = [a.path for a in MlflowClient(demo.tracking_uri).list_artifacts(demo.run_id, "report")]
    assert artifacts == ["report/alignment.html"]


def test_report_defaults_to_the_home_and_renders_without_history(env: Path, demo: Demo) -> None:
    result = runner.invoke(app, ["report"])
    assert result.exit_code == 0, result.output
    default = env / "home" / "report" / "report.html"
    assert default.exists()
    html = default.read_text()
    assert "Built without the prospect history (--data)" in html
    assert "Drift needs the prospect history" in html
    assert "Sales accepted" in html  # feedback comes from the store alone
    # outcomes are missing because no data directory was given, not because nothing matured: say so, and the fix
    text = _flat(result.output)
    assert "no served score has matured" not in text.lower() and "no served score has matured" not in html.lower()
    assert "Handed-off and missed conversions are not measurable: no data directory was given" in text
    assert "pass --data DIR to leadscore report" in text


def test_since_limits_the_period(env: Path, demo: Demo) -> None:
    out = env / "since.html"
    result = runner.invoke(app, ["report", "--since", "2025-09-01", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "period: since 2025-09-01" in html
    with ScoreStore(demo.store_url) as store:
        batches = store.batches(limit=1000)
    expected = sum(b.scored_at >= datetime(2025, 9, 1, tzinfo=UTC) for b in batches)
    assert 0 < expected < len(batches)
    assert re.search(rf"\b{expected} scoring batch(es)?\s+\(", html)
    # The backfilled ones are named as such (scored after the fact); the last, live batch is not.
    backfilled = sum(
        bool((b.details or {}).get("backfilled")) for b in batches if b.scored_at >= datetime(2025, 9, 1, tzinfo=UTC)
    )
    assert 0 < backfilled == expected - 1
    assert re.search(rf"\b{backfilled} of them backfilled \(scored after the fact", " ".join(html.split()))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "last tuesday"),
        (["--out", "report.pdf"], "HTML file"),
        (["--effects", "missing.parquet"], "no such effects table"),
    ],
)
def test_bad_options_are_clear_errors(env: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2, result.output
    assert message in _flat(result.output)


def test_the_model_card_says_why_the_version_is_the_champion(env: Path, demo: Demo) -> None:
    from mlflow import MlflowClient

    from models.package.registry import DECISION_TAG

    out = env / "card.html"
    assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 0
    assert "Why it is the champion</th><td>no promotion decision recorded on this version" in out.read_text()
    client = MlflowClient(demo.tracking_uri, registry_uri=demo.tracking_uri)
    version = client.get_model_version_by_alias(demo.model_name, "champion").version
    reason = "promoted: no champion yet: the first model becomes champion; WARNING logistic does better on pr_auc"
    client.set_model_version_tag(demo.model_name, version, DECISION_TAG, "promoted")  # as the registry records it
    client.set_model_version_tag(demo.model_name, version, f"{DECISION_TAG}.reason", reason)
    try:
        assert runner.invoke(app, ["report", "--out", str(out)]).exit_code == 0
        assert f"Why it is the champion</th><td>{reason}</td>" in out.read_text()
    finally:
        client.delete_model_version_tag(demo.model_name, version, DECISION_TAG)
        client.delete_model_version_tag(demo.model_name, version, f"{DECISION_TAG}.reason")
