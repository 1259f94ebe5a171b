"""The monitor check: drift of the scored population, matured performance of the served scores, alerts.

:func:`run_check` is the work of the ``monitor`` flow:

1. **current population**: the store's current batch (lead ids and the readiness served), with its
   point-in-time features rebuilt from the prospect history as of the batch's ``as_of``. A batch scored by
   another model version than the champion is re-scored with the champion for the score PSI (noted). With
   no batch yet, the leads a batch would score now are used (noted).
2. **reference**: the champion's drift reference (logged with its training run, see
   :func:`models.package.tracking.drift_reference_rows`; for older runs rebuilt from the data at the last
   training dates). Both sides keep only leads of ages the reference holds
   (:func:`serving.monitoring.drift.comparable_ages`).
3. **drift**: score PSI and per-feature PSI (:func:`serving.monitoring.drift.drift_report`), features ranked
   by the champion's readiness gain.
4. **performance**: matured outcomes of every served score and their ROC AUC, PR AUC, calibration and
   conversion per grade (:mod:`serving.monitoring.performance`).
5. **alerts** (thresholds from ``train.monitoring`` of the modelling config): score PSI above
   ``score_psi_max``; a top-``top_features`` feature above ``feature_psi_max``; matured PR AUC below
   ``min_pr_auc_ratio`` x the champion's test PR AUC (only with enough matured scores and conversions).

:func:`write_result` stores the result as JSON (atomically); :func:`post_alert` sends the alert to a webhook.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.build import build_features
from features.history import ProspectHistory
from models.config import MonitoringConfig
from models.package.promotion import feature_config_of
from serving.monitoring.drift import DriftReport, comparable_ages, drift_report
from serving.monitoring.performance import (
    Maturity,
    ServedPerformance,
    matured_outcomes,
    maturity_summary,
    served_performance,
)
from serving.service import default_as_of

if TYPE_CHECKING:
    from serving.stores import ScoreStore

log = logging.getLogger(__name__)

RESULT_SCHEMA_VERSION = 1
LATEST_RESULT = "latest.json"
ID_COLUMNS = ("lead_id", "as_of")


class AlertDeliveryError(OSError):
    """The alert webhook could not be reached or refused the alert (an I/O error: the flow's task retries it)."""


@dataclass(frozen=True)
class Alert:
    """One broken rule: what, the measured value and the threshold."""

    kind: str  # score_drift | feature_drift | performance
    message: str
    value: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "value": _clean(self.value), "threshold": self.threshold}


@dataclass
class MonitorResult:
    """Everything one check measured (see the module docstring); ``to_dict()`` is the JSON result."""

    checked_at: datetime
    model: dict[str, Any]
    current: dict[str, Any]
    reference: dict[str, Any]
    drift: DriftReport
    performance: ServedPerformance
    maturity: Maturity
    champion_test: dict[str, float | None]
    config: MonitoringConfig
    alerts: list[Alert]
    notes: list[str] = field(default_factory=list)

    @property
    def alerting(self) -> bool:
        return bool(self.alerts)

    @property
    def status(self) -> str:
        return "alert" if self.alerts else "ok"

    def metrics(self) -> dict[str, float]:
        """Headline figures under ``monitor.*`` names (for MLflow); NaN where not measured."""
        table = self.drift.features
        top = table[table["top"]]
        perf = self.performance
        return {
            "monitor.alert": float(self.alerting),
            "monitor.score_psi": float(self.drift.score_psi),
            "monitor.max_feature_psi": float(table["psi"].max()) if len(table) else math.nan,
            "monitor.max_top_feature_psi": float(top["psi"].max()) if len(top) else math.nan,
            "monitor.features_flagged": float(len(self.drift.flagged_features)),
            "monitor.matured_scores": float(perf.n),
            "monitor.matured_batches": float(perf.n_batches),
            "monitor.matured_roc_auc": float(perf.roc_auc),
            "monitor.matured_pr_auc": float(perf.pr_auc),
            "monitor.matured_base_rate": float(perf.base_rate),
        }

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "schema_version": RESULT_SCHEMA_VERSION,
                "status": self.status,
                "checked_at": self.checked_at.isoformat(),
                "model": self.model,
                "current": self.current,
                "reference": self.reference,
                "thresholds": self.config.model_dump(mode="json"),
                "champion_test": self.champion_test,
                "alerts": [a.to_dict() for a in self.alerts],
                "drift": self.drift.to_dict(),
                "performance": self.performance.to_dict(),
                "maturity": self.maturity.to_dict(),
                "metrics": self.metrics(),
                "notes": list(self.notes),
            }
        )


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python, timestamps -> ISO text, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return value


