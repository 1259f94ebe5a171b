"""Prefect flows: they only wire tasks; the work happens in plain functions of the packages.

Tasks that move big frames use ``NO_CACHE``: Prefect's default cache key hashes every input,
which would serialise millions of rows for nothing. Only I/O tasks retry, and only on I/O errors
(retrying a contract violation cannot help).

No ``from __future__ import annotations`` here: Prefect validates a flow's parameters against its
annotations in the process that runs it, and a deployment run (worker or ``serve``) receives the flow
by value (cloudpickle), which keeps only the globals the code uses. String annotations such as
``"Path"`` then no longer resolve ("Score_Batch_FlowModel is not fully defined"); real annotation
objects travel with the function. tests/pipelines/test_flow_parameters.py guards this.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features import build as feature_build
from features import single_snapshot, snapshots, validation
from features.config import FeatureConfig
from features.history import ProspectHistory
from features.partitioned import load_any_history
from features.spec import FeatureSpec, read_feature_table, write_feature_table
from models.config import TrainConfig
from models.fit import training
from models.fit.readiness import ReadinessModel
from models.fit.stage import StageModel
from models.package import promotion
from models.package.registry import ModelRegistry, PromotionDecision
from models.package.tracking import TrackingTarget, TrainingRun, configure_mlflow, log_training_result
from pipelines.config import ProjectConfig
from pipelines.dask_runner import open_cluster
from pipelines.flow_parts import IO_TASK, BuildFeaturesSummary, lower_batch_priority
from pipelines.partitioned import (
    WHOLE_HISTORY_SAMPLE_LEADS,
    build_partitioned_features_flow,
    is_partitioned,
    score_and_write_partitioned_batch,
    split_partitioned_snapshots,
)


@task(name="load_history", **IO_TASK)
def load_history(data_dir: Path) -> validation.ValidationResult:
    return validation.load_history(data_dir)


@task(name="write_quarantine", **IO_TASK)
def write_quarantine(result: validation.ValidationResult, out_dir: Path) -> dict[str, Path]:
    return validation.write_quarantine(result, out_dir)


@task(name="choose_snapshots", cache_policy=NO_CACHE)
def choose_snapshots(history: ProspectHistory, as_of: list[str] | None, config: FeatureConfig) -> pd.DatetimeIndex:
    """Explicit ``--as-of`` dates, else the config's regular grid (spacing and optional start/end)."""
    if as_of:
        return snapshots.parse_as_of(as_of)
    return snapshots.configured_snapshot_dates(history, config)


@task(name="build_features", cache_policy=NO_CACHE)
def build_features(
    history: ProspectHistory, as_of: pd.DatetimeIndex, config: FeatureConfig
) -> tuple[pd.DataFrame, FeatureSpec]:
    return feature_build.build_features(history, as_of, config)


@task(name="build_single_snapshot_features", cache_policy=NO_CACHE)
def build_single_snapshot_features(history: ProspectHistory, config: FeatureConfig) -> tuple[pd.DataFrame, FeatureSpec]:
    return single_snapshot.build_single_snapshot_features(history, config)


@task(name="write_features", **IO_TASK)
def write_features(frame: pd.DataFrame, spec: FeatureSpec, out: Path) -> Path:
    return write_feature_table(frame, spec, out)


def default_quarantine_dir(out: Path) -> Path:
    return out.parent / f"{out.stem}.quarantine"


@flow(name="build-features")
def build_features_flow(
    data_dir: Path,
    out: Path,
    config: FeatureConfig | None = None,
    as_of: list[str] | None = None,
    quarantine_dir: Path | None = None,
) -> BuildFeaturesSummary:
    """load -> validate (quarantine) -> snapshots -> point-in-time features + labels -> Parquet.

    A single-snapshot data directory (``mode: single_snapshot`` in its contract, e.g. from ``leadscore
    import``) gets one row per lead labelled by its final outcome instead: it has no snapshots to choose.
    """
    config = config or FeatureConfig()
    quarantine_dir = quarantine_dir or default_quarantine_dir(out)
    result = load_history(data_dir)
    quarantine_files = write_quarantine(result, quarantine_dir)
    if single_snapshot.is_single_snapshot(result.history.contract):
        if as_of:
            raise ValueError(
                f"{data_dir} is a single-snapshot data set (one row per lead, as of its created time): "
                "snapshot dates (--as-of) do not apply"
            )
        frame, spec = build_single_snapshot_features(result.history, config)
        dates = pd.DatetimeIndex(frame["as_of"].unique()).sort_values()
    else:
        dates = choose_snapshots(result.history, as_of, config)
        frame, spec = build_features(result.history, dates, config)
    written = write_features(frame, spec, out)
    return BuildFeaturesSummary(
        out=written,
        rows=len(frame),
        snapshots=len(dates),
        first_as_of=str(dates.min().date()) if len(dates) else None,
        last_as_of=str(dates.max().date()) if len(dates) else None,
        n_features=len(spec.features),
        positives=int(frame["converted"].sum()) if len(frame) else 0,
        quarantine_dir=quarantine_dir,
        quarantine_files=quarantine_files,
        validation=result.report,
    )


