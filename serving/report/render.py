"""Sections -> one self-contained HTML page (Jinja2 template shipped as package data, charts inline SVG).

The page references nothing outside itself: no script, stylesheet, font or image is loaded from anywhere
(charts are inline SVG, the style sheet is inlined from ``templates/report.css``, text uses the reader's
system fonts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from markupsafe import Markup

from features.io import atomic_write_text
from serving.report import charts
from serving.report.inputs import ReportInputs
from serving.report.sections import (
    ConversionsSection,
    DriftSection,
    GradesSection,
    HandoffSection,
    ModelCard,
    conversions_section,
    drift_section,
    grades_section,
    handoff_section,
    model_card,
    rate_text,
    summary_sentences,
)
from serving.report.stats import Estimate, Rate

TEMPLATE = "report.html.j2"


@dataclass
class ReportSections:
    """All six sections, computed (no HTML yet)."""

    generated_at: datetime
    since: datetime | None
    summary: list[str]
    grades: GradesSection
    handoff: HandoffSection
    conversions: ConversionsSection
    drift: DriftSection
    card: ModelCard
    n_batches: int
    #: of them, scored after the fact from the history (``leadscore score --backfill``), not served at the time
    n_backfilled: int
    first_batch: datetime | None
    last_batch: datetime | None
    n_current: int
    notes: list[str] = field(default_factory=list)


def compute_sections(inputs: ReportInputs) -> ReportSections:
    """Every section's numbers from the gathered inputs."""
    grades = grades_section(inputs)
    handoff = handoff_section(inputs)
    conversions = conversions_section(inputs)
    drift = drift_section(inputs)
    card = model_card(inputs)
    batches = inputs.batches
    return ReportSections(
        generated_at=inputs.generated_at,
        since=inputs.since,
        summary=summary_sentences(grades, handoff, conversions, drift, card),
        grades=grades,
        handoff=handoff,
        conversions=conversions,
        drift=drift,
        card=card,
        n_batches=len(batches),
        n_backfilled=sum(1 for b in batches if (b.details or {}).get("backfilled")),
        first_batch=batches[0].scored_at if batches else None,
        last_batch=batches[-1].scored_at if batches else None,
        n_current=len(inputs.current),
        notes=list(inputs.notes),
    )


def _rates(
    rows: list[Any], attr: str = "rate"
) -> tuple[list[float | None], list[float | None], list[float | None], list[int]]:
    rates: list[Rate] = [getattr(r, attr) for r in rows]
    return [r.value for r in rates], [r.low for r in rates], [r.high for r in rates], [r.n for r in rates]


