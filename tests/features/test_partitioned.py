"""Partitioned data directories and the partitioned feature build (in-process; the Dask runs are in
tests/pipelines/test_dask_runner.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.build import build_features
from features.config import FeatureConfig
from features.errors import ContractError
from features.partitioned import (
    PARTITIONS_FILE,
    PartitionedLayout,
    build_partitioned_features,
    is_partitioned,
    partition_data_dir,
    partition_of,
    read_partitioned_features,
)
from features.simulator import SimulatorConfig, generate
from features.snapshots import configured_snapshot_dates, parse_as_of
from features.validation import load_history

NOW = pd.Timestamp("2026-06-01T00:00:00Z")
CONFIG = FeatureConfig(snapshot_every_days=14)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "data"
    generate(1500, 11, out, config=SimulatorConfig(chunk_size=500, days=400))
    return out


@pytest.fixture(scope="module")
def parted(plain: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parted") / "data"
    partition_data_dir(plain, out, 4)
    return out


def single_machine(data: Path, as_of: list[str] | None = None) -> pd.DataFrame:
    history = load_history(data, now=NOW).history
    dates = parse_as_of(as_of) if as_of else configured_snapshot_dates(history, CONFIG)
    frame, _ = build_features(history, dates, CONFIG)
    return frame


def test_partition_of_is_crc32_mod_n_and_independent_of_the_python_hash_seed():
    ids = ["L0000001", "L0000002", "lead-é", "L0000001"]
    parts = partition_of(ids, 7)
    assert parts[0] == parts[3]
    code = (
        "from features.partitioned import partition_of; "
        "print(partition_of(['L0000001', 'L0000002', 'lead-é'], 7).tolist())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str([int(p) for p in parts[:3]])}
    import zlib

    assert [int(p) for p in parts[:3]] == [zlib.crc32(i.encode()) % 7 for i in ids[:3]]


def test_partition_of_rejects_missing_ids_and_bad_counts():
    with pytest.raises(ValueError, match="missing"):
        partition_of(pa.array(["L1", None]), 3)
    with pytest.raises(ValueError, match="at least 1"):
        partition_of(["L1"], 0)


def test_every_event_lands_with_its_lead_in_input_order(plain: Path, parted: Path):
    layout = PartitionedLayout.read(parted)
    assert is_partitioned(parted) and not is_partitioned(plain)
    assert layout.n_partitions == 4
    assert (parted / "contract.yaml").is_file() and (parted / "ground_truth").is_dir()
    for table in ("leads", "activities", "stage_history"):
        whole = pq.read_table(plain / f"{table}.parquet").to_pandas()
        pieces = [pq.read_table(p / f"{table}.parquet").to_pandas() for p in layout.parts]
        assert sum(len(p) for p in pieces) == len(whole) == sum(layout.rows[table])
        for i, piece in enumerate(pieces):
            assert set(partition_of(piece["lead_id"].tolist(), 4)) <= {i}
            # Relative order kept: the piece is the whole table filtered to its leads.
            expected = whole[partition_of(whole["lead_id"].tolist(), 4) == i].reset_index(drop=True)
            pd.testing.assert_frame_equal(piece, expected)


def test_partitioned_features_equal_the_single_machine_features(plain: Path, parted: Path, tmp_path: Path):
    summary = build_partitioned_features(parted, tmp_path / "features", CONFIG, now=NOW)
    frame, spec = read_partitioned_features(tmp_path / "features")
    expected = single_machine(plain)
    assert len(expected) > 10_000
    pd.testing.assert_frame_equal(frame, expected)
    assert summary.rows == len(expected)
    assert summary.positives == int(expected["converted"].sum())
    assert list(summary.dates) == sorted(expected["as_of"].unique())
    assert spec.features == [c for c in expected.columns if c not in ("lead_id", "as_of", *spec_labels())]
    assert summary.validation.rows_read == load_history(plain, now=NOW).report.rows_read


def spec_labels() -> tuple[str, ...]:
    from features.spec import LABEL_COLUMNS

    return LABEL_COLUMNS


def test_explicit_as_of_dates_give_the_same_rows(plain: Path, parted: Path, tmp_path: Path):
    dates = ["2025-09-01", "2025-12-01T12:00:00"]
    build_partitioned_features(parted, tmp_path / "f", CONFIG, as_of=dates, now=NOW)
    frame, _ = read_partitioned_features(tmp_path / "f")
    pd.testing.assert_frame_equal(frame, single_machine(plain, dates))


def test_rejected_rows_are_quarantined_per_partition_and_counted_once(plain: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for entry in plain.iterdir():
        if entry.is_file():
            (bad / entry.name).write_bytes(entry.read_bytes())
    acts = pq.read_table(plain / "activities.parquet").to_pandas()
    acts.loc[3, "activity_type"] = "carrier_pigeon"
    acts.loc[10, "occurred_at"] = pd.Timestamp("2030-01-01T00:00:00Z")
    pq.write_table(pa.Table.from_pandas(acts, preserve_index=False), bad / "activities.parquet")
    partition_data_dir(bad, tmp_path / "bad_parts", 3)
    summary = build_partitioned_features(tmp_path / "bad_parts", tmp_path / "f", CONFIG, now=NOW)
    single = load_history(bad, now=NOW).report
    assert summary.validation.rows_quarantined == single.rows_quarantined == 2
    assert summary.validation.tables["activities"].reasons == single.tables["activities"].reasons
    files = list(summary.quarantine_dir.glob("part-*/activities.csv"))
    assert sum(len(pd.read_csv(f)) for f in files) == 2
    frame, _ = read_partitioned_features(tmp_path / "f")
    history = load_history(bad, now=NOW).history
    expected, _ = build_features(history, configured_snapshot_dates(history, CONFIG), CONFIG)
    pd.testing.assert_frame_equal(frame, expected)


def test_a_failed_partitioning_leaves_the_previous_directory(parted: Path, plain: Path, tmp_path: Path):
    out = tmp_path / "out"
    partition_data_dir(plain, out, 2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "leads.parquet").write_bytes((plain / "leads.parquet").read_bytes())
    (broken / "stage_history.parquet").write_bytes((plain / "stage_history.parquet").read_bytes())
    (broken / "activities.parquet").write_bytes(b"not parquet")
    with pytest.raises(Exception, match=r"(?i)parquet"):
        partition_data_dir(broken, out, 3)
    assert PartitionedLayout.read(out).n_partitions == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_csv_and_plain_directories_get_clear_errors(plain: Path, tmp_path: Path):
    csv = tmp_path / "csv"
    generate(100, 1, csv, config=SimulatorConfig(chunk_size=100, days=60), fmt="csv")
    with pytest.raises(ContractError, match="CSV"):
        partition_data_dir(csv, tmp_path / "p", 2)
    with pytest.raises(ContractError, match=PARTITIONS_FILE):
        build_partitioned_features(plain, tmp_path / "f", CONFIG, now=NOW)
    with pytest.raises(ValueError, match="another directory"):
        partition_data_dir(plain, plain, 2)
