"""A model without a stage model (data without conversion times) still scores, names no stage, and stores."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from models.fit.scoring import ScoringModel
from serving.batch import score_batch
from serving.schemas import Prediction
from serving.service import ScoringService
from serving.stores import ScoreStore
from tests.models.sim_scoring import simulated_scoring
from tests.serving import test_stores
from tests.serving.test_service import Info, model_mode_policy

db_url = test_stores.db_url
open_store = test_stores.open_store
postgres_url = test_stores.postgres_url


def _without_stage(model: ScoringModel) -> ScoringModel:
    return ScoringModel(
        spec=model.spec,
        encoder=model.encoder,
        readiness_booster=model.readiness_booster,
        calibration=model.calibration,
        grade_cutoffs=model.grade_cutoffs,
        score_scale=model.score_scale,
        metadata=model.metadata,
    )


def test_predictions_and_batches_without_a_stage_model(open_store: Callable[[], ScoreStore]) -> None:
    sim = simulated_scoring()
    model = _without_stage(sim.model)
    assert not model.has_stage
    service = ScoringService(model, Info(), model_mode_policy(), history=sim.history)
    predictions = service.score_history(sim.history, as_of=None)
    assert predictions and all(isinstance(p, Prediction) for p in predictions)
    assert all(p.stage is None and p.stage_probabilities == {} for p in predictions)
    # readiness is the same as with the stage model
    with_stage = ScoringService(sim.model, Info(), model_mode_policy(), history=sim.history).score_history(
        sim.history, as_of=None
    )
    assert [p.readiness for p in predictions] == [p.readiness for p in with_stage]

    store = open_store()
    summary = score_batch(
        sim.history, model, Info(), model_mode_policy(), store, scored_at=datetime(2026, 1, 2, tzinfo=UTC)
    )
    current = store.current_frame()
    assert len(current) == summary.n_leads > 0
    assert current["stage"].isna().all()
    record = store.latest_score(current["lead_id"].iloc[0])
    assert record is not None and record.stage is None
    assert Prediction.from_record(record).stage is None


def test_a_stage_without_probabilities_is_refused() -> None:
    with pytest.raises(ValueError, match="no entry in stage_probabilities"):
        Prediction.model_validate(
            {
                **_minimal(),
                "stage": "decision",
                "stage_probabilities": {},
            }
        )
    with pytest.raises(ValueError, match="without a stage"):
        Prediction.model_validate({**_minimal(), "stage": None, "stage_probabilities": {"decision": 1.0}})


def _minimal() -> dict[str, object]:
    return {
        "lead_id": "L1",
        "readiness": 0.1,
        "score": 10,
        "grade": "C",
        "trend": "new",
        "handoff": {"handoff": False, "rule": "grade C below B"},
        "model": {"name": "leadscore", "version": "1"},
        "scored_at": "2026-01-02T00:00:00Z",
        "policy_version": "p-1",
    }
