"""The partitioned feature build on a LocalCluster of 2 worker processes, and Dask staying out otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.partitioned import build_partitioned_features, partition_data_dir, read_partitioned_features
from features.simulator import SimulatorConfig, generate
from features.snapshots import configured_snapshot_dates
from features.validation import load_history
from pipelines.dask_runner import parse_cluster

NOW = pd.Timestamp("2026-06-01T00:00:00Z")
CONFIG = FeatureConfig(snapshot_every_days=14)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dask")
    generate(1200, 5, root / "plain", config=SimulatorConfig(chunk_size=400, days=400))
    partition_data_dir(root / "plain", root / "parts", 4)
    return root / "plain", root / "parts"


@pytest.fixture(scope="module")
def client():
    from pipelines.dask_runner import open_cluster

    with open_cluster("local:2") as c:
        yield c


def expected(plain: Path) -> pd.DataFrame:
    history = load_history(plain, now=NOW).history
    frame, _ = build_features(history, configured_snapshot_dates(history, CONFIG), CONFIG)
    return frame


def test_parse_cluster_accepts_tcp_and_local_only():
    assert parse_cluster("tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    assert parse_cluster("local").local_workers == 2
    assert parse_cluster("local:3").local_workers == 3
    for bad in ("127.0.0.1:8786", "local:0", "local:x", "http://x"):
        with pytest.raises(ValueError, match="cluster"):
            parse_cluster(bad)


@pytest.mark.slow
def test_features_on_two_workers_equal_the_single_machine_features(data, client, tmp_path: Path):
    from features.distributed import dask_mapper

    plain, parts = data
    assert len(client.scheduler_info()["workers"]) == 2
    build_partitioned_features(parts, tmp_path / "f", CONFIG, now=NOW, mapper=dask_mapper(client))
    frame, _ = read_partitioned_features(tmp_path / "f")
    pd.testing.assert_frame_equal(frame, expected(plain))


@pytest.mark.slow
def test_a_worker_killed_during_the_build_is_retried_and_the_result_is_identical(data, client, tmp_path: Path):
    from features.distributed import dask_mapper

    plain, parts = data
    marker = tmp_path / "killed-once"
    run = dask_mapper(client)

    def killing_mapper(fn, items):
        def call(item):
            # The first partition task to run kills its worker process outright (no exception, no cleanup).
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL)
            except FileExistsError:
                return fn(item)
            os.close(fd)
            os._exit(1)

        call.__name__ = getattr(fn, "__name__", type(fn).__name__)
        return run(call, items)

    build_partitioned_features(parts, tmp_path / "f", CONFIG, now=NOW, mapper=killing_mapper)
    assert marker.exists()
    frame, _ = read_partitioned_features(tmp_path / "f")
    pd.testing.assert_frame_equal(frame, expected(plain))


def test_without_cluster_neither_the_cli_nor_features_import_dask(data, tmp_path: Path, prefect_harness: None):
    from prefect.settings import PREFECT_API_URL

    _, parts = data
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from pipelines.cli import app\n"
        f"r = CliRunner().invoke(app, ['features', '--data', {str(parts)!r}, '--out', {str(tmp_path / 'f')!r}])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed', 'prefect_dask')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LEADSCORE_DASK_ADDRESS"}
    # the session's Prefect API: the child does not start a temporary server of its own (~20 s)
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "f" / "part-00000.parquet").exists()
