"""Reading back what runs logged, and logging monitor checks as runs of their own.

The drift reference a training run logged (:func:`load_reference_rows`, written by
:func:`models.package.tracking.drift_reference_rows`), its training span, its effect table, and
:func:`log_monitor_run` for ``leadscore monitor``.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from models.package.tracking import (
    EFFECTS_ARTIFACT,
    REFERENCE_ROWS_ARTIFACT,
    TrackingError,
    TrackingTarget,
    ensure_experiment,
    json_default,
)

# --------------------------------------------------------------------------------------------
# monitoring: the champion's drift reference, and monitor results


def load_reference_rows(target: TrackingTarget, run_id: str) -> pd.DataFrame | None:
    """The drift reference logged with a training run (:func:`drift_reference_rows`), or ``None``.

    Runs logged before leadscore kept a reference have none; callers then rebuild one from the data
    (:func:`training_span` says which dates).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = target.client()
    parent = str(Path(REFERENCE_ROWS_ARTIFACT).parent)
    try:
        names = {f.path for f in client.list_artifacts(run_id, parent)}
    except MlflowException as exc:
        raise TrackingError(f"cannot list the artifacts of run {run_id} in {target.display_uri()}: {exc}") from exc
    if REFERENCE_ROWS_ARTIFACT not in names:
        return None
    with tempfile.TemporaryDirectory(prefix="leadscore-reference-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=REFERENCE_ROWS_ARTIFACT, dst_path=tmp, tracking_uri=target.tracking_uri
        )
        return pd.read_parquet(local)


def training_span(target: TrackingTarget, run_id: str) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """First and last readiness training as-of date of a run (from its ``data.span.train`` param)."""
    params = target.client().get_run(run_id).data.params
    span = params.get("data.span.train")
    if not span or ".." not in span:
        return None
    first, last = span.split("..", 1)
    return pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC")


MONITOR_RESULT_ARTIFACT = "monitor.json"


def log_monitor_run(
    target: TrackingTarget,
    *,
    experiment: str,
    result: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
) -> str:
    """Log one monitor check as its own MLflow run (tag ``leadscore.kind = monitor``); returns the run id.

    ``result`` is the check's JSON document (artifact :data:`MONITOR_RESULT_ARTIFACT`), ``metrics`` its
    figures (``monitor.score_psi`` ...; non-finite values are left out).
    """
    experiment_id = ensure_experiment(target, experiment)
    client = target.client()
    run = client.create_run(experiment_id, run_name=run_name, tags={"leadscore.kind": "monitor", **dict(tags or {})})
    run_id = run.info.run_id
    try:
        finite = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        for key, value in finite.items():
            client.log_metric(run_id, key, value)
        with tempfile.TemporaryDirectory(prefix="leadscore-monitor-") as tmp:
            path = Path(tmp) / MONITOR_RESULT_ARTIFACT
            path.write_text(json.dumps(result, indent=2, sort_keys=True, default=json_default), encoding="utf-8")
            client.log_artifact(run_id, str(path))
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def load_effects(run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The effect table logged with a training run (``effects/effects.csv``), e.g. the champion's.

    Columns: :data:`models.explain.effects.TABLE_COLUMNS` (``campaign_id`` empty for actions; ``segment``
    "all" for the one-row-per-campaign-or-action view). The champion's scoring model carries the same
    table as ``ScoringModel.effects``.

    Raises:
        FileNotFoundError: if the run logged no effect table (trained before effects existed, or on
            single-snapshot data).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from models.explain.effects import read_effects

    with tempfile.TemporaryDirectory(prefix="leadscore-effects-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=EFFECTS_ARTIFACT, dst_path=tmp, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id} has no {EFFECTS_ARTIFACT} ({exc})") from exc
        return read_effects(path)
