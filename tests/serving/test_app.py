"""The CRM endpoint (serving/app.py): keys, operations, scoring, payload limits, errors, batch scores,
handoffs and feedback, per-item results, inputs found by fuzzing, CORS and rate limits.

Each app under test loads the registered pyfunc of the shared ``trained`` model (tests/serving/conftest.py)
through the real lifespan; the champion hot swap and the service's lifecycle are in test_app_lifecycle.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.schemas import Prediction
from serving.schemas.results import ScoreResultsResponse
from serving.stores import ScoreStore
from tests.serving.app_support import (
    AUTH,
    MAX_BODY,
    OTHER_KEY,
    Trained,
    batch_frame,
    iso,
    known_leads,
    service_config,
)


def test_the_logged_run_carries_the_effect_table(trained: Trained) -> None:
    from mlflow import MlflowClient

    from models.package.run_artifacts import load_effects

    registry = MlflowClient(trained.tracking_uri, registry_uri=trained.tracking_uri)
    run_id = registry.get_model_version(trained.model_name, "1").run_id
    table = load_effects(run_id, tracking_uri=trained.tracking_uri)
    assert list(table["segment"]) == ["all", "new", "mql"] and list(table["campaign_id"]) == ["", "", ""]


@pytest.fixture(scope="module")
def client(trained: Trained) -> Iterator[TestClient]:
    with TestClient(create_app(service_config(trained)), raise_server_exceptions=False) as test_client:
        yield test_client


# -- auth --------------------------------------------------------------------------------------------
def test_health_needs_no_key_but_everything_else_does(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    for method, path in [
        ("GET", "/ready"),
        ("GET", "/v1/model"),
        ("GET", "/v1/handoff"),
        ("GET", "/v1/leads/L1/score"),
        ("POST", "/v1/score"),
        ("POST", "/v1/feedback"),
    ]:
        missing = client.request(method, path)
        assert missing.status_code == 401, path
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert missing.json()["error"]["code"] == "unauthorized"
        malformed = client.request(method, path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert malformed.status_code == 401, path
        wrong = client.request(method, path, headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert wrong.status_code == 403, path
        body = wrong.json()["error"]
        assert body["code"] == "forbidden" and body["fields"] == []
        assert OTHER_KEY not in wrong.text


def test_invalid_body_from_an_unauthenticated_client_is_401_not_a_validation_report(client: TestClient) -> None:
    response = client.post("/v1/score", json={"items": [{"lead_id": ""}], "typo": 1})
    assert response.status_code == 401
    assert "typo" not in response.text


# -- operations ----------------------------------------------------------------------------------------
def test_ready_and_model_describe_the_loaded_champion(client: TestClient, trained: Trained) -> None:
    ready = client.get("/ready", headers=AUTH)
    assert ready.status_code == 200
    assert ready.json() == {
        "ready": True,
        "model": {"name": trained.model_name, "version": "1"},
        "policy_version": trained.policy.policy_version,
        "detail": None,
    }
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["name"] == trained.model_name and info["version"] == "1" and info["alias"] == "champion"
    assert info["run_id"] == trained.run_id
    assert info["horizon_days"] == trained.model.horizon_days
    assert info["policy_version"] == trained.policy.policy_version
    assert 0.5 < info["metrics"]["roc_auc"] <= 1.0
    assert info["trained_at"] is not None and info["loaded_at"] is not None


def test_responses_carry_a_request_id(client: TestClient) -> None:
    generated = client.get("/health")
    assert len(generated.headers["X-Request-ID"]) == 16
    echoed = client.get("/v1/leads/nope/score", headers={**AUTH, "X-Request-ID": "crm-trace-42"})
    assert echoed.headers["X-Request-ID"] == "crm-trace-42"
    assert echoed.json()["error"]["request_id"] == "crm-trace-42"


def test_openapi_documents_routes_security_and_examples(client: TestClient, trained: Trained) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/v1/score", "/v1/leads/{lead_id}/score", "/v1/handoff", "/v1/feedback", "/v1/model", "/ready"} <= set(
        spec["paths"]
    )
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert spec["paths"]["/v1/score"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in spec["paths"]["/health"]["get"]
    schemas = spec["components"]["schemas"]
    # the example names a lead open in the data this service loaded (see serving/openapi_contract.py)
    assert schemas["ScoreRequest"]["examples"][0]["items"][0]["lead_id"] in trained.open_ids
    assert schemas["FeedbackRequest"]["examples"]
    assert set(spec["paths"]["/v1/feedback"]["post"]["responses"]) >= {"200", "201", "404", "409", "422"}


# -- scoring -----------------------------------------------------------------------------------------


def test_score_by_id_matches_the_model_on_point_in_time_features(client: TestClient, trained: Trained) -> None:
    from features.build import build_features
    from features.config import FeatureConfig

    ids = known_leads(trained, 3)
    response = client.post(
        "/v1/score", headers=AUTH, json={"items": [{"lead_id": i} for i in ids], "as_of": iso(trained.as_of)}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["lead_id"] for p in predictions] == ids
    frame, _ = build_features(trained.history, [pd.Timestamp(trained.as_of)], FeatureConfig())
    expected = trained.model.predict_arrays(frame.set_index("lead_id", drop=False).loc[ids])
    np.testing.assert_allclose([p["readiness"] for p in predictions], expected["readiness"], rtol=1e-9)
    assert all(p["model"] == {"name": trained.model_name, "version": "1"} for p in predictions)
    assert all(p["as_of"] == iso(trained.as_of) for p in predictions)
    for p in predictions:  # explain defaults to true: reasons and the next-best action are there
        positive, negative = p["reasons"]["positive"], p["reasons"]["negative"]
        assert 0 < len(positive) + len(negative) <= 10
        assert all(r["contribution"] >= 0 for r in positive) and all(r["contribution"] <= 0 for r in negative)
        nba = p["next_best_action"]
        assert nba["estimated"] is True
        if nba["segment"] == "new":
            assert nba["action"] == "invite_to_webinar" and nba["ci_low"] == 0.01 and nba["readiness_gain"] == 0.02
        else:
            assert nba["action"] is None and nba["label"] == "no action with evidence of effect"
        assert [c["feature"] for c in p["reasons"]["context"]] == ["stage", "days_in_stage"]
        assert p["handoff"]["handoff_id"] is None  # on-demand scoring never records a handoff


def test_cached_by_id_requests_run_on_the_event_loop_with_the_same_answers(
    trained: Trained, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A by-id request whose features and store facts are cached skips the thread pool; the answer is the same,
    schema-valid, and a request that needs a feature build or a store query still goes to the pool."""
    import gc

    import serving.app as app_module

    offloaded: list[str] = []
    real = app_module.run_in_threadpool

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        offloaded.append(fn.__name__)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(app_module, "run_in_threadpool", counting)
    lead = known_leads(trained, 1)[0]
    body = {"items": [{"lead_id": lead}]}
    with TestClient(create_app(service_config(trained, store_check_seconds=2.0)), raise_server_exceptions=False) as c:
        assert gc.get_freeze_count() > 0  # the loaded model and libraries are out of the collector's way
        first = c.post("/v1/score", headers=AUTH, json=body)
        assert first.status_code == 200, first.text
        assert offloaded == []  # the load warmed the snapshot and every lead's store facts (ScoringService.warm)
        second = c.post("/v1/score", headers=AUTH, json=body)
        assert second.status_code == 200, second.text
        assert offloaded == []  # cached: scored on the event loop
        service = c.app.state.leadscore.watcher.current.service  # type: ignore[attr-defined]
        service._facts.checked_at -= 1.9  # nearly due: the background refresher checks it in time
        deadline = time.monotonic() + 10
        while time.monotonic() - service._facts.checked_at > 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.monotonic() - service._facts.checked_at <= 1.0, "the store facts refresher did not run"
        assert c.post("/v1/score", headers=AUTH, json=body).status_code == 200
        assert offloaded == []  # still fresh: no request waited for the store
        explicit = c.post("/v1/score", headers=AUTH, json={**body, "as_of": iso(trained.as_of)})
        assert explicit.status_code == 200 and offloaded == ["_score_records"]  # an explicit as_of builds features
    a, b = first.json()["predictions"][0], second.json()["predictions"][0]
    Prediction.model_validate(b)
    assert {k: v for k, v in a.items() if k != "scored_at"} == {k: v for k, v in b.items() if k != "scored_at"}
    assert a["reasons"] is not None and a["next_best_action"] is not None
    assert gc.get_freeze_count() == 0  # the lifespan gave them back


