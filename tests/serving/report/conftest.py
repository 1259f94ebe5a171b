"""A real demo for the report tests: simulated data, a trained champion in MLflow, a score store with weekly
backfilled batches (some matured) and the current batch, and sales feedback on 200 handoffs (half accepted)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from features.history import ProspectHistory
from models.package.tracking import TrackingTarget
from serving.policy import HandoffPolicy
from tests.models.mlflow_fixtures import mlflow_target  # noqa: F401  (session fixture)

N_FEEDBACK = 200
REASONS = ("not_ready", "bad_fit", "no_budget", "duplicate")


@dataclass
class Demo:
    data: Path
    history: ProspectHistory
    features: pd.DataFrame  # the training feature table (all snapshots)
    train_rows: pd.DataFrame  # the readiness training rows
    model: Any
    info: Any
    model_name: str
    tracking_uri: str
    run_id: str
    store_url: str
    store_path: Path
    policy: HandoffPolicy
    n_feedback: int
    n_accepted: int


@pytest.fixture(scope="package")
def demo(tmp_path_factory: pytest.TempPathFactory, mlflow_target: TrackingTarget) -> Demo:  # noqa: F811
    from features.build import build_features
    from features.config import FeatureConfig
    from features.simulator import generate
    from features.snapshots import snapshot_dates
    from features.validation import load_history
    from models.fit.training import train_models
    from models.package.bundle import load_scoring_model
    from models.package.tracking import log_training_result
    from serving.batch import backfill, score_batch
    from serving.policy import load_policy
    from serving.stores import ScoreStore
    from tests.models.conftest import fast_config

    base = tmp_path_factory.mktemp("report-demo")
    data = base / "data"
    generate(1500, 11, data)
    history = load_history(data).history
    frame, spec = build_features(history, snapshot_dates(history, 14), FeatureConfig())
    result = train_models(frame, spec, fast_config())
    name = f"report-{uuid.uuid4().hex[:8]}"
    run = log_training_result(
        mlflow_target, result, experiment="report-tests", registered_model_name=name, data_dir=data
    )
    mlflow_target.client().set_registered_model_alias(name, "champion", str(run.version))
    model, info = load_scoring_model(f"models:/{name}@champion", tracking_uri=mlflow_target.tracking_uri)

    policy = load_policy(None)
    store_path = base / "store.db"
    store_url = f"sqlite:///{store_path}"
    with ScoreStore(store_url) as store:
        backfill(history, model, info, policy, store, 16, every_days=14)
        score_batch(history, model, info, policy, store)
        handoffs = pd.read_sql("SELECT handoff_id, lead_id, handed_off_at FROM handoffs", store.engine)
        assert len(handoffs) >= N_FEEDBACK, f"the demo has only {len(handoffs)} handoffs"
        chosen = handoffs.sample(n=N_FEEDBACK, random_state=0).reset_index(drop=True)
        for i, row in chosen.iterrows():
            accepted = i % 2 == 0
            at = pd.Timestamp(row["handed_off_at"], tz="UTC").to_pydatetime() + timedelta(hours=6 + 7 * int(i))
            store.record_feedback(
                row["lead_id"],
                row["handoff_id"],
                "accepted" if accepted else "rejected",
                None if accepted else REASONS[(int(i) // 2) % len(REASONS)],
                recorded_at=at,
            )
    return Demo(
        data=data,
        history=history,
        features=frame,
        train_rows=result.split.readiness.train,
        model=model,
        info=info,
        model_name=name,
        tracking_uri=mlflow_target.tracking_uri,
        run_id=run.run_id,
        store_url=store_url,
        store_path=store_path,
        policy=policy,
        n_feedback=N_FEEDBACK,
        n_accepted=N_FEEDBACK // 2,
    )
