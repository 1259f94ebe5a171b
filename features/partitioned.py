"""Data directories partitioned by lead, and the point-in-time feature build over their partitions.

A **partitioned data directory** holds the same three contract tables as a plain one, split into
``n`` partitions by a stable hash of ``lead_id``, so every event of a lead sits in that lead's partition::

    DATA/
      contract.yaml
      partitions.json            {"format": 1, "n_partitions": n, "hash": "crc32-utf8", "rows": {...}}
      part-00000/leads.parquet, activities.parquet, stage_history.parquet
      part-00001/...
      (anything else the plain directory had: ground_truth/, quarantine/, import.json)

The partition of a lead is ``crc32(lead_id as UTF-8) mod n`` (:func:`partition_of`): the same on every
machine, Python version and run (unlike Python's salted ``hash()``), and computable in a warehouse
(most SQL engines have ``CRC32``). Within a partition rows keep their relative input order.

The **partitioned feature build** (:func:`build_partitioned_features`) validates and builds each partition
with the same functions the single-machine path uses (:func:`features.validation.load_history`,
:func:`features.build.build_features`). Every feature of a row depends only on that lead's events; the
two things that depend on the whole data set, the snapshot grid (earliest creation, end of the data) and
``observed_days`` (end of the data), are reduced over the partitions first. The rows are therefore
identical to the single-machine rows of the same data. One partition's memory is bounded by its leads.

Nothing here imports Dask: the work is a list of independent calls handed to a ``mapper`` (the builtin
``map`` by default; :mod:`features.distributed` gives one that runs them on a Dask cluster).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.build import build_features, feature_spec
from features.config import FeatureConfig
from features.contract import TABLES, Contract
from features.errors import ContractError
from features.history import ProspectHistory
from features.io import atomic_write_text, find_table
from features.quarantine import TableReport, ValidationReport, empty_table_warnings, write_quarantine
from features.snapshots import configured_snapshot_grid, parse_as_of
from features.spec import FeatureSpec, write_feature_table
from features.validation import load_history

PARTITIONS_FILE = "partitions.json"
PART_PREFIX = "part-"
HASH_NAME = "crc32-utf8"
LAYOUT_FORMAT = 1
#: Rows per Parquet batch read while partitioning (memory is bounded by this, not by the table).
_BATCH_ROWS = 1_000_000

T = TypeVar("T")
R = TypeVar("R")
Mapper = Callable[[Callable[[T], R], Sequence[T]], Iterable[R]]


def _builtin_map(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    return [fn(item) for item in items]


# -- the hash and the layout -------------------------------------------------------------------------------


def partition_of(lead_ids: Iterable[str] | pa.Array | pa.ChunkedArray, n_partitions: int) -> np.ndarray:
    """The partition (0 .. n-1) of each lead id: ``crc32(id as UTF-8) mod n`` (int64 array).

    Each distinct id is hashed once, so a table of events costs one hash per lead, not per row.
    """
    if n_partitions < 1:
        raise ValueError(f"n_partitions must be at least 1, got {n_partitions}")
    arr = lead_ids if isinstance(lead_ids, pa.Array | pa.ChunkedArray) else pa.array(list(lead_ids), pa.string())
    if arr.null_count:
        raise ValueError("lead_id is missing in a row; every row needs a lead_id to be partitioned")
    encoded = pc.dictionary_encode(arr)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    parts = np.fromiter(
        (zlib.crc32(value.encode("utf-8")) % n_partitions for value in encoded.dictionary.to_pylist()),
        dtype=np.int64,
        count=len(encoded.dictionary),
    )
    return parts[codes] if len(codes) else np.zeros(0, dtype=np.int64)


def part_name(index: int) -> str:
    return f"{PART_PREFIX}{index:05d}"


@dataclass(frozen=True)
class PartitionedLayout:
    """A partitioned data directory (see the module docstring)."""

    root: Path
    n_partitions: int
    rows: dict[str, list[int]] = field(default_factory=dict)

    def part_dir(self, index: int) -> Path:
        return self.root / part_name(index)

    @property
    def parts(self) -> list[Path]:
        return [self.part_dir(i) for i in range(self.n_partitions)]

    @classmethod
    def read(cls, root: str | Path) -> PartitionedLayout:
        """Read ``root/partitions.json``.

        Raises:
            ContractError: the directory is not partitioned, or the manifest is not one this version wrote.
        """
        root = Path(root)
        path = root / PARTITIONS_FILE
        if not path.is_file():
            raise ContractError(f"{root}: not a partitioned data directory (no {PARTITIONS_FILE})")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
            n = int(meta["n_partitions"])
            fmt, hash_name = meta["format"], meta["hash"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"{path}: unreadable partition manifest ({exc}); re-partition the data") from exc
        if fmt != LAYOUT_FORMAT or hash_name != HASH_NAME or n < 1:
            raise ContractError(
                f"{path}: partition format {fmt!r} / hash {hash_name!r} / n_partitions {n} is not what this "
                f"version reads (format {LAYOUT_FORMAT}, hash {HASH_NAME}); re-partition the data"
            )
        missing = [p.name for p in (root / part_name(i) for i in range(n)) if not p.is_dir()]
        if missing:
            raise ContractError(f"{root}: partition directories missing: {', '.join(missing[:5])}")
        return cls(root=root, n_partitions=n, rows={k: list(v) for k, v in meta.get("rows", {}).items()})


def is_partitioned(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` is a partitioned data directory (holds ``partitions.json``)."""
    return (Path(data_dir) / PARTITIONS_FILE).is_file()