# -- the pieces -----------------------------------------------------------------------------------


def feature_importance(model: Any) -> dict[str, float]:
    """Total gain of each feature in the champion's readiness booster (features it never split on: 0)."""
    booster = model.readiness_booster
    gains = booster.feature_importance(importance_type="gain")
    return {name: float(g) for name, g in zip(booster.feature_name(), gains, strict=True)}


def reference_from_history(
    history: ProspectHistory, model: Any, last_date: pd.Timestamp, n_snapshots: int, every_days: int = 7
) -> pd.DataFrame:
    """A drift reference rebuilt from the data: open leads at ``n_snapshots`` dates ending ``last_date``.

    For champions logged without a reference: point-in-time features make the rebuilt rows those the
    champion was trained on when the dates are its training dates (the data only grows).
    """
    last = pd.Timestamp(last_date)
    last = last.tz_localize("UTC") if last.tzinfo is None else last.tz_convert("UTC")
    dates = pd.DatetimeIndex([last - pd.Timedelta(days=every_days * k) for k in range(n_snapshots - 1, -1, -1)])
    frame, _ = build_features(history, dates, feature_config_of(model))
    out = frame[[c for c in (*ID_COLUMNS, *model.spec.features) if c in frame.columns]].copy()
    outputs = model.predict_arrays(out)
    out["readiness"] = outputs["readiness"]
    out["score"] = outputs["score"]
    return out


@dataclass
class CurrentPopulation:
    frame: pd.DataFrame  # features of the current population
    readiness: np.ndarray
    info: dict[str, Any]
    notes: list[str]


def current_population(history: ProspectHistory, store: ScoreStore, model: Any, model_info: Any) -> CurrentPopulation:
    """The current batch's leads with their features as of the batch (see the module docstring, step 1)."""
    notes: list[str] = []
    batch = store.current_batch()
    config = feature_config_of(model)
    if batch is None:
        as_of = default_as_of(history.span[1] if len(history.leads) else None)
        frame, _ = build_features(history, [as_of], config)
        if len(frame) == 0:
            raise ValueError(f"no lead is open at {as_of.isoformat()} and the store has no batch: nothing to compare")
        notes.append(
            "the store has no score batch yet: the drift figures describe the leads a batch would score now "
            f"(as of {as_of.isoformat()}), scored by the champion"
        )
        readiness = model.predict_readiness(frame)
        return CurrentPopulation(
            frame,
            np.asarray(readiness, dtype=np.float64),
            {"source": "now", "batch_id": None, "as_of": as_of.isoformat(), "n_scored": len(frame)},
            notes,
        )
    served = store.current_frame()[["lead_id", "readiness"]]
    as_of = pd.Timestamp(batch.as_of)
    frame, _ = build_features(history, [as_of], config)
    frame = frame.assign(lead_id=frame["lead_id"].astype(str))
    merged = frame.merge(served, on="lead_id", how="inner", suffixes=("", "_served"), validate="one_to_one")
    missing = len(served) - len(merged)
    if missing:
        notes.append(
            f"{missing:,} of {len(served):,} leads of batch {batch.batch_id} are not open at its as-of time in this "
            "data (a different or edited data directory?): they are left out of the drift figures"
        )
    champion_version = getattr(model_info, "version", None)
    rescored = champion_version is not None and str(champion_version) != str(batch.model_version)
    if rescored:
        readiness = np.asarray(model.predict_readiness(merged), dtype=np.float64)
        notes.append(
            f"batch {batch.batch_id} was scored by version {batch.model_version}, the champion is version "
            f"{champion_version}: the score PSI uses the champion's scores of the batch's leads"
        )
    else:
        readiness = merged["readiness"].to_numpy(dtype=np.float64)
    return CurrentPopulation(
        merged.drop(columns=["readiness"]),
        readiness,
        {
            "source": "batch",
            "batch_id": batch.batch_id,
            "as_of": as_of.isoformat(),
            "scored_at": pd.Timestamp(batch.scored_at).isoformat(),
            "model_version": batch.model_version,
            "n_scored": batch.n_scores,
            "rescored_with_champion": rescored,
        },
        notes,
    )


# -- the check ------------------------------------------------------------------------------------


