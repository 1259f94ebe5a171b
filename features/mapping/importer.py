"""The import command's I/O: checks on the output directory, the atomic swap, and :func:`import_export`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from features.contract import (
    CONTRACT_FILE,
)
from features.io import atomic_write_text, write_table
from features.mapping.report import ImportSummary
from features.mapping.rules import build_tables
from features.mapping.schema import (
    IMPORT_REPORT_FILE,
    QUARANTINE_DIR,
    MappingError,
    builtin_mappings,
    load_mapping,
    resolve_mapping,
)
from features.mapping.sources import Source, read_source
from features.quarantine import ValidationReport, ValidationResult, write_quarantine
from features.validation import load_history

if TYPE_CHECKING:
    pass


logger = logging.getLogger(__name__)


def _check_out_dir(out_dir: Path, sources: Iterable[Source], source_dir: Path) -> None:
    resolved = out_dir.resolve()
    for source in sources:
        if resolved == source.path.resolve().parent or resolved in source.path.resolve().parents:
            raise MappingError(
                f"{out_dir}: the output directory holds the export file {source.path}; write the data directory "
                "elsewhere (it is replaced as a whole)"
            )
    if resolved == source_dir.resolve():
        raise MappingError(f"{out_dir}: the output directory is the source directory; choose another one")
    if out_dir.exists():
        if not out_dir.is_dir():
            raise MappingError(f"{out_dir}: exists and is not a directory")
        entries = [p.name for p in out_dir.iterdir()]
        if entries and CONTRACT_FILE not in entries:
            raise MappingError(
                f"{out_dir}: exists, is not empty and is not a leadscore data directory (no {CONTRACT_FILE}); "
                "refusing to replace it"
            )


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp`` (two renames in the same parent; the old one is removed afterwards)."""
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


def _relocate(report: ValidationReport, out_dir: Path) -> ValidationReport:
    tables = {name: replace(t, path=out_dir / t.path.name) for name, t in report.tables.items()}
    return replace(report, data_dir=out_dir, tables=tables)


def import_export(
    mapping_path: str | Path,
    source_dir: str | Path | None,
    out_dir: str | Path,
    *,
    now: pd.Timestamp | None = None,
    sample_rows: int | None = None,
) -> ImportSummary:
    """Apply a mapping to an export and write a validated data directory.

    Args:
        mapping_path: the mapping YAML, or the name of a shipped mapping (:func:`builtin_mappings`).
        source_dir: directory relative source paths are read from (default: the mapping file's directory).
        out_dir: the data directory to write; replaced as a whole if it is an earlier data directory, refused
            if it is another non-empty directory.
        now: validation's "now" (times after it are quarantined as in the future); default the current time.
        sample_rows: read only the first rows of the lead source (rows of other sources that refer to leads
            outside the sample are skipped, not rejected): for previews and tests.

    Returns:
        The :class:`ImportSummary` (also written to ``<out_dir>/import.json``). The data directory holds
        ``leads.parquet``, ``activities.parquet``, ``stage_history.parquet``, ``contract.yaml`` and
        ``quarantine/`` (validation's ``<table>.csv`` and ``report.json``, the mapping's ``source_<name>.csv``).

    Raises:
        MappingError: the mapping is invalid or does not fit the export (names the file and field).
        ContractError: the written tables break the contract as a whole (a bug: the importer writes them).
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    mapping_file = resolve_mapping(mapping_path)
    mapping = load_mapping(mapping_file)
    if source_dir is None and builtin_mappings().get(mapping_file.stem) == mapping_file:
        raise MappingError(
            f"{mapping_file.name} is a shipped mapping: give the directory holding its export files (--source)"
        )
    base = Path(source_dir) if source_dir is not None else mapping_file.parent
    if not base.is_dir():
        raise MappingError(f"{base}: source directory does not exist")
    if sample_rows is not None and sample_rows <= 0:
        raise ValueError(f"sample_rows must be positive, got {sample_rows}")
    out_dir = Path(out_dir)

    t = time.perf_counter()
    sources = {
        name: read_source(
            name,
            config,
            base,
            mapping_file,
            mapping.missing_values,
            sample_rows if name == mapping.leads.source else None,
        )
        for name, config in mapping.sources.items()
    }
    timings["read"] = time.perf_counter() - t
    _check_out_dir(out_dir, sources.values(), base)

    t = time.perf_counter()
    built = build_tables(mapping, mapping_file, sources, sample_rows)
    timings["map"] = time.perf_counter() - t

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.import-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        t = time.perf_counter()
        for table, frame in built.tables.items():
            write_table(frame, tmp / f"{table}.parquet")
        built.contract.dump(tmp / CONTRACT_FILE)
        timings["write"] = time.perf_counter() - t

        t = time.perf_counter()
        result = load_history(tmp, built.contract, now=now)
        timings["validate"] = time.perf_counter() - t
        report = _relocate(result.report, out_dir)
        quarantine_dir = tmp / QUARANTINE_DIR
        write_quarantine(ValidationResult(result.history, result.quarantine, report), quarantine_dir)
        files: dict[str, Path] = {
            table: out_dir / QUARANTINE_DIR / f"{table}.csv" for table, frame in result.quarantine.items() if len(frame)
        }
        files["report"] = out_dir / QUARANTINE_DIR / "report.json"
        for name, frame in built.rejects.items():
            if len(frame):
                write_table(frame, quarantine_dir / f"source_{name}.csv")
                files[f"source_{name}"] = out_dir / QUARANTINE_DIR / f"source_{name}.csv"
        summary = ImportSummary(
            mapping=mapping_file,
            source_dir=base,
            out_dir=out_dir,
            name=mapping.name,
            mode=mapping.mode,
            sources=built.sources,
            rules=built.rules,
            tables_written={table: len(frame) for table, frame in built.tables.items()},
            validation=report,
            quarantine_files=files,
            sample_rows=sample_rows,
            seconds=time.perf_counter() - started,
            timings=timings,
        )
        atomic_write_text(tmp / IMPORT_REPORT_FILE, json.dumps(summary.to_dict(), indent=2) + "\n")
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for source in summary.sources.values():
        log = logger.warning if source.rows_rejected else logger.info
        log(
            "%s: read %d, used %d, skipped %d, rejected %d %s",
            source.path,
            source.rows_read,
            source.rows_used,
            source.rows_skipped,
            source.rows_rejected,
            source.rejected or "",
        )
    return summary
