"""Prefect flows: they only wire tasks; the work happens in plain functions of the packages.

Tasks that move big frames use ``NO_CACHE``: Prefect's default cache key hashes every input,
which would serialise millions of rows for nothing. Only I/O tasks retry, and only on I/O errors
(retrying a contract violation cannot help).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features import build as feature_build
from features import single_snapshot, snapshots, validation
from features.config import FeatureConfig
from features.history import ProspectHistory
from features.spec import FeatureSpec, read_feature_table, write_feature_table
from models.config import TrainConfig
from models.fit import training
from models.fit.readiness import ReadinessModel
from models.fit.stage import StageModel
from models.package.registry import ModelRegistry, PromotionDecision
from models.package.tracking import TrackingTarget, TrainingRun, configure_mlflow, log_training_result, result_evaluator
from pipelines.config import ProjectConfig


def _retry_on_os_error(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result(raise_on_failure=True)
    except OSError:
        return True
    except Exception:
        return False
    return False


IO_TASK: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 1,
    "retry_condition_fn": _retry_on_os_error,
    "cache_policy": NO_CACHE,
}


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


@dataclass
class BuildFeaturesSummary:
    """What ``build-features`` did, for the CLI and for callers."""

    out: Path
    rows: int
    snapshots: int
    first_as_of: str | None
    last_as_of: str | None
    n_features: int
    positives: int
    quarantine_dir: Path
    quarantine_files: dict[str, Path] = field(default_factory=dict)
    validation: validation.ValidationReport | None = None


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


@task(name="build_partitioned_features", cache_policy=NO_CACHE)
def build_partitioned_features(
    data_dir: Path,
    out: Path,
    config: FeatureConfig,
    as_of: list[str] | None,
    quarantine_dir: Path | None,
    cluster: str | None,
) -> Any:
    from features.partitioned import build_partitioned_features as build

    if cluster is None:
        return build(data_dir, out, config, as_of, quarantine_dir=quarantine_dir)
    from features.distributed import dask_mapper
    from pipelines.dask_runner import open_cluster

    with open_cluster(cluster) as client:
        return build(data_dir, out, config, as_of, quarantine_dir=quarantine_dir, mapper=dask_mapper(client))


@flow(name="build-partitioned-features")
def build_partitioned_features_flow(
    data_dir: Path,
    out: Path,
    config: FeatureConfig | None = None,
    as_of: list[str] | None = None,
    quarantine_dir: Path | None = None,
    cluster: str | None = None,
) -> BuildFeaturesSummary:
    """A partitioned data directory -> validate and build each partition (on ``cluster`` if given) ->
    partitioned Parquet in ``out`` (one ``part-NNNNN.parquet`` a partition; see features/partitioned.py)."""
    config = config or FeatureConfig()
    summary: Any = build_partitioned_features(data_dir, out, config, as_of, quarantine_dir, cluster)
    dates = summary.dates
    return BuildFeaturesSummary(
        out=summary.out,
        rows=summary.rows,
        snapshots=len(dates),
        first_as_of=str(dates.min().date()) if len(dates) else None,
        last_as_of=str(dates.max().date()) if len(dates) else None,
        n_features=len(summary.spec.features),
        positives=summary.positives,
        quarantine_dir=summary.quarantine_dir,
        validation=summary.validation,
    )


# -- train ------------------------------------------------------------------------------------


@task(name="read_features", **IO_TASK)
def read_features(path: Path) -> tuple[pd.DataFrame, FeatureSpec]:
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
    return log_training_result(
        target, result, experiment=experiment, registered_model_name=model_name, data_dir=data_dir
    )


@task(name="promote_model", cache_policy=NO_CACHE)
def promote_model(
    target: TrackingTarget, run: TrainingRun, result: training.TrainingResult, model_name: str
) -> PromotionDecision:
    registry = ModelRegistry(target.client(), model_name, primary_metric=result.config.primary_metric)
    return registry.promote_if_better(
        run.version,
        primary_metric=result.config.primary_metric,
        margin=result.config.promotion_margin,
        evaluate=result_evaluator(result),
    )


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
    config: ProjectConfig,
    tracking_uri: str,
    artifact_root: Path | None = None,
    experiment: str = "leadscore",
    model_name: str = "leadscore",
) -> TrainSummary:
    """features -> split -> readiness (+ calibration), stage, baselines -> evaluate -> log + register -> promote."""
    features_summary = build_features_flow(data_dir, work_dir / "features.parquet", config=config.features)
    frame, spec = read_features(features_summary.out)
    prep = split_snapshots(frame, spec, config.train)
    # cast: Prefect's Task.__call__ overloads make mypy infer a coroutine for this sync task
    readiness = cast(ReadinessModel, train_readiness(prep))
    stage = train_stage(prep)
    baselines = train_baselines(prep, readiness)
    result = evaluate_models(prep, readiness, stage, baselines)
    target = connect_tracking(tracking_uri, artifact_root)
    run = log_and_register(target, result, experiment, model_name, data_dir)
    decision = promote_model(target, run, result, model_name)
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

SCORE_BATCH_DEPLOYMENT = "score-batch-nightly"
SCORE_BATCH_CRON = "0 2 * * *"  # every night at 02:00 (the Prefect server's time zone, UTC by default)


@task(name="load_champion", **IO_TASK)
def load_champion(
    tracking_uri: str, artifact_root: Path | None, model_name: str, alias: str = "champion"
) -> tuple[Any, Any]:
    """The registered model behind ``alias`` and its load info (name, version, run)."""
    from models.package.bundle import load_scoring_model

    configure_mlflow(tracking_uri, artifact_root)
    return load_scoring_model(f"models:/{model_name}@{alias}", tracking_uri=tracking_uri)


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
) -> Any:
    """champion -> history -> features as of now for all open leads -> score, grade, hand off -> atomic write.

    Returns the :class:`serving.batch.BatchSummary`. Rejected input rows are quarantined next to the data
    (``DATA/quarantine``) as in ``leadscore validate``.
    """
    model, info = load_champion(tracking_uri, artifact_root, model_name, alias)
    result = load_history(data_dir)
    write_quarantine(result, data_dir / "quarantine")
    return score_and_write_batch(result.history, model, info, policy_path, store_url, as_of, out)


def serve_score_batch(
    parameters: dict[str, Any],
    *,
    name: str = SCORE_BATCH_DEPLOYMENT,
    cron: str = SCORE_BATCH_CRON,
) -> None:
    """Serve the ``score-batch`` flow as a deployment on a nightly cron schedule (blocks until stopped).

    ``parameters`` are the flow's arguments (``data_dir``, ``store_url``, ``tracking_uri`` ...). Needs a
    Prefect API (``prefect server start`` or Prefect Cloud); see the README for ``prefect deploy`` usage.
    """
    score_batch_flow.serve(name=name, cron=cron, parameters=parameters)


def score_batch_deployment(
    parameters: dict[str, Any], *, name: str = SCORE_BATCH_DEPLOYMENT, cron: str = SCORE_BATCH_CRON
) -> Any:
    """The nightly ``score-batch`` deployment without serving it (for ``prefect.serve`` or inspection)."""
    return score_batch_flow.to_deployment(name=name, cron=cron, parameters=parameters)