def judge(
    drift: DriftReport,
    performance: ServedPerformance,
    champion_pr_auc: float | None,
    config: MonitoringConfig,
    maturity: Maturity | None = None,
) -> tuple[list[Alert], list[str]]:
    """The alert rules (module docstring, step 5): the alerts raised and notes on what could not be judged."""
    alerts: list[Alert] = []
    notes: list[str] = []
    if drift.score_drifted:
        alerts.append(
            Alert(
                "score_drift",
                f"score PSI {drift.score_psi:.3f} > {config.score_psi_max}: the scored population's readiness "
                "moved away from the training data's",
                drift.score_psi,
                config.score_psi_max,
            )
        )
    alerting = drift.alerting_features
    if alerting:
        psi_of = drift.features.set_index("feature")["psi"].astype(float).to_dict()
        rank_of = drift.features.set_index("feature")["rank"].astype(int).to_dict()
        shown = ", ".join(f"{f} (PSI {psi_of[f]:.3f}, rank {rank_of[f]})" for f in alerting)
        alerts.append(
            Alert(
                "feature_drift",
                f"{len(alerting)} of the {config.top_features} most important features drifted past PSI "
                f"{config.feature_psi_max}: {shown}",
                psi_of[alerting[0]],
                config.feature_psi_max,
            )
        )
    enough = performance.n >= config.min_matured_rows and performance.positives >= config.min_matured_positives
    if not enough:
        when = ""
        if maturity is not None and maturity.next_maturity is not None:
            when = f"; the next batch matures once the data reaches {maturity.next_maturity.date()}"
        notes.append(
            f"served performance not judged: {performance.n:,} matured scores with {performance.positives:,} "
            f"conversions (needs {config.min_matured_rows:,} and {config.min_matured_positives:,}){when}"
        )
    elif champion_pr_auc is None or not math.isfinite(champion_pr_auc):
        notes.append("served performance not judged: the champion has no logged test PR AUC")
    elif math.isfinite(performance.pr_auc):
        floor = config.min_pr_auc_ratio * champion_pr_auc
        if performance.pr_auc < floor:
            alerts.append(
                Alert(
                    "performance",
                    f"matured PR AUC {performance.pr_auc:.4f} < {config.min_pr_auc_ratio} x the champion's test PR "
                    f"AUC {champion_pr_auc:.4f} (= {floor:.4f}) over {performance.n:,} matured scores",
                    performance.pr_auc,
                    floor,
                )
            )
    return alerts, notes