# -- train ------------------------------------------------------------------------------------


@task(name="read_features", **IO_TASK)
def read_features(path: Path) -> tuple[pd.DataFrame, FeatureSpec]:
    """A feature table: one Parquet file, or a directory of partitions read as one table."""
    if path.is_dir():
        from features.partitioned import read_partitioned_features

        return read_partitioned_features(path)
    return read_feature_table(path)


@task(name="split_snapshots", cache_policy=NO_CACHE)
def split_snapshots(frame: pd.DataFrame, spec: FeatureSpec, config: TrainConfig) -> training.PreparedTraining:
    return training.prepare_training(frame, spec, config)


@task(name="train_readiness", cache_policy=NO_CACHE)
def train_readiness(prep: training.PreparedTraining) -> ReadinessModel:
    """LightGBM with early stopping, then calibration on the held-out snapshots."""
    return training.fit_readiness(prep)


@task(name="train_stage", cache_policy=NO_CACHE)
def train_stage(prep: training.PreparedTraining) -> StageModel | None:
    return training.fit_stage(prep)


@task(name="train_baselines", cache_policy=NO_CACHE)
def train_baselines(prep: training.PreparedTraining, readiness: ReadinessModel) -> dict[str, Any]:
    return training.fit_baseline_models(prep, readiness)


@task(name="evaluate_models", cache_policy=NO_CACHE)
def evaluate_models(
    prep: training.PreparedTraining,
    readiness: ReadinessModel,
    stage: StageModel | None,
    baselines: dict[str, Any],
) -> training.TrainingResult:
    return training.evaluate_models(prep, readiness, stage, baselines)


@task(name="connect_tracking", **IO_TASK)
def connect_tracking(tracking_uri: str, artifact_root: Path | None) -> TrackingTarget:
    return configure_mlflow(tracking_uri, artifact_root)


# Not retried: a retry after a partial log would register a second version.
@task(name="log_and_register", cache_policy=NO_CACHE)
def log_and_register(
    target: TrackingTarget, result: training.TrainingResult, experiment: str, model_name: str, data_dir: Path
) -> TrainingRun:
    from prefect.runtime import flow_run

    # Lineage: which Prefect flow run (scheduled, triggered or local) produced this model version.
    tags = {"leadscore.flow_run_id": str(flow_run.id)} if flow_run.id else None
    return log_training_result(
        target, result, experiment=experiment, registered_model_name=model_name, data_dir=data_dir, tags=tags
    )


@task(name="promote_model", cache_policy=NO_CACHE)
def promote_model(
    target: TrackingTarget,
    run: TrainingRun,
    result: training.TrainingResult,
    model_name: str,
    data_dir: Path,
    force: bool = False,
) -> PromotionDecision:
    """Guardrails (no signal, feature set, >= min_relative x champion, > best baseline), then promotion."""
    registry = ModelRegistry(target.client(), model_name, primary_metric=result.config.primary_metric)
    signal = promotion.training_signal(result)
    registry.record_signal(run.version, signal)
    return registry.promote_if_better(
        run.version,
        primary_metric=result.config.primary_metric,
        evaluate=promotion.current_data_evaluator(result, lambda: load_any_history(data_dir)),
        policy=result.config.promotion,
        signal=signal,
        baselines=promotion.training_baselines(result),
        candidate_features=list(result.spec.features),
        force=force,
    )


@task(name="estimate_effects", cache_policy=NO_CACHE)
def estimate_effects(data_dir: Path, config: FeatureConfig) -> pd.DataFrame | None:
    """Campaign and action effects on conversion (for the model's next-best actions and the report)."""
    from models.explain.effects import ActionSpec, estimate_training_effects
    from serving.policy import load_policy

    # On partitioned data: the leads of the first partitions (a hash sample of the leads).
    history = load_any_history(data_dir, max_leads=WHOLE_HISTORY_SAMPLE_LEADS)
    actions = [ActionSpec(a.name, a.activity_type) for a in load_policy().next_best_actions]
    return estimate_training_effects(history, actions, config)


