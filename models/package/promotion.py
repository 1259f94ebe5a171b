"""Re-scoring registered models on the same test snapshots, rebuilt from the prospect history.

Used for manual promotion (``leadscore models promote VERSION --data DIR``): the candidate's logged
test rows (lead_id, as_of, converted) are rebuilt as point-in-time features from the data and both
the candidate and the champion are scored on exactly those rows with the logged labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from features.build import build_features
from features.config import FeatureConfig
from features.history import ProspectHistory
from features.spec import ID_COLUMNS
from models.fit.split import READINESS_TARGET
from models.fit.training import predict_readiness_of
from models.judge.evaluation import readiness_metrics

Evaluator = Callable[[Any, pd.DataFrame], Mapping[str, float]]


def feature_config_of(model: Any) -> FeatureConfig:
    """The feature settings a scoring model was trained with (from its FeatureSpec)."""
    spec = model.spec
    return FeatureConfig(
        windows_days=list(spec.windows_days),
        trend_window_days=spec.trend_window_days,
        horizon_days=spec.horizon_days,
    )


def history_evaluator(history: ProspectHistory) -> Evaluator:
    """``evaluate(model, rows)`` scoring ``model`` on ``rows`` rebuilt from ``history``.

    ``rows`` holds ``lead_id``, ``as_of`` and the logged label ``converted``. Features are built
    with the model's own feature settings; a row that cannot be rebuilt (the lead is missing
    from the data or no longer open at that date) is an error, so both models are always
    compared on identical rows.
    """
    keys = list(ID_COLUMNS)

    def evaluate(model: Any, rows: pd.DataFrame) -> Mapping[str, float]:
        if READINESS_TARGET not in rows.columns:
            raise ValueError(f"test rows lack the label column '{READINESS_TARGET}'")
        as_of = pd.DatetimeIndex(sorted(pd.to_datetime(rows["as_of"], utc=True).unique()))
        frame, _ = build_features(history, as_of, feature_config_of(model))
        wanted = rows[[*keys, READINESS_TARGET]].copy()
        wanted["as_of"] = pd.to_datetime(wanted["as_of"], utc=True).astype(frame["as_of"].dtype)
        matched = frame.drop(columns=[READINESS_TARGET]).merge(wanted, on=keys, how="inner", validate="one_to_one")
        if len(matched) != len(rows):
            raise ValueError(
                f"{len(rows) - len(matched)} of {len(rows)} test snapshots cannot be rebuilt from this data "
                "(leads missing or closed at their as_of): use the data directory the model was trained on"
            )
        proba = predict_readiness_of(model, matched)
        return readiness_metrics(matched[READINESS_TARGET].to_numpy(), proba)

    return evaluate


def training_signal(result: Any) -> Any:
    """The no-signal check (:func:`models.judge.guardrails.check_signal`) of a training result's test snapshots."""
    from models.judge.guardrails import check_signal

    cfg = result.config.promotion.no_signal
    test = result.test_frame
    proba = predict_readiness_of(result.readiness_model, test)
    pr_auc = float(result.readiness_metrics["leadscore"]["pr_auc"])
    return check_signal(
        test[READINESS_TARGET].to_numpy(),
        proba,
        pr_auc,
        confidence=cfg.confidence,
        n_bootstrap=cfg.n_bootstrap,
        min_pr_auc_lift=cfg.min_pr_auc_lift,
        seed=result.config.seed,
    )


def training_baselines(result: Any) -> dict[str, dict[str, float]]:
    """The baselines' test metrics of a training result (same rows as the challenger's)."""
    own = {"leadscore", "leadscore_uncalibrated"}
    return {name: dict(values) for name, values in result.readiness_metrics.items() if name not in own}


def current_data_evaluator(result: Any, history_loader: Callable[[], ProspectHistory]) -> Evaluator:
    """Score the champion on the challenger's (newest) test snapshots, built from the current data.

    When the champion uses the challenger's feature settings, its features on those rows are exactly the
    challenger's test frame (reused); otherwise they are rebuilt from ``history_loader()`` with the
    champion's own settings (:func:`history_evaluator`).
    """
    from models.package.tracking import result_evaluator

    same = result_evaluator(result)
    rebuilt: list[Evaluator] = []

    def evaluate(model: Any, rows: pd.DataFrame) -> Mapping[str, float]:
        if feature_config_of(model) == feature_config_of(result.model):
            return same(model, rows)
        if not rebuilt:
            rebuilt.append(history_evaluator(history_loader()))
        return rebuilt[0](model, rows)

    return evaluate