def test_score_without_explain_has_no_reasons(client: TestClient, trained: Trained) -> None:
    lead = known_leads(trained, 1)[0]
    response = client.post("/v1/score", headers=AUTH, json={"items": [{"lead_id": lead}], "explain": False})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["reasons"] is None and prediction["next_best_action"] is None


def test_lead_not_open_at_as_of_is_422_naming_the_item(client: TestClient, trained: Trained) -> None:
    leads = trained.history.leads
    closed = sorted(set(leads.loc[leads["created_at"] < trained.as_of, "lead_id"]) - set(trained.open_ids))[0]
    open_lead = known_leads(trained, 1)[0]
    response = client.post(
        "/v1/score",
        headers=AUTH,
        json={"items": [{"lead_id": open_lead}, {"lead_id": closed}], "as_of": iso(trained.as_of)},
    )
    assert response.status_code == 422, response.text
    fields = response.json()["error"]["fields"]
    assert [f["field"] for f in fields] == ["items.1.lead_id"]
    assert closed in fields[0]["message"]


def test_score_inline_and_by_id_in_one_request_keeps_request_order(client: TestClient, trained: Trained) -> None:
    contract = trained.history.contract
    known = known_leads(trained, 1)[0]
    created = trained.as_of - timedelta(days=30)
    inline = {
        "lead_id": "crm-new-1",
        "created_at": iso(created),
        "activities": [
            {"occurred_at": iso(created + timedelta(days=d)), "activity_type": contract.activity_types[0]}
            for d in (1, 5, 20)
        ],
        "stage_history": [{"stage": contract.stages.order[0], "entered_at": iso(created)}],
    }
    body = {"items": [{"inline": inline}, {"lead_id": known}], "as_of": iso(trained.as_of), "explain": False}
    response = client.post("/v1/score", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["lead_id"] for p in predictions] == ["crm-new-1", known]
    assert all(0.0 <= p["readiness"] <= 1.0 for p in predictions)