def swap_in_dir(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by the complete directory ``tmp`` (two renames; the old one is removed after)."""
    backup = None
    if out_dir.exists():
        backup = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out_dir, backup)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if backup is not None:
            os.replace(backup, out_dir)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def _temp_sibling(path: Path, what: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{what}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    return tmp


# -- writing a partitioned data directory ------------------------------------------------------------------


def partition_data_dir(src_dir: str | Path, out_dir: str | Path, n_partitions: int) -> PartitionedLayout:
    """Split the plain Parquet data directory ``src_dir`` into ``n_partitions`` by lead, into ``out_dir``.

    Tables are streamed in batches of rows (memory bounded by a batch and the open writers, not by the
    table). Every other entry of ``src_dir`` (``contract.yaml``, ``ground_truth/``, ``quarantine/`` ...) is
    copied along. ``out_dir`` appears complete or not at all (written beside it, then renamed into place;
    an earlier directory there is replaced).

    Raises:
        ContractError: a table is missing or is CSV (partition the Parquet a ``leadscore import`` writes), or
            a row has no ``lead_id``.
        ValueError: ``n_partitions`` < 1 or ``out_dir`` is ``src_dir``.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if n_partitions < 1:
        raise ValueError(f"--partitions must be at least 1, got {n_partitions}")
    if src_dir.resolve() == out_dir.resolve():
        raise ValueError(f"{out_dir}: partition into another directory than the source")
    paths = {table: find_table(src_dir, table) for table in TABLES}
    csv = [p.name for p in paths.values() if p.suffix != ".parquet"]
    if csv:
        raise ContractError(
            f"{src_dir}: {', '.join(csv)} are CSV; partitioned data directories hold Parquet "
            "(write the data with --format parquet, or import it with leadscore import, then partition)"
        )
    tmp = _temp_sibling(out_dir, "partition")
    rows: dict[str, list[int]] = {}
    try:
        for table, path in paths.items():
            rows[table] = _partition_table(path, tmp, table, n_partitions)
        for entry in src_dir.iterdir():
            if entry.name in {p.name for p in paths.values()} or entry.name.startswith("."):
                continue
            target = tmp / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)
        manifest = {"format": LAYOUT_FORMAT, "n_partitions": n_partitions, "hash": HASH_NAME, "rows": rows}
        atomic_write_text(tmp / PARTITIONS_FILE, json.dumps(manifest, indent=2) + "\n")
        swap_in_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PartitionedLayout(root=out_dir, n_partitions=n_partitions, rows=rows)


