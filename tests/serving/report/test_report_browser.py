"""The report built from a real store, opened from disk in headless Chromium with networking disabled.

Numbers on the page are checked against independent computations straight from the SQLite file and the
prospect history (not through serving.report or serving.monitoring): the acceptance rate, the conversion
per grade of matured scores and the PSI of the score.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from serving.report.build import gather_inputs
from serving.report.inputs import check_effects
from serving.report.render import build_report, write_report
from serving.stores import ScoreStore
from tests.serving.report import factories
from tests.serving.report.browser import Chromium, find_chromium
from tests.serving.report.conftest import Demo

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_chromium() is None and not os.environ.get("CI"),
        reason="no Chromium here (CI installs it: apt-get install -y chromium)",
    ),
]

EXPECTED_CHARTS = {
    "grade-conversion",
    "lift-gains",
    "calibration",
    "handoffs-weekly",
    "acceptance-grade",
    "rejection-reasons",
    "feedback-delay",
    "campaigns",
    "drift",
}
SHIFTED = "n_web_visit_30d"


# -- independent computations -------------------------------------------------------------------------
def _independent_psi(reference: np.ndarray, current: np.ndarray, bins: int = 10) -> float:
    """PSI with reference-quantile bins (right-closed), smoothing 0.5 per bin: written from the definition."""
    edges = np.unique(np.quantile(reference, np.arange(1, bins) / bins))
    ref = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=len(edges) + 1) + 0.5
    cur = np.bincount(np.searchsorted(edges, current, side="left"), minlength=len(edges) + 1) + 0.5
    r, c = ref / ref.sum(), cur / cur.sum()
    return float(np.sum((c - r) * np.log(c / r)))


def _matured_by_grade(demo: Demo) -> pd.DataFrame:
    """Conversion per grade of scores whose horizon ended inside the data, from the raw tables."""
    with sqlite3.connect(demo.store_path) as conn:
        scores = pd.read_sql(
            "SELECT s.lead_id, s.grade, b.as_of FROM scores s JOIN score_batches b ON b.batch_id = s.batch_id", conn
        )
    scores["as_of"] = pd.to_datetime(scores["as_of"], utc=True)
    horizon = pd.Timedelta(days=demo.model.horizon_days)
    end = demo.history.span[1]
    scores = scores[scores["as_of"] + horizon <= end]
    stages = demo.history.stage_history
    won = stages[stages["stage"] == demo.history.contract.stages.converted][["lead_id", "entered_at"]]
    pairs = scores.reset_index().merge(won, on="lead_id", how="left")
    hit = (pairs["entered_at"] > pairs["as_of"]) & (pairs["entered_at"] <= pairs["as_of"] + horizon)
    scores["converted"] = pairs.assign(hit=hit).groupby("index")["hit"].any()
    return scores.groupby("grade")["converted"].agg(n="size", k="sum")


def _acceptance_from_store(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        accepted, total = conn.execute("SELECT SUM(outcome = 'accepted'), COUNT(*) FROM feedback").fetchone()
    return int(accepted), int(total)


# -- the drift a test controls ----------------------------------------------------------------------
def _drift(demo: Demo, shift: bool) -> tuple[Callable[..., Any], dict[str, np.ndarray]]:
    """Reference: the champion's training rows; current: a seeded resample of those same rows (same
    distribution), with ``SHIFTED`` moved far when ``shift``."""
    from serving.monitoring.drift import drift_report

    reference = demo.train_rows.reset_index(drop=True)
    current = reference.sample(n=len(reference) // 2, replace=True, random_state=7).reset_index(drop=True)
    if shift:
        current[SHIFTED] = current[SHIFTED] * 4 + 10
    features = list(demo.model.spec.features)
    seen: dict[str, np.ndarray] = {}

    def drift(history: Any, model: Any, store: ScoreStore) -> Any:
        seen["reference"] = model.predict_readiness(reference)
        seen["current"] = model.predict_readiness(current)
        return drift_report(reference, current, features, seen["reference"], seen["current"], feature_threshold=0.2)

    return drift, seen


def _build(demo: Demo, out: Path, *, shift: bool) -> tuple[Path, Any, dict[str, np.ndarray]]:
    import mlflow

    from serving.policy import load_policy

    drift, seen = _drift(demo, shift)
    with ScoreStore(demo.store_url) as store:
        inputs = gather_inputs(
            store,
            demo.model,
            demo.info,
            load_policy(None),
            history=demo.history,
            client=mlflow.MlflowClient(tracking_uri=demo.tracking_uri),
            drift=drift,
        )
    html, sections = build_report(inputs)
    return write_report(html, out), sections, seen


_CHART_MARKS = """JSON.stringify([...document.querySelectorAll('figure.chart')].map(f => {
  const marks = [...f.querySelectorAll('[id*="-mark"]')];
  const drawn = marks.filter(m => { const b = m.getBBox(); return b.width > 0 && b.height > 0; });
  return [f.dataset.chart, marks.length, drawn.length, f.querySelector('svg').getBoundingClientRect().height];
}))"""

_TABLE = """JSON.stringify([...document.querySelectorAll('#%s table')[%d].querySelectorAll('tbody tr')]
  .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent.trim())))"""


def test_the_report_opens_offline_with_every_chart_drawn_and_the_right_numbers(demo: Demo, tmp_path: Path) -> None:
    import json

    path, sections, seen = _build(demo, tmp_path / "report.html", shift=True)
    html = path.read_text()
    for external in ("http://", "https://", "<script", " src=", "@import", "@font-face"):
        assert external not in html, external
    with Chromium(tmp_path, timeout=60) as browser:
        session, load = browser.open(path.resolve().as_uri())
        shot = browser.screenshot(session, tmp_path / "report.png")
        charts = json.loads(browser.evaluate(session, _CHART_MARKS))
        kpi = browser.evaluate(session, "document.querySelector('#handoff .kpi .value').textContent.trim()")
        kpi_ci = browser.evaluate(session, "document.querySelector('#handoff .kpi .ci').textContent.trim()")
        grades = json.loads(browser.evaluate(session, _TABLE % ("grades", 0)))
        drift_rows = json.loads(browser.evaluate(session, _TABLE % ("drift", 0)))
        summary = browser.evaluate(session, "document.querySelector('ol.summary').innerText")
    keep = os.environ.get("LEADSCORE_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)

    assert load.console_errors == []
    assert load.failed == []
    assert load.requests == [path.resolve().as_uri()]
    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert {c[0] for c in charts} == EXPECTED_CHARTS
    for name, marks, drawn, height in charts:
        assert marks > 0 and drawn > 0 and height > 100, (name, marks, drawn, height)

    # acceptance: computed straight from the SQLite file
    accepted, total = _acceptance_from_store(demo.store_path)
    assert (accepted, total) == (demo.n_accepted, demo.n_feedback)
    assert kpi == f"{100 * accepted / total:.0f} %"
    assert f"{accepted:,} of {total:,} verdicts" in kpi_ci
    assert f"Sales accepted {100 * accepted / total:.0f} %" in summary

    # conversion per grade on matured scores: from the raw tables and the history
    expected = _matured_by_grade(demo)
    assert expected["n"].sum() > 1000
    shown = {row[0]: row for row in grades}
    for grade, row in expected.iterrows():
        k, n = int(row["k"]), int(row["n"])
        assert shown[grade][3] == f"{k:,} of {n:,}", grade
        assert shown[grade][1] == f"{100 * k / n:.1f} %", grade

    # drift: the shifted feature is flagged, the score PSI is the independent one
    flagged = [r[0] for r in drift_rows if r[2] == "drifted"]
    assert flagged == [SHIFTED]
    score_row = next(r for r in drift_rows if r[0] == "score")
    assert float(score_row[1]) == pytest.approx(_independent_psi(seen["reference"], seen["current"]), abs=5e-4)
    assert sections.drift.flagged == [SHIFTED]


def test_same_distribution_flags_no_drift(demo: Demo, tmp_path: Path) -> None:
    path, sections, seen = _build(demo, tmp_path / "report.html", shift=False)
    assert sections.drift.n_features > 10
    assert sections.drift.flagged == []
    assert sections.drift.score is not None and not sections.drift.score.flagged
    assert sections.drift.score.psi == pytest.approx(_independent_psi(seen["reference"], seen["current"]), abs=5e-4)
    assert "No feature drifted" in path.read_text()


_HEADERS = """JSON.stringify([...document.querySelectorAll('#conversions table')].map(t => {
  const box = t.parentElement.getBoundingClientRect();
  return [t.getBoundingClientRect().right - box.right, [...t.querySelectorAll('th')].map(th => {
    const r = th.getBoundingClientRect();
    return [th.textContent.trim(), th.scrollWidth - th.clientWidth, r.right - box.right,
      getComputedStyle(th).whiteSpace, r.height];
  })];
}))"""


def test_effects_table_headers_wrap_instead_of_running_off_the_page(tmp_path: Path) -> None:
    """Section 4 with an effects table (8 columns): every header is shown in full inside the page column,
    long ones wrapped onto two lines, at the default width and at a narrower (print-like) one."""
    import base64
    import json

    effects = pd.DataFrame(
        {
            "kind": ["campaign", "campaign", "action"],
            "campaign_id": ["C1", "C2", ""],
            "action": ["webinar", "event_attendance", "invite_to_webinar"],
            "segment": ["all", "all", "all"],
            "n_exposed": [120, 80, 300],
            "estimate": [0.031, -0.004, 0.012],
            "ci_low": [0.01, -0.03, 0.001],
            "ci_high": [0.052, 0.022, 0.023],
            "evidence": ["effect", "no evidence of effect", "effect"],
        }
    )
    html, _ = build_report(factories.inputs(effects=check_effects(effects)))
    path = write_report(html, tmp_path / "effects.html")
    for width in (1100, 900):
        with Chromium(tmp_path / f"w{width}", width=width) as browser:
            session, load = browser.open(path.resolve().as_uri())
            tables = json.loads(browser.evaluate(session, _HEADERS))
            top = browser.evaluate(session, "document.querySelector('#conversions').getBoundingClientRect().top")
            shot = browser.send(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": top, "width": width, "height": 420, "scale": 1},
                },
                session=session,
            )
            (tmp_path / f"effects-headers-{width}.png").write_bytes(base64.b64decode(shot["data"]))
        assert load.console_errors == []
        assert len(tables) == 4  # campaign (with effects), channel, activity, estimated effects
        effects_table = tables[0]
        assert [h[0] for h in effects_table[1]][-3:] == ["Estimated effect", "95 % interval", "Flag"]
        for overflow, headers in tables:
            assert overflow <= 0.5, (width, overflow, headers)  # the table stays inside the page column
            for name, clipped, right, white_space, _ in headers:
                assert clipped <= 0 and right <= 0.5, (width, name, clipped, right)
                assert white_space not in ("nowrap", "pre"), (width, name, white_space)
        # the 8-column header row wrapped onto more lines than a 5-column table's one-line header row
        assert effects_table[1][0][4] > tables[1][1][0][4] + 5, (width, effects_table, tables[1])
