"""Shared fixtures for the MLflow tests: a tracking store per session, tiny data and scoring models.

Import explicitly (``from tests.models.mlflow_fixtures import ...``); pytest only auto-loads
conftest modules.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from features.spec import FeatureSpec
from models.package.tracking import DataLineage, TrackingTarget, TrainingRun, configure_mlflow, log_training_run

CATEGORICAL = ["segment"]
NUMERIC = ["signal", "noise", "visits"]
SEGMENTS = ["smb", "mid", "ent"]


@dataclass
class StandInScoringModel:
    """A small stand-in with the ScoringModel interface (logistic regression on chosen features)."""

    use: list[str]
    input_columns: list[str] = field(default_factory=lambda: [*CATEGORICAL, *NUMERIC])
    spec: FeatureSpec = field(
        default_factory=lambda: FeatureSpec(categorical=CATEGORICAL, numeric=NUMERIC, horizon_days=90)
    )
    metadata: dict[str, Any] = field(default_factory=dict)
    model_: LogisticRegression | None = None

    def _matrix(self, df: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            raise KeyError(f"missing input columns {missing}")
        parts: list[np.ndarray] = []
        for col in self.use:
            if col == "segment":
                # Unseen and missing categories map to all-zero indicators.
                parts.extend((df[col].astype("str") == s).to_numpy(float) for s in SEGMENTS)
            else:
                parts.append(pd.to_numeric(df[col]).fillna(0.0).to_numpy(float))
        return np.column_stack(parts)

    def fit(self, df: pd.DataFrame, y: np.ndarray) -> StandInScoringModel:
        self.model_ = LogisticRegression().fit(self._matrix(df), y)
        self.metadata = {"trained_at": "2026-01-02T03:04:05+00:00", "use": list(self.use)}
        return self

    def predict_readiness(self, df: pd.DataFrame) -> np.ndarray:
        assert self.model_ is not None
        return self.model_.predict_proba(self._matrix(df))[:, 1]

    def predict_stage_proba(self, df: pd.DataFrame) -> pd.DataFrame:
        p = self.predict_readiness(df)
        return pd.DataFrame({"decision": p, "not_in_market": 1.0 - p}, index=df.index)

    def readiness_contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        assert self.model_ is not None
        return pd.DataFrame(self._matrix(df) * self.model_.coef_[0], index=df.index)

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        p = self.predict_readiness(df)
        score = np.rint(p * 100).astype("int64")
        return pd.DataFrame(
            {
                "readiness": p,
                "score": score,
                "grade": np.select([score >= 75, score >= 50, score >= 25], ["A", "B", "C"], "D"),
                "stage": np.where(p >= 0.5, "decision", "not_in_market"),
                "stage_proba_decision": p,
                "stage_proba_not_in_market": 1.0 - p,
            },
            index=df.index,
        )


def make_frame(n: int, seed: int) -> pd.DataFrame:
    """Snapshot rows with ids, features and a label driven by ``signal`` and ``segment``."""
    rng = np.random.default_rng(seed)
    segment = rng.choice(SEGMENTS, size=n)
    signal = rng.normal(size=n)
    logit = 1.8 * signal + np.where(segment == "ent", 0.8, 0.0) - 0.5
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype("int64")
    return pd.DataFrame(
        {
            "lead_id": [f"L{seed}-{i:05d}" for i in range(n)],
            "as_of": pd.Timestamp("2025-01-05") + pd.to_timedelta(rng.integers(0, 20, size=n) * 7, unit="D"),
            "segment": pd.Series(segment, dtype="str"),
            "signal": signal,
            "noise": rng.normal(size=n),
            "visits": rng.integers(0, 30, size=n).astype("int64"),
            "converted": converted,
            "days_to_conversion": np.where(converted == 1, rng.integers(1, 90, size=n), np.nan),
        }
    )


def readiness_scores(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """A few readiness metrics (the real ``models.judge.evaluation.readiness_metrics`` has more)."""
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "log_loss": float(log_loss(y, proba, labels=[0, 1])),
        "base_rate": float(np.mean(y)),
    }


@dataclass
class ToyData:
    train: pd.DataFrame
    test: pd.DataFrame

    @property
    def test_rows(self) -> pd.DataFrame:
        return self.test[["lead_id", "as_of", "converted", "days_to_conversion"]]

    def fit(self, use: list[str]) -> StandInScoringModel:
        return StandInScoringModel(use=use).fit(self.train, self.train["converted"].to_numpy())

    def evaluator(self) -> Callable[[Any, pd.DataFrame], Mapping[str, float]]:
        """``evaluate(model, rows)``: look the rows' features up by id and score them."""
        features = self.test.drop(columns=["converted", "days_to_conversion"])

        def evaluate(model: Any, rows: pd.DataFrame) -> Mapping[str, float]:
            merged = rows.merge(features, on=["lead_id", "as_of"], how="left", validate="one_to_one")
            if merged["signal"].isna().any():
                raise AssertionError("evaluation rows not found in the feature table")
            return readiness_scores(merged["converted"].to_numpy(), model.predict_readiness(merged))

        return evaluate


@pytest.fixture(scope="session")
def toy_data() -> ToyData:
    return ToyData(train=make_frame(600, seed=1), test=make_frame(300, seed=2))


_SESSION_TARGETS: dict[str, TrackingTarget] = {}


@pytest.fixture(scope="session")
def mlflow_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingTarget]:
    """One SQLite tracking store for the session (creating its tables takes seconds).

    Each test module imports this fixture, which makes pytest instantiate it once per module;
    the module-level cache keeps it one store.
    """
    import mlflow

    # mlflow.set_tracking_uri/set_registry_uri also export MLFLOW_*_URI for subprocesses.
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    cached = _SESSION_TARGETS.get("sqlite")
    if cached is None:
        # A not-yet-existing directory and no artifact root: the defaults are part of what is tested.
        db = tmp_path_factory.mktemp("mlflow-home") / "state" / "mlflow.db"
        cached = _SESSION_TARGETS["sqlite"] = configure_mlflow(f"sqlite:///{db}")
    else:
        configure_mlflow(cached.tracking_uri, cached.artifact_root)
    yield cached
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None = back to MLflow's default
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def log_toy_run(
    target: TrackingTarget,
    data: ToyData,
    model: StandInScoringModel,
    *,
    name: str,
    experiment: str = "leadscore-tests",
    figures: Mapping[str, Any] | None = None,
    lineage: DataLineage | None = None,
    **kwargs: Any,
) -> TrainingRun:
    """Log a training run of ``model`` with its test metrics and no-signal check, as the train flow does."""
    from models.judge.guardrails import check_signal

    y, proba = data.test["converted"].to_numpy(), model.predict_readiness(data.test)
    metrics = readiness_scores(y, proba)
    kwargs.setdefault("test_rows", data.test_rows)
    kwargs.setdefault("extra_metrics", check_signal(y, proba, metrics["pr_auc"], n_bootstrap=200).to_metrics())
    return log_training_run(
        target,
        experiment=experiment,
        registered_model_name=name,
        scoring_model=model,
        input_example=data.test,
        metrics=metrics,
        figures=figures,
        lineage=lineage,
        **kwargs,
    )


def write_data_dir(path: Path, data: ToyData) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    data.train.to_parquet(path / "snapshots.parquet")
    (path / "notes.csv").write_text("a,b\n1,2\n")
    return path