def _partition_table(path: Path, out_root: Path, table: str, n: int) -> list[int]:
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    if "lead_id" not in schema.names:
        raise ContractError(f"{path}: no lead_id column; cannot partition by lead")
    writers: list[pq.ParquetWriter] = []
    counts = [0] * n
    try:
        for i in range(n):
            part = out_root / part_name(i)
            part.mkdir(exist_ok=True)
            writers.append(pq.ParquetWriter(part / f"{table}.parquet", schema, compression="zstd"))
        for batch in source.iter_batches(batch_size=_BATCH_ROWS):
            chunk = pa.Table.from_batches([batch], schema=schema)
            ids = chunk.column("lead_id")
            if ids.null_count:
                raise ContractError(f"{path}: lead_id is missing in a row; every row needs a lead_id")
            parts = partition_of(ids, n)
            for i in np.unique(parts):
                # A boolean filter keeps the rows' relative order inside the partition.
                piece = chunk.filter(pa.array(parts == i))
                writers[int(i)].write_table(piece)
                counts[int(i)] += piece.num_rows
    finally:
        for writer in writers:
            writer.close()
    return counts


# -- the partitioned feature build -------------------------------------------------------------------------


@dataclass(frozen=True)
class PartitionStats:
    """What validating one partition found: its instants (for the global grid) and its report."""

    index: int
    n_leads: int
    first_created: pd.Timestamp | None
    data_end: pd.Timestamp | None
    report: ValidationReport
    quarantine_files: dict[str, Path]


@dataclass(frozen=True)
class PartitionFeatures:
    """One partition's feature file (``None`` when the partition holds no open lead at any as-of date)."""

    index: int
    path: Path | None
    rows: int
    positives: int


@dataclass(frozen=True)
class PartitionedFeaturesSummary:
    """What :func:`build_partitioned_features` wrote."""

    out: Path
    n_partitions: int
    rows: int
    positives: int
    dates: pd.DatetimeIndex
    spec: FeatureSpec
    validation: ValidationReport
    quarantine_dir: Path
    seconds: dict[str, float]
    parts: list[PartitionFeatures]


def validate_partition(
    index: int, part_dir: Path, contract: Contract, now: pd.Timestamp, quarantine_dir: Path | None
) -> PartitionStats:
    """Validate one partition (quarantine under ``quarantine_dir/part-NNNNN``) and return its instants."""
    result = load_history(part_dir, contract, now=now)
    files: dict[str, Path] = {}
    if quarantine_dir is not None:
        files = write_quarantine(result, quarantine_dir / part_name(index))
    history = result.history
    if len(history.leads) == 0:
        return PartitionStats(index, 0, None, None, result.report, files)
    return PartitionStats(
        index=index,
        n_leads=len(history.leads),
        first_created=pd.Timestamp(history.leads["created_at"].min()),
        data_end=pd.Timestamp(history.span[1]),
        report=result.report,
        quarantine_files=files,
    )


def build_partition(
    index: int,
    part_dir: Path,
    contract: Contract,
    now: pd.Timestamp,
    dates: pd.DatetimeIndex,
    config: FeatureConfig,
    data_end: pd.Timestamp,
    out_dir: Path,
) -> PartitionFeatures:
    """Validate one partition again and build its features with :func:`features.build.build_features`.

    Writes ``out_dir/part-NNNNN.parquet`` atomically; running it twice (a retry after a lost worker) gives
    the same file. The history is validated again here rather than shipped between the two phases, so a
    partition's data is only ever in one worker's memory, for one task.
    """
    result = load_history(part_dir, contract, now=now)
    if len(result.history.leads) == 0:
        return PartitionFeatures(index, None, 0, 0)
    frame, spec = build_features(result.history, dates, config, data_end=data_end)
    if len(frame) == 0:
        return PartitionFeatures(index, None, 0, 0)
    path = write_feature_table(frame, spec, out_dir / f"{part_name(index)}.parquet")
    return PartitionFeatures(index, path, len(frame), int(frame["converted"].sum()))


def merge_reports(
    data_dir: Path, contract: Contract, now: pd.Timestamp, reports: Sequence[ValidationReport]
) -> ValidationReport:
    """One validation report for the whole partitioned directory (counts and reasons summed per table)."""
    tables: dict[str, TableReport] = {}
    for table in TABLES:
        parts = [r.tables[table] for r in reports if table in r.tables]
        reasons: dict[str, int] = {}
        for part in parts:
            for kind, count in part.reasons.items():
                reasons[kind] = reasons.get(kind, 0) + count
        tables[table] = TableReport(
            table=table,
            path=data_dir / table,
            rows_read=sum(p.rows_read for p in parts),
            rows_accepted=sum(p.rows_accepted for p in parts),
            rows_quarantined=sum(p.rows_quarantined for p in parts),
            reasons=reasons,
            seconds=sum(p.seconds for p in parts),
        )
    return ValidationReport(
        data_dir=data_dir,
        contract_name=contract.name,
        timezone=contract.timezone,
        now=now,
        tables=tables,
        warnings=empty_table_warnings(tables, contract.mode),
    )