def test_unknown_lead_is_404_naming_the_item(client: TestClient, trained: Trained) -> None:
    known = known_leads(trained, 1)[0]
    response = client.post("/v1/score", headers=AUTH, json={"items": [{"lead_id": known}, {"lead_id": "no-such"}]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert error["fields"] == [{"field": "items.1.lead_id", "message": "unknown lead 'no-such'"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [{"lead_id": "a", "inline": None}], "explian": True}, "explian"),
        ({"items": [{}]}, "items.0"),
        ({"items": [{"inline": {"lead_id": "x", "created_at": "2024-01-01T00:00:00"}}]}, "items.0.inline.created_at"),
        ({"items": [{"lead_id": "a"}], "as_of": "2999-01-01T00:00:00Z"}, "(request)"),
    ],
)
def test_invalid_score_request_is_422_naming_the_field(client: TestClient, body: dict[str, Any], field: str) -> None:
    response = client.post("/v1/score", headers=AUTH, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in [f["field"] for f in error["fields"]]


def test_inline_lead_outside_the_data_contract_is_422_naming_the_field(client: TestClient, trained: Trained) -> None:
    created = trained.as_of - timedelta(days=3)
    inline = {
        "lead_id": "crm-bad",
        "created_at": iso(created),
        "attributes": {"shoe_size": 42},
        "activities": [{"occurred_at": iso(created), "activity_type": "carrier_pigeon"}],
    }
    response = client.post("/v1/score", headers=AUTH, json={"items": [{"inline": inline}]})
    assert response.status_code == 422
    fields = {f["field"] for f in response.json()["error"]["fields"]}
    assert fields == {"items.0.inline.attributes.shoe_size", "items.0.inline.activities.0.activity_type"}


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/score", headers={**AUTH, "Content-Type": "application/json"}, content=b'{"items": [{"lead_id": '
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


# -- payload size --------------------------------------------------------------------------------------
def test_oversized_body_is_413_by_content_length(client: TestClient) -> None:
    big = {"items": [{"lead_id": "x" * 100}] * 100, "pad": "y" * MAX_BODY}
    response = client.post("/v1/score", headers=AUTH, json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_oversized_streamed_body_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b'{"items": ['
        for _ in range(MAX_BODY // 19 + 100):  # each chunk is 19 bytes
            yield b'{"lead_id": "abc"},'
        yield b'{"lead_id": "z"}]}'

    response = client.post("/v1/score", headers={**AUTH, "Content-Type": "application/json"}, content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_body_just_under_the_limit_is_accepted(client: TestClient, trained: Trained) -> None:
    known = known_leads(trained, 1)[0]
    response = client.post(
        "/v1/score",
        headers={**AUTH, "Content-Type": "application/json"},
        content=(f'{{"items": [{{"lead_id": "{known}"}}]}}').ljust(MAX_BODY - 1).encode(),
    )
    assert response.status_code == 200, response.text


# -- internal errors ---------------------------------------------------------------------------------
class ExplodingScorer:
    def ready_for(self, *_args: Any, **_kwargs: Any) -> bool:
        return False

    def refresh_store_facts(self) -> None:
        pass

    def score_leads(self, *_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internal detail /srv/models/x.pkl")

    def score_history(self, *_args: Any, **_kwargs: Any) -> list[Prediction]:
        raise RuntimeError("secret internal detail /srv/models/x.pkl")


def test_internal_error_is_500_without_a_stack_trace_and_is_logged(
    trained: Trained, caplog: pytest.LogCaptureFixture
) -> None:
    config = service_config(trained, scorer_factory=lambda model, info: ExplodingScorer())
    with (
        TestClient(create_app(config), raise_server_exceptions=False) as test_client,
        caplog.at_level(logging.ERROR, logger="serving.app"),
    ):
        response = test_client.post(
            "/v1/score", headers=AUTH, json={"items": [{"lead_id": known_leads(trained, 1)[0]}]}
        )
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text and "RuntimeError" not in response.text
    logged = [r for r in caplog.records if r.name == "serving.app"]
    assert logged and logged[-1].exc_info is not None
    assert error["request_id"] in logged[-1].getMessage()


# -- batch scores, handoff queue, feedback ---------------------------------------------------------------
def test_latest_batch_score_and_unknown_lead(client: TestClient, trained: Trained) -> None:
    lead, handoff_id = trained.handed_off[0]
    response = client.get(f"/v1/leads/{lead}/score", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["lead_id"] == lead and body["handoff"]["handoff_id"] == handoff_id
    assert body["policy_version"] == trained.policy.policy_version
    missing = client.get("/v1/leads/never-scored/score", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_handoff_queue_pages_best_first(client: TestClient, trained: Trained) -> None:
    first = client.get("/v1/handoff", headers=AUTH, params={"limit": 2}).json()
    second = client.get("/v1/handoff", headers=AUTH, params={"limit": 2, "offset": 2}).json()
    assert first["total"] == 3 and first["limit"] == 2 and first["offset"] == 0
    ids = [p["lead_id"] for p in first["items"] + second["items"]]
    assert ids == [lead for lead, _ in trained.handed_off]
    readiness = [p["readiness"] for p in first["items"] + second["items"]]
    assert readiness == sorted(readiness, reverse=True)
    bad = client.get("/v1/handoff", headers=AUTH, params={"limit": 0})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "limit"


def test_feedback_is_idempotent_and_conflicts_are_refused(client: TestClient, trained: Trained) -> None:
    lead, handoff_id = trained.handed_off[1]
    body = {"lead_id": lead, "handoff_id": handoff_id, "outcome": "rejected", "reason_code": "no_budget", "text": "Q2"}
    created = client.post("/v1/feedback", headers=AUTH, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["created"] is True
    replay = client.post("/v1/feedback", headers=AUTH, json=body)
    assert replay.status_code == 200
    assert replay.json()["created"] is False and replay.json()["feedback_id"] == created.json()["feedback_id"]
    conflict = client.post("/v1/feedback", headers=AUTH, json={**body, "outcome": "accepted", "reason_code": None})
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "conflict"
    unknown = client.post("/v1/feedback", headers=AUTH, json={**body, "handoff_id": "0" * 32})
    assert unknown.status_code == 404
    wrong_lead = client.post("/v1/feedback", headers=AUTH, json={**body, "lead_id": trained.handed_off[0][0]})
    assert wrong_lead.status_code == 404
    missing_reason = client.post("/v1/feedback", headers=AUTH, json={**body, "reason_code": None})
    assert missing_reason.status_code == 422


# -- per-item results (POST /v2/score) ----------------------------------------------------------------
def _terminal_entries(trained: Trained) -> pd.DataFrame:
    """Each lead's latest stage entry at as_of, for leads whose latest entry is terminal."""
    stages = trained.history.stage_history
    stages = stages[stages["entered_at"] <= trained.as_of].sort_values(["lead_id", "entered_at"])
    last = stages.groupby("lead_id").tail(1)
    return last[last["stage"].isin(trained.history.contract.stages.terminal)]


def test_v2_score_gives_each_lead_its_own_status(client: TestClient, trained: Trained) -> None:
    contract = trained.history.contract
    terminal = _terminal_entries(trained).set_index("lead_id")
    converted = terminal.index[terminal["stage"] == contract.stages.converted][0]
    closed = terminal.index[terminal["stage"].isin(contract.stages.closed_negative)][0]
    open_lead = known_leads(trained, 1)[0]
    leads = trained.history.leads.set_index("lead_id")
    late = leads["created_at"].idxmax()  # created after the as_of used below
    as_of = leads.loc[late, "created_at"].to_pydatetime() - timedelta(seconds=1)
    created = trained.as_of - timedelta(days=30)
    won = {
        "lead_id": "crm-won",
        "created_at": iso(created),
        "stage_history": [
            {"stage": contract.stages.order[0], "entered_at": iso(created)},
            {"stage": contract.stages.converted, "entered_at": iso(created + timedelta(days=3))},
        ],
    }
    items = [{"lead_id": x} for x in (open_lead, converted, closed, late, "no-such-lead")] + [{"inline": won}]
    response = client.post("/v2/score", headers=AUTH, json={"items": items, "as_of": iso(trained.as_of)})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(6))
    assert [r["status"] for r in results] == ["scored", "not_open", "not_open", "scored", "unknown", "not_open"]
    assert results[0]["prediction"]["lead_id"] == open_lead and results[0]["not_open"] is None
    assert results[1]["not_open"]["reason"] == "converted"
    assert results[1]["not_open"]["stage"] == contract.stages.converted
    entered = terminal.loc[converted, "entered_at"].to_pydatetime().replace(microsecond=0)
    assert results[1]["not_open"]["at"] == iso(entered)
    assert results[2]["not_open"]["reason"] == "closed"
    assert results[2]["not_open"]["stage"] == terminal.loc[closed, "stage"]
    assert results[5]["not_open"] == {
        "reason": "converted",
        "at": iso(created + timedelta(days=3)),
        "stage": contract.stages.converted,
        "last_score": None,
    }
    assert response.json()["counts"] == {"scored": 2, "not_open": 3, "unknown": 1}
    ScoreResultsResponse.model_validate(response.json())  # the body is what the OpenAPI schema says
    # the same lead before it was created
    early = client.post("/v2/score", headers=AUTH, json={"items": [{"lead_id": late}], "as_of": iso(as_of)})
    assert early.status_code == 200, early.text
    detail = early.json()["results"][0]["not_open"]
    assert detail["reason"] == "not_created" and detail["stage"] is None
    assert detail["at"] == iso(leads.loc[late, "created_at"].to_pydatetime().replace(microsecond=0))


def test_v2_score_reports_the_last_stored_score_of_a_lead_no_longer_open(trained: Trained, tmp_path: Path) -> None:
    from features.build import build_features
    from features.config import FeatureConfig

    closed = _terminal_entries(trained)["lead_id"].tolist()[:2]
    latest, _ = build_features(trained.history, [pd.Timestamp(trained.as_of)], FeatureConfig())
    frame = batch_frame(trained.model, latest.head(2), trained.policy)
    frame["lead_id"] = closed  # stored scores for two leads that are closed at as_of
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    with ScoreStore(store_url) as store:
        store.write_batch(frame, model_name="m", model_version="1", policy_version="p", as_of=trained.as_of)
    config = service_config(trained, store_url=store_url)
    with TestClient(create_app(config), raise_server_exceptions=False) as client:
        body = {"items": [{"lead_id": lead} for lead in closed], "as_of": iso(trained.as_of), "explain": False}
        response = client.post("/v2/score", headers=AUTH, json=body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["not_open", "not_open"]
    assert [r["not_open"]["last_score"] for r in results] == frame["score"].astype(int).tolist()


def test_v2_score_fails_only_a_malformed_request(client: TestClient, trained: Trained) -> None:
    lead = known_leads(trained, 1)[0]
    assert client.post("/v2/score", headers=AUTH, json={"items": []}).status_code == 422
    duplicate = client.post("/v2/score", headers=AUTH, json={"items": [{"lead_id": lead}, {"lead_id": lead}]})
    assert duplicate.status_code == 422
    bad_inline = {"lead_id": "x", "created_at": iso(trained.as_of), "attributes": {"no_such_attribute": 1}}
    response = client.post("/v2/score", headers=AUTH, json={"items": [{"inline": bad_inline}]})
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["field"] == "items.0.inline.attributes.no_such_attribute"


# -- inputs found by fuzzing (issue 15) -----------------------------------------------------------------
def test_huge_handoff_offset_is_422_not_500(client: TestClient) -> None:
    response = client.get("/v1/handoff", headers=AUTH, params={"offset": "9144874796754516574208"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "offset"
    assert client.get("/v1/handoff", headers=AUTH, params={"offset": 1_000_000_000}).status_code == 200


@pytest.mark.parametrize("route", ["/v1/score", "/v2/score"])
def test_inline_timestamp_out_of_range_in_utc_is_422_not_500(client: TestClient, route: str) -> None:
    inline = {"lead_id": "x", "created_at": "0001-01-01T00:00:00+12:16"}
    response = client.post(route, headers=AUTH, json={"items": [{"inline": inline}]})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["field"] == "items.0.inline.created_at"


def test_cors_is_off_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/v1/score",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_when_configured_allows_the_bearer_header_from_listed_origins_only(trained: Trained) -> None:
    config = service_config(trained, cors_origins=("https://crm.example",))
    with TestClient(create_app(config), raise_server_exceptions=False) as browser:
        ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
        preflight = browser.options("/v1/score", headers={"Origin": "https://crm.example", **ask})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://crm.example"
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        other = browser.options("/v1/score", headers={"Origin": "https://evil.example", **ask})
        assert "access-control-allow-origin" not in other.headers
        answer = browser.get("/v1/model", headers={"Origin": "https://crm.example", **AUTH})
        assert answer.status_code == 200
        assert "x-request-id" in answer.headers["access-control-expose-headers"].lower()


def test_per_key_rate_limit_when_configured(trained: Trained) -> None:
    config = service_config(trained, rate_limit_per_second=1, rate_limit_burst=2)
    with TestClient(create_app(config), raise_server_exceptions=False) as limited:
        codes = [limited.get("/v1/model", headers=AUTH).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        assert limited.get("/health").status_code == 200
