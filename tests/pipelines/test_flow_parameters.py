"""Every flow validates JSON parameters the way a deployment run does: after a cloudpickle round trip.

A worker or ``serve`` process receives the flow by value (cloudpickle keeps only the globals its code
uses) and validates the run's JSON parameters against the flow's annotations. With string annotations
(``from __future__ import annotations``) ``Path`` is then unresolvable and every run failed before any
work: "Score_Batch_FlowModel is not fully defined; you should define Path".
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

import pipelines.flows

FLOWS = sorted(
    (name for name, obj in vars(pipelines.flows).items() if isinstance(obj, Flow)),
)
# A JSON value for each annotation a flow parameter may have (what a deployment stores).
SAMPLES: dict[str, Any] = {"Path": "/tmp/x", "str": "x", "int": 1, "float": 1.0, "bool": True}


def _sample(annotation: Any) -> Any:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for name, value in SAMPLES.items():
        if text == name or text.startswith(f"{name} |"):
            return value
    return None  # e.g. ProjectConfig | None, list[str] | None


def test_every_flow_is_checked() -> None:
    assert {"build_features_flow", "train_flow", "score_batch_flow"} <= set(FLOWS)


@pytest.mark.parametrize("name", FLOWS)
def test_flow_annotations_are_objects_not_strings(name: str) -> None:
    flow = getattr(pipelines.flows, name)
    strings = [p.name for p in inspect.signature(flow.fn).parameters.values() if isinstance(p.annotation, str)]
    assert not strings, f"{name}: string annotations {strings} break deployment runs (no __future__ annotations)"


@pytest.mark.parametrize("name", FLOWS)
def test_flow_validates_json_parameters_after_cloudpickle(name: str) -> None:
    flow = load_flow_from_entrypoint(f"{Path(pipelines.flows.__file__)}:{name}")
    required = {
        p.name: _sample(p.annotation)
        for p in inspect.signature(flow.fn).parameters.values()
        if p.default is inspect.Parameter.empty
    }
    parameters = json.loads(json.dumps(required))
    shipped = cloudpickle.loads(cloudpickle.dumps(flow))
    validated = shipped.validate_parameters(parameters)
    for key, value in required.items():
        if value == "/tmp/x" and key in validated:
            assert isinstance(validated[key], Path), f"{name}.{key}: {validated[key]!r}"
