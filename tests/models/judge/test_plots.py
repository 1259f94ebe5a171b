from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from models.judge import plots


@pytest.fixture(scope="module")
def sample() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    p = rng.beta(0.7, 4, size=2000)
    y = (rng.random(2000) < p).astype(int)
    return y, {"model": p, "noisy": np.clip(p + rng.normal(0, 0.1, 2000), 0, 1)}


def _renders(fig: Figure) -> None:
    assert isinstance(fig, Figure)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curve_figures(sample) -> None:
    y, probas = sample
    for make in (plots.roc_figure, plots.pr_figure, plots.calibration_figure, plots.gains_figure):
        fig = make(y, probas)
        _renders(fig)
        assert len(fig.axes[0].get_lines()) >= len(probas)


def test_importance_shap_and_confusion_figures() -> None:
    rng = np.random.default_rng(1)
    importance = pd.Series([5.0, 1.0, 3.0], index=["a", "b", "c"])
    fig = plots.feature_importance_figure(importance, top_n=2)
    _renders(fig)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["c", "a"]  # largest on top
    contrib = pd.DataFrame(rng.normal(size=(200, 3)), columns=["a", "b", "cat"]).assign(bias=-2.0)
    values = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200), "cat": ["x"] * 200})
    shap = plots.shap_summary_figure(contrib, values, categorical=["cat"])
    _renders(shap)
    assert [t.get_text() for t in shap.axes[0].get_yticklabels()] != []
    cm = plots.confusion_matrix_figure([[5, 1], [2, 0]], ["early", "never"])
    _renders(cm)