def build_partitioned_features(
    data_dir: str | Path,
    out_dir: str | Path,
    config: FeatureConfig | None = None,
    as_of: Sequence[str] | None = None,
    *,
    quarantine_dir: str | Path | None = None,
    now: pd.Timestamp | None = None,
    mapper: Mapper[Any, Any] | None = None,
) -> PartitionedFeaturesSummary:
    """Point-in-time features of a partitioned data directory, as partitioned Parquet in ``out_dir``.

    Two passes over the partitions, each a list of independent calls given to ``mapper``: validate every
    partition (and quarantine its rejected rows) to reduce the earliest creation and the end of the data;
    then build every partition's features on the snapshot grid of the whole data set. ``out_dir`` ends up
    holding ``part-NNNNN.parquet`` files (each a feature table with its spec, rows sorted by ``as_of`` then
    ``lead_id``) and appears complete or not at all.

    Args:
        data_dir: a partitioned data directory (:func:`partition_data_dir`).
        out_dir: directory to write (replaced as a whole).
        config: feature config; ``as_of`` explicit snapshot dates instead of the configured grid.
        quarantine_dir: where rejected rows go (default ``<out_dir>.quarantine``), one subdirectory a partition.
        now: validation's "now" for every partition (default: the current time, fixed once for all).
        mapper: runs a function over a list (default: the builtin map in this process); it must return the
            results in order. :func:`features.distributed.dask_mapper` runs the calls on a Dask cluster.
    """
    config = config or FeatureConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    layout = PartitionedLayout.read(data_dir)
    contract = Contract.load(data_dir)
    if contract.mode == "single_snapshot":
        raise ValueError(
            f"{data_dir} is a single-snapshot data set: build its features without partitions "
            "(it has no history to replay, one row per lead)"
        )
    run = mapper or _builtin_map
    now_ts = pd.Timestamp.now(tz="UTC").floor("s") if now is None else pd.Timestamp(now)
    quarantine = Path(quarantine_dir) if quarantine_dir is not None else out_dir.with_name(f"{out_dir.name}.quarantine")
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    stats: list[PartitionStats] = list(run(_ValidateCall(contract, now_ts, quarantine), list(enumerate(layout.parts))))
    seconds["validate"] = time.perf_counter() - started
    report = merge_reports(data_dir, contract, now_ts, [s.report for s in stats])
    report.check()
    filled = [s for s in stats if s.n_leads]
    if not filled:
        raise ValueError(f"{data_dir}: no valid lead in any partition; see {quarantine}")
    first_created = min(s.first_created for s in filled if s.first_created is not None)
    data_end = max(s.data_end for s in filled if s.data_end is not None)
    dates = (
        parse_as_of(as_of, contract.timezone) if as_of else configured_snapshot_grid(first_created, data_end, config)
    )

    started = time.perf_counter()
    tmp = _temp_sibling(out_dir, "features")
    try:
        parts: list[PartitionFeatures] = list(
            run(
                _BuildCall(contract, now_ts, dates, config, data_end, tmp),
                [(s.index, layout.part_dir(s.index)) for s in filled],
            )
        )
        # Paths as they will be once the directory is renamed into place.
        parts = [
            PartitionFeatures(p.index, None if p.path is None else out_dir / p.path.name, p.rows, p.positives)
            for p in parts
        ]
        swap_in_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds["build"] = time.perf_counter() - started
    return PartitionedFeaturesSummary(
        out=out_dir,
        n_partitions=layout.n_partitions,
        rows=sum(p.rows for p in parts),
        positives=sum(p.positives for p in parts),
        dates=dates,
        spec=feature_spec(contract, config),
        validation=report,
        quarantine_dir=quarantine,
        seconds=seconds,
        parts=parts,
    )


