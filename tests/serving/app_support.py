"""What the CRM endpoint's tests share: keys, the trained model's description and a service config.

The ``trained`` fixture that builds it lives in ``tests/serving/conftest.py`` (one per module: the endpoint,
hot-swap, fault and fuzz tests each get their own model and score store).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.history import ProspectHistory
from serving.app import ServiceConfig
from serving.auth import ApiKeyring, parse_api_keys
from serving.policy import HandoffPolicy

KEY = "test-key-0123456789abcdef"
OTHER_KEY = "unknown-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_BODY = 64 * 1024


@dataclass
class Trained:
    data: Path
    history: ProspectHistory
    model: Any
    model_name: str
    tracking_uri: str
    source: str  # artifact location of version 1 (new versions can point at it)
    run_id: str
    as_of: datetime
    store_url: str
    policy: HandoffPolicy
    handed_off: list[tuple[str, str]]  # (lead_id, handoff_id) of the stored batch
    open_ids: list[str]  # leads open at as_of (sorted)


def batch_frame(model: Any, features: pd.DataFrame, policy: HandoffPolicy) -> pd.DataFrame:
    """A scores frame from the model's real outputs (the top 3 leads handed off)."""
    arrays = model.predict_arrays(features)
    n = len(features)
    top = set(np.argsort(-arrays["readiness"])[:3].tolist())
    labels = model.stage_labels
    return pd.DataFrame(
        {
            "lead_id": features["lead_id"].astype(str).to_numpy(),
            "readiness": arrays["readiness"],
            "score": arrays["score"],
            "grade": arrays["grade"].astype(str),
            "stage": arrays["stage"].astype(str),
            "stage_probabilities": [dict(zip(labels, row.tolist(), strict=True)) for row in arrays["stage_proba"]],
            "trend": "new",
            "handoff": [i in top for i in range(n)],
            "handoff_rule": ["top 3 of the test batch" if i in top else "not in the top 3" for i in range(n)],
        }
    )


EFFECTS = pd.DataFrame(
    [
        {
            "kind": "action",
            "campaign_id": "",
            "action": "invite_to_webinar",
            "activity_type": "webinar",
            "segment": g,
            "n_exposed": 100,
            "estimate": e,
            "ci_low": lo,
            "ci_high": hi,
        }
        for g, e, lo, hi in (("all", 0.01, 0.001, 0.02), ("new", 0.02, 0.01, 0.03), ("mql", 0.03, -0.01, 0.07))
    ]
)


def service_config(trained: Trained, **overrides: Any) -> ServiceConfig:
    values: dict[str, Any] = {
        "tracking_uri": trained.tracking_uri,
        "model_name": trained.model_name,
        "policy": trained.policy,
        "store_url": trained.store_url,
        "api_keys": ApiKeyring(parse_api_keys([f"crm:{KEY}"], source="test")),
        "data_dir": trained.data,
        "poll_seconds": 0,
        "max_body_bytes": MAX_BODY,
    }
    values.update(overrides)
    return ServiceConfig(**values)


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def known_leads(trained: Trained, n: int) -> list[str]:
    return trained.open_ids[:n]


def new_version(trained: Trained, name: str, source: str) -> int:
    from mlflow import MlflowClient

    client = MlflowClient(trained.tracking_uri, registry_uri=trained.tracking_uri)
    return int(client.create_model_version(name, source, run_id=trained.run_id).version)


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def move_champion_to_a_failing_version(client: Any, registry: Any, name: str, bad: int, served: int) -> dict[str, Any]:
    """Point ``name``'s champion alias at ``bad`` (a version that cannot load) and check the service behind
    ``client`` stays ready, still serving ``served`` and saying why in ``/ready``; the ``/ready`` body."""
    registry.set_registered_model_alias(name, "champion", str(bad))
    wait_for(lambda: client.get("/ready", headers=AUTH).json()["detail"] is not None)
    ready = client.get("/ready", headers=AUTH)
    assert ready.status_code == 200
    body: dict[str, Any] = ready.json()
    assert body["ready"] is True and body["model"]["version"] == str(served)
    assert f"version {bad} failed to load" in body["detail"] and f"still serving version {served}" in body["detail"]
    return body
