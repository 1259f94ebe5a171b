"""Fixtures of the serving tests: one small simulated data set, one real trained model registered in the
session's MLflow store and a score store with a batch, built for each module that needs them
(tests/serving/app_support.py)."""

from __future__ import annotations

import uuid

import pandas as pd
import pytest

from models.package.tracking import TrackingTarget
from serving.policy import load_policy
from serving.stores import ScoreStore
from tests.models.mlflow_fixtures import mlflow_target  # noqa: F401  (session fixture)
from tests.serving.app_support import EFFECTS, Trained, batch_frame


@pytest.fixture(scope="module")  # each module its own store: their feedback and handoffs must not meet
def trained(tmp_path_factory: pytest.TempPathFactory, mlflow_target: TrackingTarget) -> Trained:  # noqa: F811
    from features.build import build_features
    from features.config import FeatureConfig
    from features.simulator import generate
    from features.snapshots import snapshot_dates
    from features.validation import load_history
    from models.fit.training import train_models
    from models.package.tracking import log_training_result
    from tests.models.conftest import fast_config

    base = tmp_path_factory.mktemp("serving-app")
    data = base / "data"
    generate(2000, 3, data)
    history = load_history(data).history
    config = FeatureConfig()
    frame, spec = build_features(history, snapshot_dates(history, 14), config)
    result = train_models(frame, spec, fast_config())
    # the effect estimates travel inside the one logged model (here a made-up table: webinars work for new leads)
    result.model.effects = EFFECTS
    name = f"serve-{uuid.uuid4().hex[:8]}"
    run = log_training_result(mlflow_target, result, experiment="serving-tests", registered_model_name=name)
    client = mlflow_target.client()
    client.set_registered_model_alias(name, "champion", str(run.version))
    source = client.get_model_version(name, str(run.version)).source

    as_of = history.span[1].to_pydatetime().replace(microsecond=0)
    latest, _ = build_features(history, [pd.Timestamp(as_of)], config)
    policy = load_policy(None).model_copy(update={"horizon_days": result.model.horizon_days})
    store_url = f"sqlite:///{base / 'store.db'}"
    scores = batch_frame(result.model, latest.head(40), policy)
    with ScoreStore(store_url) as store:
        store.write_batch(
            scores, model_name=name, model_version=str(run.version), policy_version=policy.policy_version, as_of=as_of
        )
        page = store.handoff_queue(limit=10)
    handed = [(r.lead_id, r.handoff_id) for r in page.items if r.handoff_id is not None]
    assert len(handed) == 3
    return Trained(
        data=data,
        history=history,
        model=result.model,
        model_name=name,
        tracking_uri=mlflow_target.tracking_uri,
        source=source,
        run_id=run.run_id,
        as_of=as_of,
        store_url=store_url,
        policy=policy,
        handed_off=handed,
        open_ids=sorted(latest["lead_id"].astype(str)),
    )