@dataclass(frozen=True)
class _ValidateCall:
    """A picklable call (shipped to Dask workers as is) of :func:`validate_partition`."""

    contract: Contract
    now: pd.Timestamp
    quarantine_dir: Path | None

    def __call__(self, item: tuple[int, Path]) -> PartitionStats:
        return validate_partition(item[0], item[1], self.contract, self.now, self.quarantine_dir)


@dataclass(frozen=True)
class _BuildCall:
    """A picklable call of :func:`build_partition`."""

    contract: Contract
    now: pd.Timestamp
    dates: pd.DatetimeIndex
    config: FeatureConfig
    data_end: pd.Timestamp
    out_dir: Path

    def __call__(self, item: tuple[int, Path]) -> PartitionFeatures:
        return build_partition(
            item[0], item[1], self.contract, self.now, self.dates, self.config, self.data_end, self.out_dir
        )


# -- reading partitioned feature tables --------------------------------------------------------------------


def load_partitioned_history(
    data_dir: str | Path, *, max_leads: int | None = None, now: pd.Timestamp | None = None
) -> ProspectHistory:
    """The validated history of the first partitions of ``data_dir`` holding at least ``max_leads`` leads (all).

    Leads are assigned to partitions by a hash of their id, so the first partitions are a random sample of
    the leads, each with its whole history: what a whole-history step (the effect estimates, rebuilding
    the champion's features) can use when the whole data set does not fit one machine. Rejected rows
    are dropped here (the feature build has already quarantined them).
    """
    data_dir = Path(data_dir)
    layout = PartitionedLayout.read(data_dir)
    contract = Contract.load(data_dir)
    now_ts = pd.Timestamp.now(tz="UTC").floor("s") if now is None else pd.Timestamp(now)
    tables: dict[str, list[pd.DataFrame]] = {"leads": [], "activities": [], "stage_history": []}
    n_leads = 0
    for part_dir in layout.parts:
        history = load_history(part_dir, contract, now=now_ts).history
        for name, frames in tables.items():
            frames.append(getattr(history, name))
        n_leads += len(history.leads)
        if max_leads is not None and n_leads >= max_leads:
            break
    return ProspectHistory(
        contract=contract, **{name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    )


def load_any_history(data_dir: str | Path, *, max_leads: int | None = None) -> ProspectHistory:
    """The validated history of a plain or a partitioned data directory, on this machine.

    Of partitioned data, the first partitions holding at least ``max_leads`` leads (all by default; see
    :func:`load_partitioned_history`); a plain directory is read whole.
    """
    if is_partitioned(data_dir):
        return load_partitioned_history(data_dir, max_leads=max_leads)
    return load_history(data_dir).history


def feature_parts(features_dir: str | Path) -> list[Path]:
    """The ``part-NNNNN.parquet`` files of a partitioned feature table, in partition order."""
    features_dir = Path(features_dir)
    if not features_dir.is_dir():
        raise FileNotFoundError(f"{features_dir}: partitioned feature table does not exist")
    return sorted(features_dir.glob(f"{PART_PREFIX}*.parquet"))


def read_partitioned_features(features_dir: str | Path) -> tuple[pd.DataFrame, FeatureSpec]:
    """The whole partitioned feature table in one frame, sorted by (``as_of``, ``lead_id``) as a single build is."""
    from features.spec import read_feature_table

    parts = feature_parts(features_dir)
    if not parts:
        raise ValueError(f"{features_dir}: no feature partition ({PART_PREFIX}*.parquet) in it")
    frames, specs = zip(*(read_feature_table(p) for p in parts), strict=True)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame.sort_values(["as_of", "lead_id"], ignore_index=True, kind="stable")
    return frame, specs[0]


__all__ = [
    "HASH_NAME",
    "PARTITIONS_FILE",
    "PartitionFeatures",
    "PartitionStats",
    "PartitionedFeaturesSummary",
    "PartitionedLayout",
    "build_partition",
    "build_partitioned_features",
    "feature_parts",
    "is_partitioned",
    "load_any_history",
    "load_partitioned_history",
    "merge_reports",
    "partition_data_dir",
    "partition_of",
    "read_partitioned_features",
    "swap_in_dir",
    "validate_partition",
]