@dataclass
class TrainSummary:
    """What ``train`` did, for the CLI and for callers."""

    features: BuildFeaturesSummary
    metrics: dict[str, dict[str, float]]
    stage_metrics: dict[str, Any] | None
    run: TrainingRun
    decision: PromotionDecision
    notes: list[str]
    timings: dict[str, float]


@flow(name="train")
def train_flow(
    data_dir: Path,
    work_dir: Path,
    config: ProjectConfig | None,
    tracking_uri: str,
    artifact_root: Path | None = None,
    experiment: str = "leadscore",
    model_name: str = "leadscore",
    force: bool = False,
    cluster: str | None = None,
) -> TrainSummary:
    """features -> split -> readiness (+ calibration), stage, baselines -> evaluate -> log + register -> promote.

    Promotion runs under the guardrails (``promotion:`` in the config); ``force`` promotes despite them.
    A partitioned data directory gets partitioned features (``work_dir/features/``); with ``cluster``
    (``tcp://...`` or ``local[:N]``) they are built and the boosters trained on Dask
    (:mod:`models.fit.distributed`), without it the partitions are built here and read as one table.
    The summary's ``decision.guardrail`` names the one that kept the champion (None when promoted).
    """
    lower_batch_priority()
    config = config or ProjectConfig()  # None (e.g. a scheduled deployment): the shipped defaults
    partitioned = is_partitioned(data_dir)
    if cluster is not None and not partitioned:
        raise ValueError(
            f"{data_dir} is not partitioned: --cluster needs a partitioned data directory "
            "(leadscore generate/import --partitions N)"
        )
    if partitioned:
        features_summary = build_partitioned_features_flow(
            data_dir, work_dir / "features", config=config.features, cluster=cluster
        )
    else:
        features_summary = build_features_flow(data_dir, work_dir / "features.parquet", config=config.features)
    # With a cluster the training rows stay on it (models/fit/distributed.py) and everything else runs here;
    # evaluation too pulls rows from it (the drift reference), so it runs before the cluster closes.
    with open_cluster(cluster) if cluster is not None else nullcontext() as client:
        if client is not None:
            prep = split_partitioned_snapshots(client, features_summary.out, config.train)
        else:
            frame, spec = read_features(features_summary.out)
            prep = split_snapshots(frame, spec, config.train)
        # cast: Prefect's Task.__call__ overloads make mypy infer a coroutine for this sync task
        readiness = cast(ReadinessModel, train_readiness(prep))
        stage = train_stage(prep)
        baselines = train_baselines(prep, readiness)
        result = evaluate_models(prep, readiness, stage, baselines)
    # attached to the one scoring model: serving's next-best actions need nothing else
    result.model.effects = estimate_effects(data_dir, config.features)
    target = connect_tracking(tracking_uri, artifact_root)
    run = log_and_register(target, result, experiment, model_name, data_dir)
    decision = promote_model(target, run, result, model_name, data_dir, force)
    return TrainSummary(
        features=features_summary,
        metrics=result.readiness_metrics,
        stage_metrics=result.stage_metrics,
        run=run,
        decision=decision,
        notes=list(result.notes),
        timings=dict(result.timings),
    )


# -- score-batch ------------------------------------------------------------------------------

# Schedules and deployments of these flows: pipelines/deployments.py (DEPLOYMENTS, leadscore deploy).


@task(name="load_champion", **IO_TASK)
def load_champion(
    tracking_uri: str, artifact_root: Path | None, model_name: str, alias: str = "champion"
) -> tuple[Any, Any]:
    """The registered model behind ``alias`` and its load info (name, version, run)."""
    from models.package.bundle import load_scoring_model

    configure_mlflow(tracking_uri, artifact_root)
    return load_scoring_model(f"models:/{model_name}@{alias}", tracking_uri=tracking_uri)


@task(name="backfill_batches", cache_policy=NO_CACHE)
def backfill_batches(
    history: ProspectHistory,
    model: Any,
    model_info: Any,
    policy_path: Path | None,
    store_url: str,
    weeks: int,
    anchor: str | None,
) -> Any:
    # Not retried: each past batch is its own committed write; a re-run skips what is already stored.
    from serving.batch import backfill
    from serving.policy import load_policy
    from serving.stores import ScoreStore

    store = ScoreStore(store_url)
    try:
        when = snapshots.parse_as_of([anchor])[0] if anchor else None
        return backfill(history, model, model_info, load_policy(policy_path), store, weeks, anchor=when)
    finally:
        store.close()


