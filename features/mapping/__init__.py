"""Bring your own export: a YAML mapping turns CRM / marketing-automation files into a data directory.

A mapping (:class:`MappingConfig`, documented with a worked example in ``docs/mapping.md``) says which
export file holds the leads, which column is the lead id and the created time, which columns are
attributes (and how their values map), which columns are deliberately excluded and why, where
activities and stage changes come from, and, for exports that hold only a final outcome, how the label
is defined (``mode: single_snapshot``). :func:`import_export` applies it and writes a data directory
(``leads``/``activities``/``stage_history`` as Parquet plus ``contract.yaml``) that ``features``,
``train``, ``score`` and ``serve`` read like any other, validated with
:func:`features.validation.load_history`, with the usual quarantine report.

Accounting
----------
Every row of every source is accounted for: ``rows_read = rows_used + rows_skipped + rows_rejected``
per source (:class:`SourceReport`).

- **Rejected** rows have a problem only the mapping can describe in terms of the export (a stage,
  activity type, topic or outcome value the mapping does not map, an unparseable time or number, a
  duplicate lead id, a stage entry before the lead's own created time, a joined row with a missing or
  duplicate key). They are written with their original values, 1-based ``source_row`` and ``reason``
  to ``<out>/quarantine/source_<name>.csv``. A rejected lead takes the rows that refer to it with it.
- **Skipped** rows were left out by an explicit decision of the mapping: a value mapped to ``null``
  (no activity / no stage entry), a missing time where the rule says ``skip_if_time_missing``, a lookup
  row no lead refers to (``unmatched: skip``), or rows outside ``sample_rows``. Counted per reason.
- **Used** rows produced output. The written tables are then validated like any data directory:
  contract-level problems (missing ids, times in the future, events before their lead was created,
  duplicates) are quarantined by :func:`~features.validation.load_history` in
  ``<out>/quarantine/<table>.csv`` next to its ``report.json``.

Times are parsed here (ISO 8601 and the other forms :mod:`features.validation` accepts, or an explicit
``format``), read in the mapping's ``timezone`` when they carry no offset, and written as UTC.

The output directory is replaced as a whole: everything is written and validated in a temporary
sibling directory first, so a failed import leaves an earlier one untouched.
"""

from __future__ import annotations

from features.mapping.importer import import_export
from features.mapping.report import ImportSummary, RuleReport, SourceReport
from features.mapping.schema import (
    IMPORT_REPORT_FILE,
    MAPPING_VERSION,
    QUARANTINE_DIR,
    MappingConfig,
    MappingError,
    builtin_mappings,
    load_mapping,
    recommended_config,
    resolve_mapping,
    snake_name,
)

__all__ = [
    "IMPORT_REPORT_FILE",
    "MAPPING_VERSION",
    "QUARANTINE_DIR",
    "ImportSummary",
    "MappingConfig",
    "MappingError",
    "RuleReport",
    "SourceReport",
    "builtin_mappings",
    "import_export",
    "load_mapping",
    "recommended_config",
    "resolve_mapping",
    "snake_name",
]
