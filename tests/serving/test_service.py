"""ScoringService: predictions with reasons, needs, trend, handoff; point-in-time scoring from a history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.build import build_features
from serving.policy import HandoffPolicy, PolicyError, load_policy, parse_policy
from serving.schemas import Prediction
from serving.service import (
    LeadNotOpenError,
    ScoringService,
    UnknownLeadError,
    default_as_of,
    feature_config_of,
)
from serving.stores import ScoreStore
from tests.models.sim_scoring import SimulatedScoring, simulated_scoring

NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


class Info:
    name = "leadscore"
    version = 3
    run_id = "abc"


@pytest.fixture(scope="module")
def sim() -> SimulatedScoring:
    return simulated_scoring()


def model_mode_policy(**changes: object) -> HandoffPolicy:
    """The packaged policy with the model's own grade cut-offs (the simulator's readiness is low)."""
    raw = load_policy().model_dump(mode="json")
    raw["grading"] = {"mode": "model"}
    raw.update(changes)
    return parse_policy(yaml.safe_dump(raw))


@pytest.fixture(scope="module")
def policy() -> HandoffPolicy:
    return model_mode_policy()


@pytest.fixture(scope="module")
def frame(sim: SimulatedScoring) -> pd.DataFrame:
    features, _ = build_features(sim.history, [default_as_of(sim.data_end, NOW)], feature_config_of(sim.model))
    return features


@pytest.fixture
def store(tmp_path: Path) -> ScoreStore:
    s = ScoreStore(f"sqlite:///{tmp_path / 'leadscore.db'}")
    yield s
    s.close()


# -- as_of -----------------------------------------------------------------------------------------
def test_default_as_of_is_now_capped_at_the_data_end_plus_one_day() -> None:
    end = pd.Timestamp("2025-12-31 17:45:12", tz="UTC")
    assert default_as_of(end, datetime(2026, 11, 27, 10, 0, tzinfo=UTC)) == pd.Timestamp("2026-01-01 17:45", tz="UTC")
    assert default_as_of(end, datetime(2025, 12, 31, 9, 12, 59, tzinfo=UTC)) == pd.Timestamp(
        "2025-12-31 09:12", tz="UTC"
    )
    assert default_as_of(None, datetime(2026, 3, 1, 8, 5, 30, tzinfo=UTC)) == pd.Timestamp("2026-03-01 08:05", tz="UTC")


# -- score_frame -----------------------------------------------------------------------------------
def test_score_frame_predictions_carry_everything(
    sim: SimulatedScoring, policy: HandoffPolicy, frame: pd.DataFrame
) -> None:
    service = ScoringService(sim.model, Info(), policy)
    rows = frame.iloc[:60]
    predictions = service.score_frame(rows, explain=True, scored_at=NOW)
    expected = sim.model.predict(rows)
    assert [p.lead_id for p in predictions] == rows["lead_id"].tolist()
    cutoffs = sim.model.grade_cutoffs
    for p, (_, e) in zip(predictions, expected.iterrows(), strict=True):
        assert isinstance(p, Prediction)
        assert p.readiness == pytest.approx(e["readiness"])
        assert p.score == e["score"] and p.stage == e["stage"]
        grade = "A" if p.readiness >= cutoffs["A"] else "B" if p.readiness >= cutoffs["B"] else None
        if grade is not None:
            assert p.grade == grade
        assert sum(p.stage_probabilities.values()) == pytest.approx(1.0)
        assert p.reasons is not None and (p.reasons.positive or p.reasons.negative)
        assert p.trend == "new"  # no store
        assert p.handoff.handoff_id is None
        assert p.handoff.handoff == (p.grade in ("A", "B"))
        assert p.model.name == "leadscore" and p.model.version == "3"
        assert p.policy_version == policy.policy_version
        assert p.scored_at == NOW and p.as_of == rows["as_of"].iloc[0]


def test_explain_mask_and_top(sim: SimulatedScoring, policy: HandoffPolicy, frame: pd.DataFrame) -> None:
    service = ScoringService(sim.model, Info(), policy)
    rows = frame.iloc[:200]
    mask = np.zeros(len(rows), dtype=bool)
    mask[[3, 7]] = True
    records = service.score_frame(rows, explain=mask, as_records=True)
    assert [i for i, r in enumerate(records) if r["reasons"] is not None] == [3, 7]
    assert all(isinstance(r["needs"], list) for r in records)  # needs for every row

    top = service.score_frame(rows, explain="top", as_records=True)
    explained = [r["reasons"] is not None for r in top]
    assert explained == [r["grade"] in ("A", "B") or r["handoff"]["handoff"] for r in top]
    assert any(explained) and not all(explained)
    with pytest.raises(ValueError, match="explain mask"):
        service.score_frame(rows, explain=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="'top'"):
        service.score_frame(rows, explain="all")  # type: ignore[arg-type]


def test_policy_must_fit_the_model(sim: SimulatedScoring) -> None:
    with pytest.raises(PolicyError, match="horizon_days is 30"):
        ScoringService(sim.model, Info(), model_mode_policy(horizon_days=30))


# -- from a history --------------------------------------------------------------------------------
def test_score_history_of_some_leads_equals_scoring_the_full_snapshot(
    sim: SimulatedScoring, policy: HandoffPolicy, frame: pd.DataFrame
) -> None:
    service = ScoringService(sim.model, Info(), policy, history=sim.history)
    as_of = pd.Timestamp(frame["as_of"].iloc[0])
    leads = frame["lead_id"].iloc[[5, 50, 500]].tolist()
    by_history = service.score_history(sim.history, leads, as_of, scored_at=NOW)
    full = {p.lead_id: p for p in service.score_frame(frame, scored_at=NOW)}
    for p in by_history:
        q = full[p.lead_id]
        assert p.readiness == q.readiness and p.stage_probabilities == q.stage_probabilities
        assert p.reasons == q.reasons and p.next_best_action == q.next_best_action and p.needs == q.needs
        assert p.as_of == as_of

    fast = service.score_leads(leads, scored_at=NOW).to_predictions()  # cached snapshot at the default as_of
    assert [p.model_dump() for p in fast] == [p.model_dump() for p in by_history]
    assert service.score_lead(leads[0]).readiness == full[leads[0]].readiness


def test_score_history_reports_unknown_and_closed_leads(sim: SimulatedScoring, policy: HandoffPolicy) -> None:
    service = ScoringService(sim.model, Info(), policy, history=sim.history)
    as_of = default_as_of(sim.data_end, NOW)
    with pytest.raises(UnknownLeadError, match="nobody"):
        service.score_history(sim.history, ["nobody"], as_of)
    with pytest.raises(UnknownLeadError, match="nobody"):
        service.score_leads(["nobody"])
    sh = sim.history.stage_history
    won = sh.loc[sh["stage"] == "won", "lead_id"].iloc[0]
    with pytest.raises(LeadNotOpenError, match=str(won)):
        service.score_history(sim.history, [won], as_of)
    with pytest.raises(LeadNotOpenError, match=str(won)):
        service.score_leads([won])
    with pytest.raises(LeadNotOpenError, match=str(won)):
        service.score_leads([won], as_of=as_of)


def test_features_never_see_data_after_as_of(sim: SimulatedScoring, policy: HandoffPolicy) -> None:
    service = ScoringService(sim.model, Info(), policy, history=sim.history)
    as_of = (sim.data_end - pd.Timedelta(days=200)).floor("D")
    lead = service.features_at(sim.history, as_of)["lead_id"].iloc[0]
    h = sim.history
    cut = type(h)(
        h.contract,
        h.leads,
        h.activities[h.activities["occurred_at"] < as_of],
        h.stage_history[h.stage_history["entered_at"] < as_of],
    )
    a = service.score_history(sim.history, [lead], as_of, scored_at=NOW)[0]
    b = service.score_history(cut, [lead], as_of, scored_at=NOW)[0]
    assert a.model_dump() == b.model_dump()
    assert service.score_leads([lead], as_of=as_of, scored_at=NOW).to_predictions()[0].model_dump() == a.model_dump()


# -- with a store: trends and cool-downs -----------------------------------------------------------
def test_trend_and_cooldown_come_from_the_store(
    sim: SimulatedScoring, policy: HandoffPolicy, frame: pd.DataFrame, store: ScoreStore
) -> None:
    service = ScoringService(sim.model, Info(), policy, store)
    rows = frame.iloc[:300]
    first = service.score_encoded(
        rows["lead_id"].to_numpy(dtype=object), sim.model.encode(rows), explain="top", scored_at=NOW
    )
    assert set(first.trend) == {"new"}
    handed = first.lead_ids[first.handoff]
    assert len(handed) > 0
    store.write_batch(
        first.to_store_frame(),
        model_name="leadscore",
        model_version="3",
        policy_version=policy.policy_version,
        as_of=NOW,
        scored_at=NOW,
    )
    later = NOW + timedelta(days=3)
    again = {p.lead_id: p for p in service.score_frame(rows, explain=False, scored_at=later)}
    for lead in handed:
        p = again[lead]
        assert not p.handoff.handoff
        assert "cool-down: handed off 2026-01-05, eligible again 2026-01-19" in p.handoff.rule
    assert {p.trend for p in again.values()} == {"steady"}  # same features, same scores
    after_cooldown = service.score_frame(rows, explain=False, scored_at=NOW + timedelta(days=14))
    assert {p.lead_id for p in after_cooldown if p.handoff.handoff} == set(handed)


def test_default_as_of_of_a_cut_history_is_the_whole_extract_end(sim: SimulatedScoring, policy: HandoffPolicy) -> None:
    from serving.service import _LeadIndex

    service = ScoringService(sim.model, Info(), policy, history=sim.history)
    expected = default_as_of(sim.data_end, NOW)
    open_leads = service.snapshot(expected).lead_ids.tolist()
    last_event = sim.history.activities.groupby("lead_id")["occurred_at"].max()
    quiet = next(
        lead for lead in open_leads if last_event.get(lead, sim.data_end) < sim.data_end - pd.Timedelta(days=30)
    )
    cut = _LeadIndex(sim.history).subset([quiet])
    assert cut.span[1] < sim.data_end - pd.Timedelta(days=29)  # its own data ends much earlier
    prediction = service.score_history(cut, [quiet], scored_at=NOW)[0]
    assert prediction.as_of == expected
    assert prediction.model_dump() == service.score_lead(quiet).model_dump() | {"scored_at": prediction.scored_at}


# -- the small-request fast path: cached store facts ----------------------------------------------
def _write_perturbed_batch(
    service: ScoringService, store: ScoreStore, ids: list[str], when: datetime, seed: int
) -> None:
    """A batch of ``ids`` scored at ``when`` with shuffled scores (so trends vary) and random handoffs."""
    rng = np.random.default_rng(seed)
    snap = service.snapshot(service.default_as_of(when))
    rows = np.array([snap.row_of[lead] for lead in ids], dtype=np.intp)
    scored = service.score_encoded(snap.lead_ids[rows], snap.Xe[rows], explain=False, scored_at=when)
    frame = scored.to_store_frame()
    frame["score"] = np.clip(frame["score"].to_numpy() + rng.integers(-30, 31, len(frame)), 0, 100)
    frame["handoff"] = rng.random(len(frame)) < 0.3
    frame["handoff_rule"] = "test"
    store.write_batch(
        frame,
        model_name="leadscore",
        model_version="3",
        policy_version=service.policy.policy_version,
        as_of=snap.as_of.to_pydatetime(),
        scored_at=when,
    )


def test_cached_store_facts_give_the_answers_of_the_store_queries(
    sim: SimulatedScoring, policy: HandoffPolicy, store: ScoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.service as service_module

    service = ScoringService(sim.model, Info(), policy, store, history=sim.history)
    ids = service.snapshot(service.default_as_of(NOW)).lead_ids[:150].tolist()

    def one_by_one(fast: bool) -> list[dict[str, object]]:
        monkeypatch.setattr(service_module, "FAST_PATH_MAX_LEADS", 100 if fast else 0)
        return [service.score_leads([lead], scored_at=NOW).to_records()[0] for lead in ids]

    seen_rules: set[str] = set()
    seen_trends: set[str] = set()
    # Each write must invalidate what the fast path cached before it (the first pass caches "never scored").
    for step, (when, leads) in enumerate(
        [
            (None, ids),
            (NOW - timedelta(days=20), ids),  # handoffs outside the 14-day cool-down
            (NOW - timedelta(days=3), ids[:100]),  # in cool-down; the other 50 keep their older score
            (NOW + timedelta(hours=1), ids[50:120]),  # recorded after the decision time
        ]
    ):
        if when is not None:
            _write_perturbed_batch(service, store, leads, when, seed=step)
        fast = one_by_one(fast=True)
        assert fast == one_by_one(fast=False)
        # facts prefilled for every lead at once (warm, as before a model serves) give the same answers
        warmed = ScoringService(sim.model, Info(), policy, store, history=sim.history)
        warmed.warm()
        assert [warmed.score_leads([lead], scored_at=NOW).to_records()[0] for lead in ids] == fast
        # a pass of more leads than the fast path takes (batch path, store queried) agrees too
        monkeypatch.setattr(service_module, "FAST_PATH_MAX_LEADS", 100)
        whole = service.score_leads(ids, scored_at=NOW)
        assert len(ids) > service_module.FAST_PATH_MAX_LEADS
        assert [r["trend"] for r in fast] == whole.trend.tolist()
        assert [r["handoff"]["rule"] for r in fast] == whole.handoff_rule.tolist()
        assert [r["handoff"]["handoff"] for r in fast] == whole.handoff.tolist()
        seen_trends |= {str(r["trend"]) for r in fast}
        seen_rules |= {str(r["handoff"]["rule"]) for r in fast}
        if step == 0:
            assert seen_trends == {"new"}
    assert seen_trends == {"new", "improving", "steady", "declining"}
    rules = " | ".join(seen_rules)
    assert "not handed off in the last 14 days" in rules
    assert "eligible again" in rules
    assert "after the decision time" in rules


def test_store_check_seconds_trades_staleness_for_a_query(
    sim: SimulatedScoring, policy: HandoffPolicy, store: ScoreStore
) -> None:
    exact = ScoringService(sim.model, Info(), policy, store, history=sim.history)
    lagging = ScoringService(sim.model, Info(), policy, store, history=sim.history, store_check_seconds=3600)
    lead = exact.snapshot(exact.default_as_of(NOW)).lead_ids[0]
    assert exact.score_leads([lead], scored_at=NOW).trend.tolist() == ["new"]
    assert lagging.score_leads([lead], scored_at=NOW).trend.tolist() == ["new"]
    _write_perturbed_batch(exact, store, [lead], NOW - timedelta(days=1), seed=7)
    assert exact.score_leads([lead], scored_at=NOW).trend.tolist() != ["new"]  # the write is seen at once
    assert lagging.score_leads([lead], scored_at=NOW).trend.tolist() == ["new"]  # within the documented lag
    with pytest.raises(ValueError, match="store_check_seconds"):
        ScoringService(sim.model, Info(), policy, store, store_check_seconds=-1)


# -- the event-loop fast path --------------------------------------------------------------------------
def test_default_as_of_of_the_service_follows_the_module_function(sim: SimulatedScoring, policy: HandoffPolicy) -> None:
    service = ScoringService(sim.model, Info(), policy, history=sim.history)
    assert service.default_as_of() == default_as_of(sim.data_end)  # memoised per minute
    assert service.default_as_of() == default_as_of(sim.data_end)
    assert service.default_as_of(NOW) == default_as_of(sim.data_end, NOW)
    shorter = sim.history.__class__(
        contract=sim.history.contract,
        leads=sim.history.leads,
        activities=sim.history.activities[sim.history.activities["occurred_at"] < sim.data_end - pd.Timedelta(days=9)],
        stage_history=sim.history.stage_history,
    )
    service.set_history(shorter)  # a new data end: the memo must not answer with the old one
    assert service.data_end is not None and service.data_end < sim.data_end
    assert service.default_as_of() == default_as_of(service.data_end) != default_as_of(sim.data_end)


def test_ready_for_means_no_feature_build_and_no_store_query(
    sim: SimulatedScoring, policy: HandoffPolicy, store: ScoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ScoringService(sim.model, Info(), policy, store, history=sim.history, store_check_seconds=60.0)
    lead = str(service.snapshot(service.default_as_of()).lead_ids[0])
    other = str(service.snapshot(service.default_as_of()).lead_ids[1])
    assert not service.ready_for([lead])  # its store facts are not cached yet
    first = service.score_leads([lead]).to_records()
    assert service.ready_for([lead])
    assert not service.ready_for([lead, other])  # other's facts are not cached
    assert not service.ready_for([lead], as_of=NOW)  # an explicit as_of builds features

    def no_query(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the store was queried")

    for name in ("state_token", "previous_scores", "last_handoff_times", "count_handoffs_since"):
        monkeypatch.setattr(store, name, no_query)
    again = service.score_leads([lead]).to_records()  # ready_for promised: no query
    assert {k: v for k, v in again[0].items() if k != "scored_at"} == {
        k: v for k, v in first[0].items() if k != "scored_at"
    }
    assert service._facts is not None
    service._facts.checked_at -= 61.0  # the token check is due: not on the event loop
    assert not service.ready_for([lead])
    monkeypatch.undo()
    service.refresh_store_facts()  # what the app's background refresher does
    assert service.ready_for([lead])  # same token: the cached facts stay
    batch = pd.DataFrame(
        {
            "lead_id": [lead],
            "readiness": [0.5],
            "score": [50],
            "grade": ["B"],
            "stage": [sim.model.stage_labels[0]],
            "stage_probabilities": [dict.fromkeys(sim.model.stage_labels, 1.0 / len(sim.model.stage_labels))],
            "trend": ["new"],
            "handoff": [False],
            "handoff_rule": ["test"],
        }
    )
    store.write_batch(batch, model_name="m", model_version="1", policy_version="p", as_of=NOW)
    service.refresh_store_facts()  # a new batch: the refresher reads the facts of every lead at once
    assert service._facts is not None and len(service._facts.previous) == len(sim.history.leads)
    assert service.ready_for([lead]) and service.ready_for([lead, other])
    for name in ("state_token", "previous_scores", "last_handoff_times", "count_handoffs_since"):
        monkeypatch.setattr(store, name, no_query)
    assert service.score_leads([lead]).previous_score[0] == 50.0  # the new batch's score, no query
    monkeypatch.undo()

    warmed = ScoringService(sim.model, Info(), policy, store, history=sim.history, store_check_seconds=60.0)
    warmed.warm()  # what the app's scorer factory does before a model serves
    assert warmed.ready_for([lead, other]) and warmed._index is not None
    assert warmed.score_leads([lead]).previous_score[0] == 50.0

    exact = ScoringService(sim.model, Info(), policy, store, history=sim.history)  # store_check_seconds=0
    assert not exact.ready_for([lead])  # reads the token on every pass
    no_store = ScoringService(sim.model, Info(), policy, history=sim.history)
    assert not no_store.ready_for([lead])  # the snapshot is not built yet
    no_store.snapshot(no_store.default_as_of())
    assert no_store.ready_for([lead])


def test_records_serialise_exactly_like_the_validated_response(
    sim: SimulatedScoring, policy: HandoffPolicy, store: ScoreStore
) -> None:
    import json

    from serving.schemas import ScoreResponse, predictions_json

    service = ScoringService(sim.model, Info(), policy, store, history=sim.history)
    leads = [str(x) for x in service.snapshot(service.default_as_of()).lead_ids[:40]]
    records = service.score_leads(leads, explain=True).to_records()
    records += service.score_leads(leads[:3], as_of=NOW - timedelta(days=300), explain=False).to_records()
    assert any(r["reasons"] for r in records) and any(r["next_best_action"] for r in records)
    validated = ScoreResponse(predictions=[Prediction.model_validate(r) for r in records])
    assert json.loads(predictions_json(records)) == json.loads(validated.model_dump_json())
    assert b'Z"' in predictions_json(records)  # UTC times end in Z, as pydantic writes them