@task(name="score_and_write_batch", cache_policy=NO_CACHE)
def score_and_write_batch(
    history: ProspectHistory,
    model: Any,
    model_info: Any,
    policy_path: Path | None,
    store_url: str,
    as_of: str | None,
    out: Path | None,
) -> Any:
    # Not retried: a retry after a committed write would record a second batch (and second handoffs).
    from serving.batch import score_batch
    from serving.policy import load_policy
    from serving.stores import ScoreStore

    policy = load_policy(policy_path)
    store = ScoreStore(store_url)
    try:
        when = snapshots.parse_as_of([as_of])[0] if as_of else None
        return score_batch(history, model, model_info, policy, store, as_of=when, out=out)
    finally:
        store.close()


@flow(name="score-batch")
def score_batch_flow(
    data_dir: Path,
    store_url: str,
    tracking_uri: str,
    artifact_root: Path | None = None,
    model_name: str = "leadscore",
    alias: str = "champion",
    policy_path: Path | None = None,
    as_of: str | None = None,
    out: Path | None = None,
    backfill_weeks: int = 0,
    cluster: str | None = None,
) -> Any:
    """champion -> history -> features as of now for all open leads -> score, grade, hand off -> atomic write.

    Returns the :class:`serving.batch.BatchSummary`. Rejected input rows are quarantined next to the data
    (``DATA/quarantine``) as in ``leadscore validate``. With ``backfill_weeks`` > 0 the weekly batches of
    that many past weeks are scored first, each as of its own date (:func:`serving.batch.backfill`; dates
    the store already covers are skipped); the summary's ``backfilled`` says what was written.

    A partitioned data directory (``leadscore generate/import --partitions N``) is scored partition by
    partition (:mod:`serving.partitioned_batch`), on the Dask ``cluster`` if given (``tcp://...`` or
    ``local[:N]``), else in this process; it stores the batch the single-machine path stores. ``out`` may
    then also be a directory for ``part-NNNNN.parquet`` files. No backfill on partitioned data yet.
    """
    lower_batch_priority()
    from features.partitioned import is_partitioned

    if is_partitioned(data_dir):
        if backfill_weeks > 0:
            raise ValueError("--backfill is not supported on a partitioned data directory yet")
        model, info = load_champion(tracking_uri, artifact_root, model_name, alias)
        return score_and_write_partitioned_batch(data_dir, model, info, policy_path, store_url, as_of, out, cluster)
    if cluster is not None:
        raise ValueError(
            f"{data_dir} is not partitioned: --cluster needs a partitioned data directory "
            "(leadscore generate/import --partitions N)"
        )
    model, info = load_champion(tracking_uri, artifact_root, model_name, alias)
    result = load_history(data_dir)
    write_quarantine(result, data_dir / "quarantine")
    filled = None
    if backfill_weeks > 0:
        filled = backfill_batches(result.history, model, info, policy_path, store_url, backfill_weeks, as_of)
    summary = cast(Any, score_and_write_batch(result.history, model, info, policy_path, store_url, as_of, out))
    summary.backfilled = filled
    return summary


# -- monitor ----------------------------------------------------------------------------------

MONITOR_DEPLOYMENT = "monitor-daily"
MONITOR_CRON = "0 4 * * *"  # every day at 04:00, after the nightly score batch


@task(name="load_monitoring_config", cache_policy=NO_CACHE)
def load_monitoring_config(config_path: Path | None) -> Any:
    from pipelines.config import load_config

    return load_config(config_path).train.monitoring


@task(name="fetch_drift_reference", **IO_TASK)
def fetch_drift_reference(tracking_uri: str, artifact_root: Path | None, run_id: str) -> Any:
    """The champion run's logged drift reference, or ``None`` (runs logged before references were)."""
    from models.package.run_artifacts import load_reference_rows

    return load_reference_rows(configure_mlflow(tracking_uri, artifact_root), run_id)


@task(name="rebuild_drift_reference", cache_policy=NO_CACHE)
def rebuild_drift_reference(
    history: ProspectHistory, model: Any, tracking_uri: str, artifact_root: Path | None, run_id: str, snapshots: int
) -> Any:
    """A reference rebuilt from the data at the champion's last training dates (its run's ``data.span.train``)."""
    from models.package.run_artifacts import training_span
    from serving.monitoring.monitor import reference_from_history

    span = training_span(configure_mlflow(tracking_uri, artifact_root), run_id)
    if span is None:
        raise ValueError(
            f"the champion's run {run_id} logs neither a drift reference nor its training dates: retrain "
            "(leadscore train) so the new champion carries its reference"
        )
    return reference_from_history(history, model, span[1], snapshots)