def build_charts(s: ReportSections) -> dict[str, Markup]:
    """Inline SVG per chart; a chart is drawn only when it has data (empty states are text, never empty axes)."""
    out: dict[str, str] = {}
    g = s.grades
    if g.grades and any(r.conversion.n for r in g.grades):
        v, lo, hi, n = _rates(g.grades, "conversion")
        title = "Conversion per grade" + (
            " (champion's test set)" if g.source == "test" else " (matured served scores)"
        )
        out["grade-conversion"] = charts.rate_bars(
            "grade-conversion",
            [f"grade {r.grade}" for r in g.grades],
            v,
            lo,
            hi,
            n,
            title=title,
            ylabel=f"converted within {g.horizon_days} days",
            colours=[charts.GRADE_COLOURS[r.grade] for r in g.grades],
            reference=g.base.value if g.base is not None else None,
            reference_label="average" if g.base is not None else None,
        )
    if g.gains is not None and g.base is not None and g.base.value:
        out["lift-gains"] = charts.gains_and_lift(
            "lift-gains", g.gains[0], g.gains[1], [d.lift for d in g.deciles], g.base.value
        )
    if g.calibration:
        out["calibration"] = charts.calibration(
            "calibration",
            [c.mean_predicted for c in g.calibration],
            [c.observed.value or 0.0 for c in g.calibration],
            [c.observed.low or 0.0 for c in g.calibration],
            [c.observed.high or 0.0 for c in g.calibration],
        )
    h = s.handoff
    if h.weeks:
        out["handoffs-weekly"] = charts.weekly_handoffs(
            "handoffs-weekly", [w.week for w in h.weeks], [w.handoffs for w in h.weeks], h.capacity
        )
    if h.per_grade:
        v, lo, hi, n = _rates(h.per_grade)
        out["acceptance-grade"] = charts.rate_bars(
            "acceptance-grade",
            [f"grade {r.name}" for r in h.per_grade],
            v,
            lo,
            hi,
            n,
            title="Sales acceptance per grade",
            ylabel="handoffs accepted",
            colours=[charts.GRADE_COLOURS.get(r.name, charts.PRIMARY) for r in h.per_grade],
            reference=h.acceptance.value,
            reference_label="overall",
        )
    if h.reasons:
        out["rejection-reasons"] = charts.horizontal_bars(
            "rejection-reasons",
            [r.label for r in h.reasons[:10]],
            [r.count for r in h.reasons[:10]],
            title="Why sales rejected handoffs",
            xlabel="rejected handoffs",
            integer=True,
        )
    if h.median_days is not None and len(h.days_to_feedback) >= 2:
        out["feedback-delay"] = charts.histogram(
            "feedback-delay", h.days_to_feedback, title="Time from handoff to feedback", xlabel="days"
        )
    campaigns = s.conversions.groups.get("campaign") or []
    rows = [r for r in campaigns if r.conversion.n]
    if rows:
        ref = s.conversions.reference
        out["campaigns"] = charts.horizontal_bars(
            "campaigns",
            [f"{r.name} (n={r.conversion.n:,})" for r in rows],
            [r.conversion.value or 0.0 for r in rows],
            lows=[r.conversion.low for r in rows],
            highs=[r.conversion.high for r in rows],
            title="Touched leads that converted, per campaign",
            xlabel=f"touched leads converted within {s.conversions.horizon_days} days",
            threshold=ref.value if ref is not None else None,
            threshold_label="all touched leads" if ref is not None else None,
            percent=True,
        )
    d = s.drift
    if d.top:
        out["drift"] = charts.horizontal_bars(
            "drift",
            [r.variable for r in d.top],
            [r.psi for r in d.top],
            title="Features that moved most (PSI, current vs training data)",
            xlabel="population stability index",
            threshold=d.threshold,
            threshold_label=f"flag at {d.threshold:g}",
            highlight=[r.flagged for r in d.top],
        )
    return {k: Markup(v) for k, v in out.items()}


def _pct(value: float | None, digits: int = 1) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{100 * value:.{digits}f} %"


def _pp(value: float | None, digits: int = 1) -> str:
    """A difference of two rates in signed percentage points (an effect on conversion)."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{100 * value:+.{digits}f} pp"


def _pp_range(low: float | None, high: float | None, digits: int = 1) -> str:
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return "-"
    return f"{_pp(low, digits)} to {_pp(high, digits)}"


def _interval(rate: Rate | Estimate | None, digits: int = 1, scale: float = 100.0, unit: str = " %") -> str:
    if rate is None or rate.low is None or rate.high is None:
        return "-"
    return f"{scale * rate.low:.{digits}f}-{scale * rate.high:.{digits}f}{unit}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def _date(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d")


def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("serving.report", "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(pp_range=_pp_range)
    env.filters.update(pp=_pp, pct=_pct, interval=_interval, num=_num, date=_date, rate=rate_text)
    env.globals["intcomma"] = lambda n: f"{int(n):,}"
    return env


def render_html(sections: ReportSections) -> str:
    """The whole page as one HTML string."""
    env = _environment()
    css = Markup(env.loader.get_source(env, "report.css")[0])  # type: ignore[union-attr]
    return str(env.get_template(TEMPLATE).render(s=sections, charts=build_charts(sections), css=css))


def build_report(inputs: ReportInputs) -> tuple[str, ReportSections]:
    """Compute every section and render the page."""
    sections = compute_sections(inputs)
    return render_html(sections), sections


def write_report(html: str, path: str | Path) -> Path:
    """Write the page atomically (readers, e.g. ``GET /v1/report``, never see half a file)."""
    path = Path(path)
    atomic_write_text(path, html)
    return path
