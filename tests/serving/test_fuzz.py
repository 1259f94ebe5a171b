"""API fuzzing with schemathesis against the app in-process (ASGI), over every route of the OpenAPI schema.

With a valid key: >= 1,000 generated cases (positive and negative) across all routes; with no key and a
wrong key, a smaller run. Every answer must be below 500, every 4xx the JSON error body, and no body may
hold a stack trace or a file path. Runs in well under two minutes on the shared 2-core machine.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from serving.app import create_app
from tests.serving.app_support import (
    AUTH,
    OTHER_KEY,
    Trained,
    service_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

VALID_KEY_CASES = 1_000
NO_KEY_CASES = 100
_LEAKS = re.compile(r"Traceback|File \"|/work/|/home/|/usr/|site-packages|\.py\b")


@pytest.fixture(scope="module")
def app(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    # a report to serve, so that GET /v1/report is fuzzed past its 404 too
    report = tmp_path_factory.mktemp("fuzz-report") / "report.html"
    report.write_text("<!doctype html><title>report</title><p>fuzz</p>", encoding="utf-8")
    # generous limits: the fuzzer checks correctness, not load shedding
    yield create_app(
        service_config(trained, max_body_bytes=1_048_576, deadline_seconds=30, max_in_flight=1_000, report_path=report)
    )


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def label_of(operation: Any) -> str:
    return f"{operation.method.upper()} {operation.path}"


def _check(case: Any, response: Any, seen: Counter[tuple[str, int]]) -> None:
    label = f"{case.method} {case.path}"
    seen[(label, response.status_code)] += 1
    body = response.text
    assert response.status_code < 500, f"{label}: {response.status_code} {body[:500]}"
    assert not _LEAKS.search(body), f"{label}: the body leaks internals: {body[:500]}"
    if 400 <= response.status_code < 500:
        payload = json.loads(body)
        assert set(payload) == {"error"}, f"{label}: not the error body: {body[:300]}"
        assert isinstance(payload["error"]["code"], str) and isinstance(payload["error"]["message"], str)


def _fuzz(strategy: Any, headers: dict[str, str] | None, examples: int, seen: Counter[tuple[str, int]]) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=st.data())
    def fuzz(data: st.DataObject) -> None:
        case = data.draw(strategy)
        if headers is None:
            (case.headers or {}).pop("Authorization", None)
            response = case.call()
        else:
            response = case.call(headers=headers)
        _check(case, response, seen)

    fuzz()


def _run(app: FastAPI, headers: dict[str, str] | None, total: int) -> Counter[tuple[str, int]]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = _operations(schema)
    # some operations have few distinct inputs (GET /health: one): give the others a margin
    per_mode = math.ceil(1.15 * total / (2 * len(operations)))
    seen: Counter[tuple[str, int]] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation.as_strategy(generation_mode=mode), headers, per_mode, seen)
            except Unsatisfiable:  # nothing to break in a request without parameters (GET /health, negative)
                assert mode == GenerationMode.NEGATIVE, label_of(operation)
    return seen


# runs first: the fuzzer below records feedback on the same handoffs
def test_the_schema_states_the_contract_and_its_own_examples_succeed(app: FastAPI, trained: Trained) -> None:
    from fastapi.testclient import TestClient

    contract = trained.history.contract
    with TestClient(app) as client:
        schema = client.get("/openapi.json").json()
        components = schema["components"]["schemas"]
        assert components["ActivityIn"]["properties"]["activity_type"]["enum"] == list(contract.activity_types)
        assert components["StageEntryIn"]["properties"]["stage"]["enum"] == list(contract.stages.order)
        attributes = components["InlineLead"]["properties"]["attributes"]
        assert set(attributes["properties"]) == {a.name for a in contract.attributes}
        assert attributes["additionalProperties"] is False
        feedback = components["FeedbackRequest"]
        assert {"required": ["reason_code"]}.items() <= feedback["anyOf"][1].items()
        assert "400" in schema["paths"]["/v1/score"]["post"]["responses"]
        # every example of the request bodies, posted as is, succeeds
        score_examples = components["ScoreRequest"]["examples"]
        assert score_examples and any("lead_id" in item for item in score_examples[0]["items"])
        for example in score_examples:
            for route in ("/v1/score", "/v2/score"):
                response = client.post(route, headers=AUTH, json=example)
                assert response.status_code == 200, (route, response.text)
        for example in components["FeedbackRequest"]["examples"]:
            response = client.post("/v1/feedback", headers=AUTH, json=example)
            assert response.status_code in (200, 201), response.text


def test_fuzzed_requests_with_a_valid_key_never_get_a_5xx_or_leak(app: FastAPI) -> None:
    seen = _run(app, AUTH, VALID_KEY_CASES)
    assert sum(seen.values()) >= VALID_KEY_CASES
    routes = {label for label, _ in seen}
    assert {"POST /v1/score", "POST /v2/score", "GET /v1/handoff", "POST /v1/feedback"} <= routes
    # the fuzzer got past validation on every route (not only 4xx); random lead ids are never in the batch
    succeeded = {label for (label, status) in seen if status < 300}
    assert routes - {"GET /v1/leads/{lead_id}/score"} <= succeeded, sorted(seen.items())
    print(f"{sum(seen.values())} cases:", sorted(seen.items()))


@pytest.mark.parametrize("headers", [None, {"Authorization": f"Bearer {OTHER_KEY}"}], ids=["no-key", "wrong-key"])
def test_fuzzed_requests_without_a_valid_key_are_refused_cleanly(app: FastAPI, headers: dict[str, str] | None) -> None:
    seen = _run(app, headers, NO_KEY_CASES)
    statuses = {status for (label, status) in seen if label != "GET /health"}
    assert statuses <= {400, 401, 403, 413, 422}, sorted(seen.items())
    assert statuses & {401, 403}
