"""A small simulated prospect history with a trained :class:`ScoringModel` on its real feature names.

Shared by the explanation, service and batch tests: generated and trained once per test session
(about ten seconds), from a fixed seed.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.build import build_features
from features.config import FeatureConfig
from features.history import ProspectHistory
from features.snapshots import snapshot_dates
from features.spec import FeatureSpec
from models.fit.scoring import ScoringModel

N_LEADS = 2500
SEED = 11


@dataclass(frozen=True)
class SimulatedScoring:
    data_dir: Path
    history: ProspectHistory
    spec: FeatureSpec
    model: ScoringModel
    data_end: pd.Timestamp


@functools.cache
def simulated_scoring() -> SimulatedScoring:
    """Simulate ``N_LEADS`` leads, build weekly point-in-time features, train readiness + stage fast."""
    from features.simulator import generate
    from features.validation import load_history
    from models.fit.training import train_models
    from tests.models.conftest import fast_config

    data_dir = Path(tempfile.mkdtemp(prefix="leadscore-sim-scoring-")) / "data"
    generate(N_LEADS, SEED, data_dir)
    history = load_history(data_dir).history
    config = FeatureConfig()
    frame, spec = build_features(history, snapshot_dates(history, 14), config)
    result = train_models(frame, spec, fast_config())
    return SimulatedScoring(data_dir, history, spec, result.model, history.span[1])