@task(name="check_monitoring", cache_policy=NO_CACHE)
def check_monitoring(
    history: ProspectHistory,
    store_url: str,
    model: Any,
    model_info: Any,
    reference: Any,
    reference_info: dict[str, Any],
    config: Any,
) -> Any:
    from serving.monitoring.monitor import run_check
    from serving.stores import ScoreStore

    store = ScoreStore(store_url)
    try:
        return run_check(history, store, model, model_info, reference, config, reference_info=reference_info)
    finally:
        store.close()


@task(name="write_monitor_result", **IO_TASK)
def write_monitor_result(result: Any, result_dir: Path) -> Path:
    from serving.monitoring.monitor import write_result

    return write_result(result, result_dir)


# Not retried: a retry after a partial log would leave a second monitor run.
@task(name="log_monitor_result", cache_policy=NO_CACHE)
def log_monitor_result(tracking_uri: str, artifact_root: Path | None, experiment: str, result: Any) -> str:
    from models.package.run_artifacts import log_monitor_run

    model = result.model
    return log_monitor_run(
        configure_mlflow(tracking_uri, artifact_root),
        experiment=experiment,
        result=result.to_dict(),
        metrics=result.metrics(),
        tags={
            "leadscore.monitor.status": result.status,
            "leadscore.monitor.model_version": str(model.get("version")),
            "leadscore.monitor.model_run_id": str(model.get("run_id")),
        },
        run_name=f"monitor {result.checked_at:%Y-%m-%d %H:%M}",
    )


@task(name="raise_alerts", **IO_TASK)
def raise_alerts(result: Any, webhook_url: str | None) -> int | None:
    """Log every alert as an error; POST the alert to the webhook when one is configured. Returns its status."""
    import logging

    from prefect import get_run_logger

    from serving.monitoring.monitor import alert_payload, post_alert

    loggers = [logging.getLogger("leadscore.monitor"), get_run_logger()]
    for alert in result.alerts:
        for logger in loggers:
            logger.error("leadscore monitor ALERT %s: %s", alert.kind, alert.message)
    if not result.alerting or not webhook_url:
        return None
    return post_alert(webhook_url, alert_payload(result))


@dataclass
class MonitorSummary:
    """What ``monitor`` did: the check, where its JSON went, its MLflow run, the webhook's answer."""

    result: Any
    path: Path
    mlflow_run_id: str
    webhook_status: int | None

    @property
    def alerting(self) -> bool:
        return bool(self.result.alerting)


@flow(name="monitor")
def monitor_flow(
    data_dir: Path,
    store_url: str,
    tracking_uri: str,
    artifact_root: Path | None = None,
    model_name: str = "leadscore",
    alias: str = "champion",
    config_path: Path | None = None,
    result_dir: Path | None = None,
    experiment: str = "leadscore",
    webhook_url: str | None = None,
) -> MonitorSummary:
    """champion + reference -> current batch's features -> PSI, matured performance -> alerts -> JSON, MLflow, webhook.

    ``result_dir`` defaults to ``LEADSCORE_HOME/monitor`` and ``webhook_url`` to ``LEADSCORE_ALERT_WEBHOOK_URL``
    (read where the flow runs, so a deployment needs no secret in its parameters). An alert does not fail the
    run: the result says ``status: alert`` (``leadscore monitor`` exits 1 on it).
    """
    lower_batch_priority()
    from pipelines.settings import get_settings

    settings = get_settings() if result_dir is None or webhook_url is None else None
    config = load_monitoring_config(config_path)
    model, info = load_champion(tracking_uri, artifact_root, model_name, alias)
    result = load_history(data_dir)
    write_quarantine(result, data_dir / "quarantine")
    reference = fetch_drift_reference(tracking_uri, artifact_root, info.run_id)
    reference_info: dict[str, Any] = {"source": "logged with the champion's training run", "run_id": info.run_id}
    if reference is None:
        reference = rebuild_drift_reference(
            result.history, model, tracking_uri, artifact_root, info.run_id, config.reference_snapshots
        )
        reference_info["source"] = "rebuilt from the data at the champion's last training dates"
    checked = check_monitoring(result.history, store_url, model, info, reference, reference_info, config)
    path = write_monitor_result(checked, result_dir or settings.monitor_dir)  # type: ignore[union-attr]
    run_id = log_monitor_result(tracking_uri, artifact_root, experiment, checked)
    url = webhook_url if webhook_url is not None else settings.alert_webhook_url  # type: ignore[union-attr]
    status = raise_alerts(checked, url)
    return MonitorSummary(result=checked, path=path, mlflow_run_id=run_id, webhook_status=status)


