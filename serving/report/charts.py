"""Charts as inline SVG, drawn with Matplotlib (already a leadscore dependency).

Why Matplotlib SVG rather than an interactive JavaScript library: the report must open from disk with no
network, in a browser, a mail client or a CRM iframe that may block scripts. Static SVG needs no script at
all (nothing to fail in the console), adds a few kilobytes per chart instead of a multi-megabyte library,
prints cleanly, and keeps every glyph inline as paths (no font to load). Each data-bearing artist gets an
id containing ``-mark`` so a browser test can check that marks were actually drawn.

Every function returns an SVG string (``<svg ...>...</svg>``) whose ids are prefixed with the chart's name,
so several charts can share one HTML page.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

GRADE_COLOURS = {"A": "#1b7837", "B": "#7fbf7b", "C": "#c2a5cf", "D": "#762a83"}
PRIMARY = "#2166ac"
MUTED = "#9e9e9e"
ALERT = "#d6604d"
_WIDTH = 6.4


@contextmanager
def _figure(name: str, height: float = 2.8, ncols: int = 1) -> Iterator[tuple[Any, list[Any]]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    with matplotlib.rc_context(
        {
            "svg.fonttype": "path",
            "svg.hashsalt": name,
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 10,
            "axes.titleweight": "bold",
            "axes.titlelocation": "left",
        }
    ):
        fig, axes = plt.subplots(1, ncols, figsize=(_WIDTH, height), squeeze=False)
        try:
            yield fig, list(axes[0])
        finally:
            plt.close(fig)


_counter = itertools.count()


def _mark(artist: Any) -> None:
    """Tag a data-bearing artist (its SVG group gets an id with ``-mark``)."""
    artist.set_gid(f"mark{next(_counter)}")


def _svg(fig: Any, name: str) -> str:
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # inline in HTML the namespace declarations are implied; the RDF metadata block says nothing to a reader
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]+"', "", text)
    prefix = re.sub(r"[^A-Za-z0-9-]", "-", name)
    text = re.sub(r'id="([^"]+)"', lambda m: f'id="{prefix}-{m.group(1)}"', text)
    text = re.sub(r'(xlink:href|href)="#([^"]+)"', lambda m: f'{m.group(1)}="#{prefix}-{m.group(2)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{prefix}-{m.group(1)})", text)
    # scale with the page: keep the viewBox, drop the fixed size in points
    text = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"', r"<svg\1", text, count=1)
    return text.replace("<svg", f'<svg role="img" aria-label="{name}"', 1)


def _err(values: Sequence[float | None], lows: Sequence[float | None], highs: Sequence[float | None]) -> np.ndarray:
    v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
    lo = np.array([np.nan if x is None else x for x in lows], dtype=np.float64)
    hi = np.array([np.nan if x is None else x for x in highs], dtype=np.float64)
    return np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0)


def _percent_axis(ax: Any, axis: str = "y") -> None:
    from matplotlib.ticker import FuncFormatter

    def percent(x: float, _pos: int) -> str:  # 0 %, 0.5 %, 1 %: decimals only where the ticks need them
        text = f"{x * 100:.2f}".rstrip("0").rstrip(".")
        return f"{'0' if text in ('-0', '') else text}%"

    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(FuncFormatter(percent))


def rate_bars(
    name: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    lows: Sequence[float | None],
    highs: Sequence[float | None],
    counts: Sequence[int],
    *,
    title: str,
    ylabel: str,
    colours: Sequence[str] | None = None,
    reference: float | None = None,
    reference_label: str | None = None,
) -> str:
    """Vertical bars of rates with 95 % interval whiskers and ``n=`` under each bar."""
    with _figure(name) as (fig, (ax,)):
        x = np.arange(len(labels))
        heights = [0.0 if v is None else v for v in values]
        bars = ax.bar(
            x,
            heights,
            color=list(colours) if colours else PRIMARY,
            width=0.6,
            yerr=_err(values, lows, highs),
            capsize=4,
            ecolor="#333333",
        )
        for patch in bars.patches:
            _mark(patch)
        for xi, v, n in zip(x, values, counts, strict=True):
            text = "no data" if v is None else f"{100 * v:.1f} %"
            ax.annotate(text, (xi, 0), xytext=(0, -26), textcoords="offset points", ha="center", fontsize=8)
            ax.annotate(
                f"n={n:,}", (xi, 0), xytext=(0, -36), textcoords="offset points", ha="center", fontsize=7, color="#555"
            )
        if reference is not None:
            ax.axhline(reference, color=MUTED, linestyle="--", linewidth=1)
            if reference_label:
                ax.annotate(
                    reference_label,
                    (len(labels) - 0.5, reference),
                    xytext=(0, 3),
                    textcoords="offset points",
                    ha="right",
                    fontsize=7,
                    color="#555",
                )
        ax.set_xticks(x, labels)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        _percent_axis(ax)
        fig.subplots_adjust(bottom=0.3)
        return _svg(fig, name)


def gains_and_lift(
    name: str, contacted: np.ndarray, captured: np.ndarray, lifts: Sequence[float | None], base_rate: float
) -> str:
    """Left: cumulative gains (conversions reached vs leads worked, best first). Right: lift per decile."""
    with _figure(name, height=2.9, ncols=2) as (fig, (left, right)):
        step = max(1, len(contacted) // 400)  # at most ~400 points: the curve is smooth at that resolution
        line = left.plot(contacted[::step], captured[::step], color=PRIMARY, linewidth=2, label="leadscore")
        _mark(line[0])
        left.plot([0, 1], [0, 1], color=MUTED, linestyle="--", linewidth=1, label="random order")
        left.set_xlabel("share of leads worked, best score first")
        left.set_ylabel("share of conversions reached")
        left.set_title("Gains")
        left.legend(frameon=False, fontsize=7, loc="lower right")
        _percent_axis(left)
        _percent_axis(left, "x")
        x = np.arange(1, len(lifts) + 1)
        bars = right.bar(x, [0.0 if v is None else v for v in lifts], color=PRIMARY, width=0.7)
        for patch in bars.patches:
            _mark(patch)
        right.axhline(1.0, color=MUTED, linestyle="--", linewidth=1)
        right.set_xticks(x, [f"{10 * (i - 1)}-{10 * i}" for i in x], rotation=45, fontsize=7)
        right.set_xlabel("score decile (% of leads, best first)")
        right.set_ylabel(f"lift (x the {100 * base_rate:.1f} % average)")
        right.set_title("Lift per decile")
        return _svg(fig, name)


def calibration(
    name: str, predicted: Sequence[float], observed: Sequence[float], lows: Sequence[float], highs: Sequence[float]
) -> str:
    """Predicted readiness vs observed conversion per equal-size bin, with 95 % intervals and the diagonal."""
    with _figure(name, height=3.0) as (fig, (ax,)):
        top = max(max(highs, default=0.0), max(predicted, default=0.0)) * 1.08 or 1.0
        ax.plot([0, top], [0, top], color=MUTED, linestyle="--", linewidth=1, label="perfect calibration")
        bars = ax.errorbar(
            predicted,
            observed,
            yerr=_err(observed, lows, highs),
            fmt="o",
            color=PRIMARY,
            ecolor=PRIMARY,
            capsize=3,
            label="observed (95 % interval)",
        )
        _mark(bars.lines[0])
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("predicted readiness (mean of the bin)")
        ax.set_ylabel("observed conversion")
        ax.set_title("Predicted vs observed")
        ax.legend(frameon=False, fontsize=7, loc="upper left")
        _percent_axis(ax)
        _percent_axis(ax, "x")
        return _svg(fig, name)


def weekly_handoffs(name: str, weeks: Sequence[str], counts: Sequence[int], capacity: int | None) -> str:
    """Handoffs per calendar week (bars) against the policy's weekly capacity (line)."""
    with _figure(name) as (fig, (ax,)):
        x = np.arange(len(weeks))
        bars = ax.bar(x, counts, color=PRIMARY, width=0.7)
        for patch in bars.patches:
            _mark(patch)
        if capacity is not None:
            ax.axhline(capacity, color=ALERT, linewidth=1.5, label=f"sales capacity ({capacity}/week)")
            ax.legend(frameon=False, fontsize=7)
        step = max(1, len(weeks) // 12)
        ax.set_xticks(x[::step], list(weeks)[::step], fontsize=7, rotation=45, ha="right")
        ax.set_xlabel("week starting (Monday)")
        ax.set_ylabel("leads handed off")
        ax.yaxis.set_major_locator(_integer_ticks())
        ax.set_title("Leads handed off per week")
        return _svg(fig, name)


def horizontal_bars(
    name: str,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    title: str,
    xlabel: str,
    lows: Sequence[float | None] | None = None,
    highs: Sequence[float | None] | None = None,
    threshold: float | None = None,
    threshold_label: str | None = None,
    percent: bool = False,
    integer: bool = False,
    highlight: Sequence[bool] | None = None,
) -> str:
    """Ranked horizontal bars (rejection reasons, campaigns, drift), best/largest on top."""
    height = 0.9 + 0.28 * max(len(labels), 1)
    with _figure(name, height=height) as (fig, (ax,)):
        y = np.arange(len(labels))[::-1]
        colours = [ALERT if h else PRIMARY for h in highlight] if highlight is not None else PRIMARY
        xerr = _err(values, lows, highs) if lows is not None and highs is not None else None
        bars = ax.barh(y, values, color=colours, height=0.6, xerr=xerr, capsize=3, ecolor="#333333")
        for patch in bars.patches:
            _mark(patch)
        if threshold is not None:
            ax.axvline(threshold, color=ALERT, linestyle="--", linewidth=1)
            if threshold_label:
                ax.annotate(
                    threshold_label,
                    (threshold, y.max() + 0.45 if len(y) else 0),
                    xytext=(3, 0),
                    textcoords="offset points",
                    fontsize=7,
                    color=ALERT,
                    va="center",
                )
        ax.set_yticks(y, [str(label)[:40] for label in labels], fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.set_xlim(left=0)
        if percent:
            _percent_axis(ax, "x")
        if integer:
            ax.xaxis.set_major_locator(_integer_ticks())
        return _svg(fig, name)


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def histogram(name: str, values: np.ndarray, *, title: str, xlabel: str) -> str:
    """A histogram of durations (e.g. days from handoff to feedback) with its median."""
    with _figure(name) as (fig, (ax,)):
        finite = values[np.isfinite(values)]
        bins = min(30, max(5, int(np.sqrt(len(finite)))))
        _, _, patches = ax.hist(finite, bins=bins, color=PRIMARY)
        for patch in patches:
            _mark(patch)
        median = float(np.median(finite))
        ax.axvline(median, color=ALERT, linewidth=1.5, label=f"median {median:.1f} days")
        ax.legend(frameon=False, fontsize=7)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("handoffs")
        ax.yaxis.set_major_locator(_integer_ticks())
        ax.set_title(title)
        return _svg(fig, name)
