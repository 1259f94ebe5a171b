"""Flows and tasks over partitioned data directories (``leadscore generate/import --partitions N``).

The feature build, training and batch scoring of a partitioned data directory, in this process or on a
Dask cluster (``cluster``: ``tcp://HOST:PORT`` or ``local[:N]``; see :mod:`pipelines.dask_runner`).
Dask is imported only when a cluster is given. No ``from __future__ import annotations`` (see
:mod:`pipelines.flows`).
"""

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features import snapshots
from features.config import FeatureConfig
from features.partitioned import is_partitioned
from models.config import TrainConfig
from models.fit import training
from pipelines.flow_parts import BuildFeaturesSummary

#: Leads (whole partitions, a hash sample) loaded on one machine for the whole-history steps of training
#: on partitioned data: the effect estimates and, when the champion's feature settings differ, its features.
WHOLE_HISTORY_SAMPLE_LEADS = 200_000


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


@task(name="split_partitioned_snapshots", cache_policy=NO_CACHE)
def split_partitioned_snapshots(client: Any, features_dir: Path, config: TrainConfig) -> training.PreparedTraining:
    """The split of a partitioned feature table on a cluster; the training rows stay on the workers."""
    from models.fit.distributed import DaskFeaturePartitions

    recorded = config.stage.use_recorded_stage_column if config.stage.enabled else None
    partitions = DaskFeaturePartitions.open(client, features_dir, [recorded] if recorded else [])
    return training.prepare_partitioned_training(partitions, config)


@task(name="score_and_write_partitioned_batch", cache_policy=NO_CACHE)
def score_and_write_partitioned_batch(
    data_dir: Path,
    model: Any,
    model_info: Any,
    policy_path: Path | None,
    store_url: str,
    as_of: str | None,
    out: Path | None,
    cluster: str | None,
) -> Any:
    # Not retried either (see score_and_write_batch); the partition tasks on Dask have their own retries.
    from serving.partitioned_batch import score_partitioned_batch
    from serving.policy import load_policy
    from serving.stores import ScoreStore

    policy = load_policy(policy_path)
    when = snapshots.parse_as_of([as_of])[0] if as_of else None
    with ScoreStore(store_url) as store:
        if cluster is None:
            return score_partitioned_batch(data_dir, model, model_info, policy, store, as_of=when, out=out)
        from pipelines.dask_runner import DaskPartitionRunner, open_cluster

        with open_cluster(cluster) as client:
            runner = DaskPartitionRunner(client)
            return score_partitioned_batch(
                data_dir, model, model_info, policy, store, as_of=when, out=out, runner=runner
            )


# Re-exported for pipelines.flows and the CLI.
__all__ = [
    "WHOLE_HISTORY_SAMPLE_LEADS",
    "build_partitioned_features",
    "build_partitioned_features_flow",
    "is_partitioned",
    "score_and_write_partitioned_batch",
    "split_partitioned_snapshots",
]