def run_check(
    history: ProspectHistory,
    store: ScoreStore,
    model: Any,
    model_info: Any,
    reference: pd.DataFrame,
    config: MonitoringConfig,
    *,
    reference_info: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> MonitorResult:
    """Drift, matured performance and alerts for the champion ``model`` (see the module docstring).

    Args:
        history: the validated prospect history (features and labels come from it).
        store: the score store (current batch and all served scores).
        model: the champion scoring model; ``model_info`` its load info (version, run id, test metrics).
        reference: the drift reference rows: ``lead_id``, ``as_of``, the features and ``readiness``.
        config: thresholds and reference settings (``train.monitoring``).
        reference_info: where the reference came from (stored with the result).
        now: the check's time (default now).

    Raises:
        ValueError: the reference lacks readiness or features, or there is nothing to compare.
    """
    checked_at = (now or datetime.now(UTC)).astimezone(UTC)
    features = list(model.spec.features)
    missing = [c for c in ("readiness", *features) if c not in reference.columns]
    if missing:
        raise ValueError(f"the drift reference lacks columns {missing[:5]} (of {len(missing)}): rebuild it")
    if len(reference) == 0:
        raise ValueError("the drift reference is empty")
    current = current_population(history, store, model, model_info)
    notes = list(current.notes)

    ref_mask, cur_mask, age_limit = comparable_ages(reference, current.frame, max_age_days=config.max_lead_age_days)
    ref_keep, cur_keep = ref_mask.to_numpy(), cur_mask.to_numpy()
    left_out = int((~cur_keep).sum())
    if age_limit is not None and left_out:
        notes.append(
            f"{left_out:,} of {len(cur_keep):,} current leads are older than {age_limit:.0f} days, the oldest age "
            "in the reference: they are left out of the drift figures (like with like)"
        )
    if not cur_keep.any():
        raise ValueError(f"no current lead is {age_limit:.0f} days old or younger, the ages the reference holds")
    ref_rows = reference[ref_keep].reset_index(drop=True)
    cur_rows = current.frame[cur_keep].reset_index(drop=True)
    ref_dates = pd.to_datetime(reference["as_of"], utc=True) if "as_of" in reference.columns else None
    drift = drift_report(
        ref_rows,
        cur_rows,
        features,
        ref_rows["readiness"].to_numpy(dtype=np.float64),
        current.readiness[cur_keep],
        importance=feature_importance(model),
        categorical=list(model.spec.categorical),
        bins=config.bins,
        score_threshold=config.score_psi_max,
        feature_threshold=config.feature_psi_max,
        top_k=config.top_features,
        details={"age_limit_days": age_limit, "current_left_out": left_out},
    )

    horizon = int(model.spec.horizon_days)
    outcomes = matured_outcomes(store, history, horizon, now=checked_at)
    performance = served_performance(outcomes, n_bins=10)
    maturity = maturity_summary(store, history, horizon)
    metrics = dict(getattr(model_info, "metrics", {}) or {})
    champion_pr = metrics.get("pr_auc")
    alerts, judged_notes = judge(drift, performance, champion_pr, config, maturity)
    notes += judged_notes
    if performance.n and outcomes["model_version"].nunique() > 1:
        notes.append(
            "matured scores come from model versions "
            f"{sorted(outcomes['model_version'].unique().tolist())}; they are judged together against the champion"
        )
    reference_summary = {
        **dict(reference_info or {}),
        "n_rows": len(reference),
        "n_compared": int(ref_keep.sum()),
        "as_of_dates": sorted({d.isoformat() for d in ref_dates}) if ref_dates is not None else [],
        "age_limit_days": age_limit,
    }
    current_summary = {**current.info, "n_compared": int(cur_keep.sum()), "n_left_out_by_age": left_out}
    return MonitorResult(
        checked_at=checked_at,
        model={
            "name": getattr(model_info, "name", None),
            "version": getattr(model_info, "version", None),
            "run_id": getattr(model_info, "run_id", None),
            "trained_at": getattr(model_info, "trained_at", None),
            "horizon_days": horizon,
        },
        current=current_summary,
        reference=reference_summary,
        drift=drift,
        performance=performance,
        maturity=maturity,
        champion_test={k: metrics.get(k) for k in ("pr_auc", "roc_auc", "base_rate")},
        config=config,
        alerts=alerts,
        notes=notes,
    )


# -- output ---------------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_result(result: MonitorResult | Mapping[str, Any], directory: str | Path) -> Path:
    """Write ``monitor-<checked_at>.json`` and ``latest.json`` into ``directory`` (each atomically)."""
    doc = result.to_dict() if isinstance(result, MonitorResult) else dict(result)
    text = json.dumps(doc, indent=2, sort_keys=True)
    stamp = pd.Timestamp(doc["checked_at"]).strftime("%Y%m%dT%H%M%S%fZ")
    directory = Path(directory)
    path = directory / f"monitor-{stamp}.json"
    _atomic_write(path, text)
    _atomic_write(directory / LATEST_RESULT, text)
    return path


def alert_payload(result: MonitorResult) -> dict[str, Any]:
    """The webhook's JSON body: status, the alerts, the model and the headline figures."""
    return _clean(
        {
            "source": "leadscore",
            "event": "monitor.alert" if result.alerting else "monitor.ok",
            "status": result.status,
            "checked_at": result.checked_at.isoformat(),
            "model": result.model,
            "batch": {k: result.current.get(k) for k in ("batch_id", "as_of")},
            "alerts": [a.to_dict() for a in result.alerts],
            "metrics": result.metrics(),
            "text": "leadscore monitor: " + ("; ".join(a.message for a in result.alerts) or "no alert"),
        }
    )


def post_alert(url: str, payload: Mapping[str, Any], *, timeout: float = 10.0) -> int:
    """POST ``payload`` as JSON to ``url``; returns the HTTP status.

    Raises:
        AlertDeliveryError: the URL is not http(s), cannot be reached, or answers with an error status.
    """
    if not url.lower().startswith(("http://", "https://")):
        raise AlertDeliveryError(f"alert webhook URL must be http:// or https://, got {url!r}")
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "leadscore-monitor"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise AlertDeliveryError(f"alert webhook answered {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AlertDeliveryError(f"alert webhook unreachable: {exc}") from exc


def summary_lines(result: MonitorResult, top: int = 10) -> Sequence[str]:
    """A plain-text summary (for logs)."""
    d = result.drift
    lines = [
        f"monitor {result.status}: champion {result.model.get('name')} v{result.model.get('version')}, "
        f"score PSI {d.score_psi:.3f}, {len(d.flagged_features)} feature(s) over PSI {d.feature_threshold}",
    ]
    lines += [f"ALERT {a.kind}: {a.message}" for a in result.alerts]
    lines += [f"note: {n}" for n in result.notes]
    return lines[: top + 1 + len(result.alerts) + len(result.notes)]
