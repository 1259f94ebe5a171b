"""The OpenAPI document states what the service enforces, with examples that work on the data it serves.

FastAPI's document comes from the pydantic models alone, which cannot know the data contract: activity
types, topics, stages and lead attributes are checked against the contract the service loaded (a 422
naming the field otherwise). Once the service has loaded its prospect history, :func:`contract_openapi`
adds those as ``enum``/``properties`` to the request schemas and replaces the request examples by ones
built from that history (an open lead, an inline lead that fits the contract, real handoffs), so an
integrator (or a fuzzer) posting the document's own examples gets a 2xx.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from serving.lead_states import LeadStates

if TYPE_CHECKING:
    from fastapi import FastAPI

    from features.history import ProspectHistory
    from serving.stores import ScoreStore

CONTRACT_NOTE = " Allowed values come from the data contract this service loaded."


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _iso(ts: pd.Timestamp) -> str:
    return ts.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _patch_enums(components: dict[str, Any], history: ProspectHistory) -> None:
    contract = history.contract
    activity = components.get("ActivityIn", {}).get("properties", {})
    if "activity_type" in activity:
        activity["activity_type"]["enum"] = list(contract.activity_types)
        activity["activity_type"]["description"] += CONTRACT_NOTE
    if "topic" in activity and contract.topics:
        activity["topic"] = {
            **_nullable({"type": "string", "enum": list(contract.topics)}),
            "description": "One of the contract's topics." + CONTRACT_NOTE,
        }
    stage = components.get("StageEntryIn", {}).get("properties", {}).get("stage")
    if stage is not None:
        stage["enum"] = list(contract.stages.order)
        stage["description"] += CONTRACT_NOTE
    attributes = components.get("InlineLead", {}).get("properties", {}).get("attributes")
    if attributes is not None:
        attributes.pop("additionalProperties", None)
        attributes["properties"] = {
            a.name: _nullable({"type": "number"} if a.kind == "numeric" else {"type": "string"})
            for a in contract.attributes
        }
        attributes["additionalProperties"] = False
        attributes["description"] += CONTRACT_NOTE


def _open_lead(history: ProspectHistory) -> str | None:
    end = pd.Timestamp(history.span[1]).floor("s")
    states = LeadStates(history)
    for lead in history.leads["lead_id"].astype(str).head(5_000).tolist():
        if (
            lead in states
            and states.not_open(lead, end) is None
            and states.not_open(lead, end - pd.Timedelta("1s")) is None
        ):
            return lead
    return None


def _inline_example(history: ProspectHistory) -> dict[str, Any]:
    contract = history.contract
    end = pd.Timestamp(history.span[1]).floor("s")
    created = end - timedelta(days=40)
    attributes: dict[str, Any] = {}
    for attr in contract.attributes[:3]:
        if attr.kind == "numeric":
            attributes[attr.name] = float(history.leads[attr.name].median()) if len(history.leads) else 1.0
        else:
            values = history.leads[attr.name].dropna()
            attributes[attr.name] = str(values.iloc[0]) if len(values) else "unknown"
    types = list(contract.activity_types)
    activities: list[dict[str, Any]] = [
        {"occurred_at": _iso(created + timedelta(days=3)), "activity_type": types[0], "channel": "web"}
    ]
    second: dict[str, Any] = {"occurred_at": _iso(created + timedelta(days=20)), "activity_type": types[-1]}
    if contract.topics:
        second["topic"] = contract.topics[0]
    activities.append(second)
    first_stage = contract.stages.order[0]
    return {
        "lead_id": "crm-98765",
        "created_at": _iso(created),
        "attributes": attributes,
        "activities": activities,
        "stage_history": [{"stage": first_stage, "entered_at": _iso(created)}],
    }


def _score_example(history: ProspectHistory) -> dict[str, Any]:
    items: list[dict[str, Any]] = []
    lead = _open_lead(history)
    if lead is not None:
        items.append({"lead_id": lead})
    items.append({"inline": _inline_example(history)})
    return {"items": items, "explain": True}


def _feedback_examples(store: ScoreStore) -> list[dict[str, Any]] | None:
    page = store.handoff_queue(limit=2)
    handed = [r for r in page.items if r.handoff_id is not None]
    if not handed:
        return None
    examples: list[dict[str, Any]] = [
        {
            "lead_id": handed[0].lead_id,
            "handoff_id": handed[0].handoff_id,
            "outcome": "rejected",
            "reason_code": "no_budget",
            "text": "Budget frozen until Q2; call back in March.",
        }
    ]
    if len(handed) > 1:
        examples.append({"lead_id": handed[1].lead_id, "handoff_id": handed[1].handoff_id, "outcome": "accepted"})
    return examples


def contract_openapi(schema: dict[str, Any], history: ProspectHistory | None, store: ScoreStore | None) -> None:
    """Add the loaded contract's enums and data-valid examples to ``schema`` (in place)."""
    components = schema.get("components", {}).get("schemas", {})
    if history is not None:
        _patch_enums(components, history)
        if "ScoreRequest" in components:
            components["ScoreRequest"]["examples"] = [_score_example(history)]
    if store is not None and "FeedbackRequest" in components:
        examples = _feedback_examples(store)
        if examples is not None:
            components["FeedbackRequest"]["examples"] = examples


def install_contract_openapi(app: FastAPI, loaded: Callable[[], tuple[Any, Any] | None]) -> None:
    """Make ``app.openapi()`` contract-aware once ``loaded()`` returns ``(history, store)`` (after start-up).

    Before that (no state yet) the plain document is returned and not cached, so the first request after
    start-up builds the full one.
    """
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        state = loaded()
        schema = plain()
        if state is None:
            app.openapi_schema = None
            return schema
        contract_openapi(schema, *state)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