# -- report -----------------------------------------------------------------------------------


@dataclass
class ReportSummary:
    """What ``report`` did, for the CLI and for callers."""

    path: Path
    logged_to_run: str | None
    summary: list[str]
    n_batches: int
    timings: dict[str, float]


def _champion_effects(model: Any) -> pd.DataFrame | None:
    from serving.report.inputs import check_effects

    effects = getattr(model, "effects", None)
    return check_effects(effects) if isinstance(effects, pd.DataFrame) and len(effects) else None


@task(name="gather_report_inputs", **IO_TASK)
def gather_report_inputs(
    store_url: str,
    model: Any,
    info: Any,
    policy_path: Path | None,
    history: ProspectHistory | None,
    since: str | None,
    tracking_uri: str,
    effects_path: Path | None,
    reference: pd.DataFrame | None,
) -> Any:
    import mlflow

    from serving.policy import load_policy
    from serving.report.build import gather_inputs, read_effects
    from serving.stores import ScoreStore

    store = ScoreStore(store_url)
    try:
        return gather_inputs(
            store,
            model,
            info,
            load_policy(policy_path),
            history=history,
            since=snapshots.parse_as_of([since])[0].to_pydatetime() if since else None,
            client=mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri),
            # an explicit table wins; else the estimated effects the champion carries (train attaches them)
            effects=read_effects(effects_path) if effects_path is not None else _champion_effects(model),
            reference=reference,
        )
    finally:
        store.close()


@task(name="render_report", cache_policy=NO_CACHE)
def render_report(inputs: Any) -> tuple[str, Any]:
    from serving.report.render import build_report

    return build_report(inputs)


@task(name="write_report", **IO_TASK)
def write_report_file(html: str, out: Path) -> Path:
    from serving.report.render import write_report

    return write_report(html, out)


@task(name="log_report", **IO_TASK)
def log_report_artifact(tracking_uri: str, path: Path, run_id: str | None, experiment: str) -> str:
    import mlflow

    from serving.report.build import log_report

    return log_report(
        mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri), path, run_id, experiment
    )


@flow(name="report")
def report_flow(
    out: Path,
    store_url: str,
    tracking_uri: str,
    artifact_root: Path | None = None,
    model_name: str = "leadscore",
    alias: str = "champion",
    data_dir: Path | None = None,
    policy_path: Path | None = None,
    since: str | None = None,
    effects_path: Path | None = None,
    experiment: str = "leadscore",
    log_to_mlflow: bool = True,
) -> ReportSummary:
    """champion + store (+ history) -> the six sections -> one self-contained HTML file -> the champion's MLflow run.

    Without ``data_dir`` the report renders without matured outcomes, campaigns, sources and drift (each
    section says so). ``since`` (ISO date) limits batches, handoffs and touches to that period.
    """
    lower_batch_priority()
    import time

    model, info = load_champion(tracking_uri, artifact_root, model_name, alias)
    history = load_history(data_dir).history if data_dir is not None else None
    reference: Any = None
    if history is not None and info.run_id:
        # the monitor's reference: logged with the champion's run, else rebuilt at its last training dates
        reference = fetch_drift_reference(tracking_uri, artifact_root, info.run_id)
        if reference is None:
            from models.config import MonitoringConfig

            n_dates = MonitoringConfig().reference_snapshots
            reference = rebuild_drift_reference(history, model, tracking_uri, artifact_root, info.run_id, n_dates)
    inputs = cast(
        Any,
        gather_report_inputs(
            store_url, model, info, policy_path, history, since, tracking_uri, effects_path, reference
        ),
    )
    timings = dict(inputs.timings)
    t = time.perf_counter()
    html, sections = render_report(inputs)
    timings["render"] = time.perf_counter() - t
    path = write_report_file(html, out)
    run_id = log_report_artifact(tracking_uri, path, info.run_id, experiment) if log_to_mlflow else None
    return ReportSummary(
        path=path, logged_to_run=run_id, summary=list(sections.summary), n_batches=sections.n_batches, timings=timings
    )
