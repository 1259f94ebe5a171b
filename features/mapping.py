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

import csv
import itertools
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.contract import (
    CONTRACT_FILE,
    REQUIRED_COLUMNS,
    AttributeSpec,
    Contract,
    ExcludedColumn,
    StageSpec,
    format_validation_error,
)
from features.io import atomic_write_text, write_table
from features.validation import (
    STR_DTYPE,
    TIME_UNIT,
    ValidationReport,
    ValidationResult,
    _as_str,
    _localize,
    _parse_time_text,
    _RowProblems,
    _show,
    load_history,
    write_quarantine,
)
from features.yamlfile import read_yaml_mapping

if TYPE_CHECKING:
    from rich.table import Table

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

logger = logging.getLogger(__name__)

MAPPING_VERSION = 1
IMPORT_REPORT_FILE = "import.json"
QUARANTINE_DIR = "quarantine"
#: Stage names written in single-snapshot mode: open (no outcome), converted, not converted.
SINGLE_SNAPSHOT_STAGES = StageSpec(order=["open", "won", "lost"], converted="won", closed_negative=["lost"])
_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
_NUMERIC_NA = ("nan", "na", "n/a", "null", "none")
_BUILTIN_PACKAGE = "features.mappings"


class MappingError(ValueError):
    """A mapping file is invalid or does not fit the export (the message names the file and field)."""


# ============================================================================================
# The mapping file
# ============================================================================================
def _text_value(value: Any, where: str) -> str | None:
    """A value of a value map or list as the text it must equal in the export.

    YAML turns unquoted ``yes``/``no``/``on``/``off``/``true`` into booleans and ``0.10`` into 0.1,
    which would never match the export's text; those must be quoted.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(
            f"{where} {value!r}: YAML read an unquoted yes/no/on/off/true/false as a boolean; quote it (e.g. 'yes')"
        )
    if isinstance(value, float):
        raise ValueError(f"{where} {value!r}: quote numbers with a decimal point so they match the export text")
    if isinstance(value, int | str):
        return str(value)
    raise ValueError(f"{where} {value!r}: expected text")


def _value_map(raw: Any) -> dict[str, str | None]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError("expected a mapping of export value -> value (null = missing / none)")
    out: dict[str, str | None] = {}
    for key, value in raw.items():
        text_key = _text_value(key, "key")
        if text_key is None:
            raise ValueError("a key of a value map cannot be null (missing values are already missing)")
        out[text_key] = _text_value(value, f"value of {text_key!r}")
    return out


def _text_list(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("expected a list of values")
    out = []
    for item in raw:
        text = _text_value(item, "value")
        if text is None:
            raise ValueError("null is not allowed here")
        out.append(text)
    return out


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceConfig(_Strict):
    """One export file. Relative paths are read from the source directory (``--source``)."""

    path: str = Field(min_length=1)
    format: Literal["csv", "parquet"] | None = Field(default=None, description="default: from the file suffix")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quotechar: str = Field(default='"', min_length=1, max_length=1)
    encoding: str = "utf-8"
    replace: dict[str, dict[str, str | None]] = Field(
        default_factory=dict,
        description="column -> {export value: replacement}; applied when reading, before joins (null = missing)",
    )

    @field_validator("replace", mode="before")
    @classmethod
    def _replace_maps(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        return {column: _value_map(table) for column, table in raw.items()}


class TimeConfig(_Strict):
    """A time: a column (optionally with a ``strptime`` format) or a fixed instant for exports without one."""

    column: str | None = None
    source: str | None = None
    format: str | None = Field(default=None, description="strptime format, e.g. '%d/%m/%Y %H:%M'")
    fixed: str | None = Field(default=None, description="one instant for every row, e.g. '2020-01-01T00:00:00Z'")

    @model_validator(mode="after")
    def _one_kind(self) -> TimeConfig:
        if (self.column is None) == (self.fixed is None):
            raise ValueError("give exactly one of column (a time column of the export) or fixed (one instant)")
        if self.fixed is not None and (self.format is not None or self.source is not None):
            raise ValueError("format and source apply to a column, not to a fixed time")
        if self.fixed is not None:
            try:
                stamp = pd.Timestamp(self.fixed)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"fixed time {self.fixed!r} is not an ISO 8601 time") from exc
            if stamp is pd.NaT:
                raise ValueError(f"fixed time {self.fixed!r} is not an ISO 8601 time")
        return self


def _time(raw: Any) -> Any:
    return {"column": raw} if isinstance(raw, str) else raw


class IdConfig(_Strict):
    """The lead id: a column, or the 1-based data row number (with a prefix) for exports without ids."""

    column: str | None = None
    row_number: bool = False
    prefix: str = ""

    @model_validator(mode="after")
    def _one_kind(self) -> IdConfig:
        if (self.column is None) == (not self.row_number):
            raise ValueError("give either column (the id column) or row_number: true")
        if self.prefix and not self.row_number:
            raise ValueError("prefix applies to row_number ids only")
        return self


class LeadsConfig(_Strict):
    """Which source holds one row per lead, its id and its created time."""

    source: str
    id: IdConfig
    created_at: TimeConfig

    @field_validator("id", mode="before")
    @classmethod
    def _id(cls, raw: Any) -> Any:
        return {"column": raw} if isinstance(raw, str) else raw

    @field_validator("created_at", mode="before")
    @classmethod
    def _created(cls, raw: Any) -> Any:
        return _time(raw)


class JoinConfig(_Strict):
    """A left join of another source onto the leads: at most one row of it per key."""

    source: str
    key: str | None = Field(default=None, description="the key column, named the same in both sources")
    left_on: str | None = None
    right_on: str | None = None
    unmatched: Literal["reject", "skip"] = Field(
        default="reject",
        description="rows of the joined source no lead refers to: reject (quarantine) or skip (lookup tables)",
    )

    @model_validator(mode="after")
    def _keys(self) -> JoinConfig:
        if self.key is not None and (self.left_on is not None or self.right_on is not None):
            raise ValueError("give either key, or left_on and right_on")
        if self.key is None and (self.left_on is None or self.right_on is None):
            raise ValueError("give key (same column name on both sides) or both left_on and right_on")
        return self

    @property
    def left_key(self) -> str:
        return self.key if self.key is not None else str(self.left_on)

    @property
    def right_key(self) -> str:
        return self.key if self.key is not None else str(self.right_on)


class BinsConfig(_Strict):
    """Bin a numeric column into categories: ``[-inf, e0), [e0, e1), ..., [en, inf)``."""

    edges: list[float] = Field(min_length=1)
    labels: list[str] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BinsConfig:
        if any(b <= a for a, b in itertools.pairwise(self.edges)):
            raise ValueError(f"edges must increase strictly, got {self.edges}")
        if self.labels is not None:
            if len(self.labels) != len(self.edges) + 1:
                raise ValueError(
                    f"{len(self.edges)} edges make {len(self.edges) + 1} bins; got {len(self.labels)} labels"
                )
            if len(set(self.labels)) != len(self.labels):
                raise ValueError(f"duplicate bin labels {self.labels}")
        return self

    def bin_labels(self) -> list[str]:
        if self.labels is not None:
            return list(self.labels)
        edges = [f"{e:g}" for e in self.edges]
        return [f"<{edges[0]}", *(f"{a}-{b}" for a, b in itertools.pairwise(edges)), f">={edges[-1]}"]


class AttributeConfig(_Strict):
    """A lead column used as a feature."""

    column: str
    source: str | None = Field(default=None, description="needed only when several lead sources have the column")
    name: str | None = Field(default=None, pattern=_NAME_PATTERN, description="default: the column in snake_case")
    kind: Literal["categorical", "numeric"]
    values: dict[str, str | None] = Field(
        default_factory=dict, description="export value -> value (null = missing); other values are kept as they are"
    )
    bins: BinsConfig | None = None
    description: str = ""

    _values = field_validator("values", mode="before")(classmethod(lambda cls, raw: _value_map(raw)))

    @model_validator(mode="after")
    def _bins_make_categories(self) -> AttributeConfig:
        if self.bins is not None and self.kind != "categorical":
            raise ValueError("binned attributes are categorical (kind: categorical)")
        return self

    @property
    def feature_name(self) -> str:
        return self.name or snake_name(self.column)


class AggregateActivityConfig(_Strict):
    """A column holding an activity total as of the export (single-snapshot mode): a numeric attribute."""

    column: str
    source: str | None = None
    name: str | None = Field(default=None, pattern=_NAME_PATTERN)
    values: dict[str, str | None] = Field(default_factory=dict)
    description: str = ""

    _values = field_validator("values", mode="before")(classmethod(lambda cls, raw: _value_map(raw)))

    @property
    def feature_name(self) -> str:
        return self.name or snake_name(self.column)


class ExcludedConfig(_Strict):
    """A column deliberately not used, and why (it is listed in the written contract)."""

    column: str
    source: str | None = None
    reason: Literal["leaky", "post_outcome", "identifier", "unused"]
    note: str = ""


class OtherColumnsConfig(_Strict):
    """What to do with columns the mapping does not mention (default: they are an error)."""

    reason: Literal["leaky", "post_outcome", "identifier", "unused"]
    note: str = ""


class ConstantValue(_Strict):
    """The same value for every row."""

    value: str = Field(min_length=1)


class ColumnValue(_Strict):
    """A value read from a column, translated by a value map that must cover every value found."""

    column: str
    values: dict[str, str | None] | None = Field(
        default=None, description="export value -> name (null = no entry for this row); every value must be mapped"
    )

    @field_validator("values", mode="before")
    @classmethod
    def _values(cls, raw: Any) -> Any:
        return None if raw is None else _value_map(raw)


class ActivityConfig(_Strict):
    """Activities from a source: one per row (of a long event table, or of the lead rows)."""

    source: str
    lead_id: str | None = Field(default=None, description="the lead id column (sources other than the lead rows)")
    time: TimeConfig
    type: ConstantValue | ColumnValue
    channel: str | None = None
    campaign: str | None = None
    topic: ColumnValue | None = None
    value: str | None = None
    skip_if_time_missing: bool = False

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, raw: Any) -> Any:
        return _time(raw)

    @field_validator("topic", mode="before")
    @classmethod
    def _topic(cls, raw: Any) -> Any:
        return {"column": raw} if isinstance(raw, str) else raw


class StageEventConfig(_Strict):
    """Stage entries from a source: a constant stage or a mapped status column, at a time."""

    source: str
    lead_id: str | None = None
    stage: ConstantValue | ColumnValue
    time: TimeConfig
    skip_if_time_missing: bool = False

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, raw: Any) -> Any:
        return _time(raw)


class StagesConfig(_Strict):
    """The funnel (as in the data contract) and the rules that produce stage entries."""

    order: list[str] = Field(min_length=2)
    converted: str = "won"
    closed_negative: list[str] = Field(default_factory=list)
    events: list[StageEventConfig] = Field(min_length=1)

    def spec(self) -> StageSpec:
        return StageSpec(order=self.order, converted=self.converted, closed_negative=self.closed_negative)


class LabelConfig(_Strict):
    """Single-snapshot label: the outcome column and which of its values mean converted."""

    column: str
    source: str | None = None
    positive: list[str] = Field(min_length=1)
    negative: list[str] | None = Field(default=None, description="default: every other non-missing value")

    _positive = field_validator("positive", mode="before")(classmethod(lambda cls, raw: _text_list(raw)))

    @field_validator("negative", mode="before")
    @classmethod
    def _negative(cls, raw: Any) -> Any:
        return None if raw is None else _text_list(raw)

    @model_validator(mode="after")
    def _disjoint(self) -> LabelConfig:
        both = sorted(set(self.positive) & set(self.negative or []))
        if both:
            raise ValueError(f"values {both} are both positive and negative")
        return self


class MappingConfig(_Strict):
    """A mapping file (``version: 1``); see ``docs/mapping.md``."""

    version: int = MAPPING_VERSION
    name: str = Field(min_length=1)
    description: str = ""
    mode: Literal["history", "single_snapshot"] = "history"
    timezone: str = Field(default="UTC", description="time zone of export times written without an offset")
    missing_values: list[str] = Field(default_factory=list, description="export values that mean 'missing'")
    sources: dict[str, SourceConfig] = Field(min_length=1)
    leads: LeadsConfig
    joins: list[JoinConfig] = Field(default_factory=list)
    attributes: list[AttributeConfig] = Field(default_factory=list)
    aggregate_activities: list[AggregateActivityConfig] = Field(default_factory=list)
    excluded: list[ExcludedConfig] = Field(default_factory=list)
    other_columns: OtherColumnsConfig | None = None
    activity_types: list[str] | None = None
    topics: list[str] | None = None
    activities: list[ActivityConfig] = Field(default_factory=list)
    stages: StagesConfig | None = None
    label: LabelConfig | None = None

    _missing = field_validator("missing_values", mode="before")(classmethod(lambda cls, raw: _text_list(raw)))

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != MAPPING_VERSION:
            raise ValueError(f"mapping version {value} is not supported (expected {MAPPING_VERSION})")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from features.contract import check_timezone

        return check_timezone(value)

    @model_validator(mode="after")
    def _consistent(self) -> MappingConfig:
        problems: list[str] = []
        known = set(self.sources)

        def source_exists(name: str | None, where: str) -> None:
            if name is not None and name not in known:
                problems.append(f"{where}: source '{name}' is not declared under sources ({sorted(known)})")

        source_exists(self.leads.source, "leads.source")
        joined: list[str] = []
        for i, join in enumerate(self.joins):
            source_exists(join.source, f"joins.{i}.source")
            if join.source == self.leads.source or join.source in joined:
                problems.append(f"joins.{i}.source: source '{join.source}' is already part of the lead rows")
            joined.append(join.source)
        for i, attribute in enumerate(self.attributes):
            source_exists(attribute.source, f"attributes.{i}.source")
        for i, aggregate in enumerate(self.aggregate_activities):
            source_exists(aggregate.source, f"aggregate_activities.{i}.source")
        for i, rule in enumerate(self.activities):
            source_exists(rule.source, f"activities.{i}.source")
        for i, event in enumerate(self.stages.events if self.stages else []):
            source_exists(event.source, f"stages.events.{i}.source")

        if self.mode == "single_snapshot":
            if self.label is None:
                problems.append("label: single_snapshot mode needs a label (outcome column and positive values)")
            if self.activities:
                problems.append(
                    "activities: single_snapshot mode builds features from lead columns only; map activity totals "
                    "under aggregate_activities, or use mode: history with timed activities"
                )
            if self.stages is not None:
                problems.append("stages: single_snapshot mode takes the outcome from label, not from stage events")
        else:
            if self.label is not None:
                problems.append("label: only single_snapshot mode has a label; history mode converts via stages")
            if self.aggregate_activities:
                problems.append(
                    "aggregate_activities: activity totals as of the export would leak later activity into "
                    "point-in-time features; use mode: single_snapshot, or map the timed activities"
                )
            if self.stages is None:
                problems.append("stages: history mode needs stages (order, converted and events)")
            if not self.activity_type_names():
                problems.append(
                    "activity_types: history mode needs at least one activity type (map activities, or declare "
                    "activity_types for an export whose activities are not available)"
                )

        names = [a.feature_name for a in self.attributes] + [a.feature_name for a in self.aggregate_activities]
        for name in names:
            if not re.match(_NAME_PATTERN, name):
                problems.append(f"attributes: name '{name}' must match {_NAME_PATTERN}; set name: explicitly")
            if name in REQUIRED_COLUMNS["leads"]:
                problems.append(f"attributes: '{name}' is a required leads column; give the attribute another name")
        duplicated = sorted(n for n, c in Counter(names).items() if c > 1)
        if duplicated:
            problems.append(f"attributes: duplicate feature names {duplicated}; set name: to tell them apart")

        declared_types = self.activity_types
        for i, rule in enumerate(self.activities):
            if isinstance(rule.type, ColumnValue) and rule.type.values is None and declared_types is None:
                problems.append(
                    f"activities.{i}.type: a type column without values: needs activity_types declared at the top"
                )
            if rule.topic is not None and rule.topic.values is None and self.topics is None:
                problems.append(f"activities.{i}.topic: a topic column without values: needs topics declared")
            if declared_types is not None:
                unknown = sorted(set(_targets(rule.type)) - set(declared_types))
                if unknown:
                    problems.append(f"activities.{i}.type: {unknown} are not in activity_types {declared_types}")
            if self.topics is not None and rule.topic is not None:
                unknown = sorted(set(_targets(rule.topic)) - set(self.topics))
                if unknown:
                    problems.append(f"activities.{i}.topic: {unknown} are not in topics {self.topics}")
        if self.stages is not None:
            order = self.stages.order
            for i, event in enumerate(self.stages.events):
                unknown = sorted(set(_targets(event.stage)) - set(order))
                if unknown:
                    problems.append(f"stages.events.{i}.stage: {unknown} are not in stages.order {order}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived ------------------------------------------------------------------------------
    def activity_type_names(self) -> list[str]:
        """Declared activity types, else every type the activity rules can produce (in order)."""
        if self.activity_types is not None:
            return list(self.activity_types)
        return _unique(t for rule in self.activities for t in _targets(rule.type))

    def topic_names(self) -> list[str]:
        if self.topics is not None:
            return list(self.topics)
        return _unique(t for rule in self.activities if rule.topic is not None for t in _targets(rule.topic))

    def stage_spec(self) -> StageSpec:
        if self.mode == "single_snapshot" or self.stages is None:
            return SINGLE_SNAPSHOT_STAGES
        return self.stages.spec()

    def lead_sources(self) -> list[str]:
        """The lead source and the joined sources: one row per lead after the joins."""
        return [self.leads.source, *(j.source for j in self.joins)]


def _targets(value: ConstantValue | ColumnValue) -> list[str]:
    if isinstance(value, ConstantValue):
        return [value.value]
    return [v for v in (value.values or {}).values() if v is not None]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def snake_name(column: str) -> str:
    """A column header as a feature name: ``'Total Time Spent'`` -> ``total_time_spent``, ``'emp.var.rate'`` ->
    ``emp_var_rate``; a leading digit gets a ``c_`` prefix."""
    name = re.sub(r"[^0-9a-zA-Z]+", "_", column).strip("_").lower()
    if not name:
        return "column"
    return f"c_{name}" if name[0].isdigit() else name


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise MappingError(f"{path}: mapping file not found")
    raw = read_yaml_mapping(path.read_text(encoding="utf-8"), str(path), MappingError)
    boolean_keys = list(_boolean_keys(raw, ""))
    if boolean_keys:
        raise MappingError(
            f"{path}: YAML read these keys as booleans: {boolean_keys}. Unquoted yes/no/on/off/true/false are "
            "booleans in YAML; quote them (e.g. 'Yes': ...)"
        )
    return raw


def _boolean_keys(node: Any, where: str) -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, bool):
                yield f"{here} (was it 'on', 'yes', 'no' or 'off'?)"
            yield from _boolean_keys(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _boolean_keys(item, f"{where}.{i}")


def load_mapping(path: str | Path) -> MappingConfig:
    """Read and validate a mapping file.

    Raises:
        MappingError: the file is missing, not YAML, or invalid; the message names the file and each field.
    """
    path = resolve_mapping(path)
    raw = _load_yaml(path)
    try:
        return MappingConfig.model_validate(raw)
    except ValidationError as exc:
        raise MappingError(f"{path}: invalid mapping:\n{format_validation_error(exc)}") from exc


#: Suffix of the recommended modelling config shipped next to a mapping (``<name>.config.yaml``).
RECOMMENDED_CONFIG_SUFFIX = ".config.yaml"


def builtin_mappings() -> dict[str, Path]:
    """The mapping files shipped with leadscore (``features/mappings/*.yaml``), by name.

    Their recommended modelling configs (``<name>.config.yaml``) are not mappings: see :func:`recommended_config`.
    """
    folder = resources.files(_BUILTIN_PACKAGE)
    return {
        Path(entry.name).stem: Path(str(entry))
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml") and not entry.name.endswith(RECOMMENDED_CONFIG_SUFFIX) and entry.is_file()
    }


def recommended_config(name: str) -> Path:
    """The recommended modelling config shipped for a shipped mapping (``features/mappings/<name>.config.yaml``).

    Pass it to ``leadscore train --config`` (or ``pipelines.config.load_config``) for data imported with
    that mapping: it sets what the data set needs (e.g. a shorter horizon, the snapshot range in which
    outcomes were recorded) and says why in its comments.

    Raises:
        MappingError: ``name`` is not a shipped mapping, or no config is shipped for it.
    """
    shipped = builtin_mappings()
    if name not in shipped:
        raise MappingError(f"{name}: not a shipped mapping ({sorted(shipped)})")
    path = shipped[name].with_name(f"{name}{RECOMMENDED_CONFIG_SUFFIX}")
    if not path.is_file():
        raise MappingError(f"{name}: no recommended modelling config is shipped ({path} is missing)")
    return path


def resolve_mapping(name_or_path: str | Path) -> Path:
    """A mapping file path, or the name of a shipped mapping (e.g. ``olist_marketing_funnel``)."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    shipped = builtin_mappings()
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    raise MappingError(f"{name_or_path}: no such mapping file, and not a shipped mapping ({sorted(shipped)})")


# ============================================================================================
# Reports
# ============================================================================================
@dataclass(frozen=True)
class SourceReport:
    """Row accounting for one export file: ``rows_read = rows_used + rows_skipped + rows_rejected``."""

    name: str
    path: Path
    role: str  # "leads", "join", "events"
    rows_read: int
    rows_used: int
    rows_skipped: int
    rows_rejected: int
    rejected: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rows_read != self.rows_used + self.rows_skipped + self.rows_rejected:
            raise RuntimeError(
                f"{self.path}: row accounting does not balance: read {self.rows_read} != used {self.rows_used} + "
                f"skipped {self.rows_skipped} + rejected {self.rows_rejected} (this is a bug in leadscore)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "path": str(self.path),
            "role": self.role,
            "rows_read": self.rows_read,
            "rows_used": self.rows_used,
            "rows_skipped": self.rows_skipped,
            "rows_rejected": self.rows_rejected,
            "rejected": dict(self.rejected),
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True)
class RuleReport:
    """What one rule (``activities.N``, ``stages.events.N``, ``label``) produced."""

    rule: str
    table: str
    source: str
    rows_written: int
    not_applicable: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "table": self.table,
            "source": self.source,
            "rows_written": self.rows_written,
            "not_applicable": dict(self.not_applicable),
        }


@dataclass(frozen=True)
class ImportSummary:
    """What :func:`import_export` read, rejected, wrote and what validation then accepted."""

    mapping: Path
    source_dir: Path
    out_dir: Path
    name: str
    mode: str
    sources: dict[str, SourceReport]
    rules: list[RuleReport]
    tables_written: dict[str, int]
    validation: ValidationReport
    quarantine_files: dict[str, Path]
    sample_rows: int | None
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def rows_rejected(self) -> int:
        """Rows rejected by the mapping (all sources)."""
        return sum(s.rows_rejected for s in self.sources.values())

    @property
    def rows_quarantined(self) -> int:
        """Rows of the written tables quarantined by validation."""
        return self.validation.rows_quarantined

    def to_dict(self) -> dict[str, Any]:
        return {
            "mapping": str(self.mapping),
            "source_dir": str(self.source_dir),
            "out_dir": str(self.out_dir),
            "name": self.name,
            "mode": self.mode,
            "sample_rows": self.sample_rows,
            "sources": {name: report.to_dict() for name, report in self.sources.items()},
            "rules": [rule.to_dict() for rule in self.rules],
            "tables_written": dict(self.tables_written),
            "validation": self.validation.to_dict(),
            "quarantine_files": {name: str(path) for name, path in self.quarantine_files.items()},
            "seconds": round(self.seconds, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def summary(self) -> str:
        """One line per source and table, for logs."""
        parts = [
            f"{s.name}: read {s.rows_read}, used {s.rows_used}, skipped {s.rows_skipped}, rejected {s.rows_rejected}"
            for s in self.sources.values()
        ]
        parts += [
            f"{t.table}: written {t.rows_read}, accepted {t.rows_accepted}, quarantined {t.rows_quarantined}"
            for t in self.validation.tables.values()
        ]
        return "; ".join(parts)

    def render(self) -> Table:
        """A rich table of the per-source accounting for the CLI (print ``validation.render()`` too)."""
        from rich.table import Table

        table = Table(title=f"Import: {self.mapping.name} -> {self.out_dir}")
        table.add_column("source (file)")
        table.add_column("read", justify="right")
        table.add_column("used", justify="right")
        table.add_column("skipped", justify="right")
        table.add_column("rejected", justify="right")
        table.add_column("reasons (rows)", overflow="fold")
        for s in self.sources.values():
            reasons = [f"{k}: {v:,}" for k, v in sorted(s.rejected.items(), key=lambda kv: -kv[1])]
            reasons += [f"skipped, {k}: {v:,}" for k, v in sorted(s.skipped.items(), key=lambda kv: -kv[1])]
            table.add_row(
                f"{s.name} ({s.path.name})",
                f"{s.rows_read:,}",
                f"{s.rows_used:,}",
                f"{s.rows_skipped:,}",
                f"[red]{s.rows_rejected:,}[/red]" if s.rows_rejected else "0",
                "\n".join(reasons) or "-",
            )
        return table


# ============================================================================================
# Reading the export
# ============================================================================================
@dataclass
class _Source:
    name: str
    path: Path
    frame: pd.DataFrame
    config: SourceConfig


def _read_source(
    name: str, config: SourceConfig, base: Path, mapping_path: Path, missing: Sequence[str], nrows: int | None
) -> _Source:
    path = Path(config.path).expanduser()
    path = path if path.is_absolute() else base / path
    where = f"{mapping_path}: sources.{name}.path"
    if not path.is_file():
        raise MappingError(f"{where}: file {path} does not exist (relative paths are read from the source directory)")
    kind = config.format or ("parquet" if path.suffix.lower() == ".parquet" else "csv")
    if kind == "csv":
        frame = _read_csv(path, config, name, mapping_path, nrows)
    else:
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise MappingError(f"{path}: cannot be read as Parquet (source '{name}' of {mapping_path}): {exc}") from exc
        frame = _parquet_as_text(frame.head(nrows) if nrows is not None else frame)
    for column, table in config.replace.items():
        if column not in frame.columns:
            raise MappingError(
                f"{mapping_path}: sources.{name}.replace: column '{column}' is not in {path.name} "
                f"(columns: {list(frame.columns)})"
            )
        frame[column] = _translate(frame[column], table)[0]
    for column in frame.columns:
        text = frame[column]
        blank = text.str.strip() == ""
        drop = blank.to_numpy(dtype=bool, na_value=False).copy()
        if missing:
            drop |= text.isin(missing).to_numpy(dtype=bool)
        if drop.any():
            frame[column] = text.where(~drop)
    return _Source(name=name, path=path, frame=frame.reset_index(drop=True), config=config)


def _read_csv(path: Path, config: SourceConfig, name: str, mapping_path: Path, nrows: int | None) -> pd.DataFrame:
    encoding = "utf-8-sig" if config.encoding.lower().replace("_", "-") in ("utf-8", "utf8") else config.encoding
    try:
        with path.open(encoding=encoding, newline="") as handle:
            header = next(csv.reader(handle, delimiter=config.delimiter, quotechar=config.quotechar), [])
        duplicated = sorted(n for n, c in Counter(header).items() if c > 1)
        if duplicated:
            raise MappingError(f"{path}: duplicate column name(s) in the header: {duplicated}")
        frame = pd.read_csv(
            path,
            sep=config.delimiter,
            quotechar=config.quotechar,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            nrows=nrows,
        )
    except MappingError:
        raise
    except (UnicodeDecodeError, LookupError) as exc:
        raise MappingError(
            f"{path}: cannot be decoded as {config.encoding} (set sources.{name}.encoding in {mapping_path}): {exc}"
        ) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise MappingError(
            f"{path}: cannot be read as CSV with delimiter {config.delimiter!r} (source '{name}' of {mapping_path}): "
            f"{exc}"
        ) from exc
    if len(header) == 1:
        likely = [d for d in (";", ",", "\t", "|") if d != config.delimiter and d in header[0]]
        if likely:
            raise MappingError(
                f"{path}: read a single column {header[0][:60]!r} with delimiter {config.delimiter!r}; the file looks "
                f"delimited by {likely[0]!r}: set sources.{name}.delimiter in {mapping_path}"
            )
    if len(header) != len(frame.columns) or [str(c) for c in frame.columns] != header:
        raise MappingError(
            f"{path}: the header has {len(header)} columns but pandas read {len(frame.columns)}; check "
            f"sources.{name}.delimiter ({config.delimiter!r}) and quotechar in {mapping_path}"
        )
    return frame.astype(STR_DTYPE)


def _parquet_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet columns as the text a CSV export would hold (times in ISO 8601 with their offset)."""
    out = {}
    for column in frame.columns:
        series = frame[column]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            text = pd.Series(series.map(lambda t: t.isoformat() if t is not pd.NaT else None), dtype=STR_DTYPE)
            out[str(column)] = text
        else:
            out[str(column)] = _as_str(series)
    return pd.DataFrame(out)


def _translate(text: pd.Series, table: dict[str, str | None]) -> tuple[pd.Series, np.ndarray]:
    """Apply a value map: mapped values replaced (None -> missing), others unchanged; mask of unmapped values."""
    if not table:
        return text, text.notna().to_numpy(dtype=bool)
    known = text.isin(list(table)).to_numpy(dtype=bool)
    mapped = text.map(table).astype(STR_DTYPE)
    out = text.where(~known, mapped)
    return out.astype(STR_DTYPE), text.notna().to_numpy(dtype=bool) & ~known


# ============================================================================================
# Column references
# ============================================================================================
class _Columns:
    """The lead rows (lead source + joined sources) and the other sources, with column resolution."""

    def __init__(self, mapping: MappingConfig, sources: dict[str, _Source], mapping_path: Path) -> None:
        self.mapping = mapping
        self.sources = sources
        self.path = mapping_path
        self.lead_sources = mapping.lead_sources()
        self.errors: list[str] = []
        self.used: dict[str, set[str]] = {name: set() for name in sources}
        self.features: dict[tuple[str, str], str] = {}  # (source, column) -> where it is used as a feature
        self.indexers: dict[str, np.ndarray] = {}  # joined source -> row in it for each lead row (-1: none)

    def columns_of(self, source: str) -> list[str]:
        return [str(c) for c in self.sources[source].frame.columns]

    def _missing(self, where: str, column: str, sources: Sequence[str]) -> None:
        listing = "; ".join(f"'{s}' ({self.sources[s].path.name}): {self.columns_of(s)}" for s in sources)
        self.errors.append(f"{where}: column '{column}' is not in {listing}")

    def lead_column(self, column: str, source: str | None, where: str, *, feature: bool = False) -> str | None:
        """Resolve a column of the lead rows; returns its source (None after recording an error)."""
        if source is not None:
            if source not in self.lead_sources:
                self.errors.append(
                    f"{where}: source '{source}' is not part of the lead rows ({self.lead_sources}); "
                    "join it under joins first"
                )
                return None
            candidates = [source] if column in self.columns_of(source) else []
        else:
            candidates = [s for s in self.lead_sources if column in self.columns_of(s)]
            if len(candidates) > 1:
                # A joined source's key repeats the lead rows' key (equal wherever it matched): the left side
                # is the one that has a value for every lead.
                right_keys = {j.source: j.right_key for j in self.mapping.joins}
                candidates = [s for s in candidates if right_keys.get(s) != column] or candidates
        if not candidates:
            self._missing(where, column, [source] if source else self.lead_sources)
            return None
        if len(candidates) > 1:
            self.errors.append(
                f"{where}: column '{column}' is in several lead sources {candidates}; say which with source:"
            )
            return None
        self.use(candidates[0], column, where if feature else None)
        return candidates[0]

    def join_key(self, column: str, index: int, where: str) -> str | None:
        """The source of join ``index``'s left key: the lead source, else the earliest join before it that has it."""
        candidates = self.lead_sources[: index + 1]
        for source in candidates:
            if column in self.columns_of(source):
                self.use(source, column, None)
                return source
        self._missing(where, column, candidates)
        return None

    def source_column(self, source: str, column: str, where: str, *, feature: bool = False) -> bool:
        if column not in self.columns_of(source):
            self._missing(where, column, [source])
            return False
        self.use(source, column, where if feature else None)
        return True

    def use(self, source: str, column: str, feature_where: str | None) -> None:
        self.used[source].add(column)
        if feature_where is not None:
            self.features[(source, column)] = feature_where

    def raise_if_errors(self) -> None:
        if self.errors:
            lines = "\n".join(f"  - {e}" for e in self.errors)
            raise MappingError(f"{self.path}: the mapping does not fit the export:\n{lines}")


# ============================================================================================
# Times, numbers and problems
# ============================================================================================
@dataclass
class _ParsedTimes:
    values: np.ndarray  # datetime64[us], UTC; NaT where missing or unusable
    missing: np.ndarray


def _parse_times(
    text: pd.Series,
    fmt: str | None,
    tz: str,
    label: str,
    problems: _RowProblems,
    *,
    file: Path,
) -> _ParsedTimes:
    """Parse an export time column to UTC, recording unusable values in ``problems`` (with the original text)."""
    n = len(text)
    present = text.notna().to_numpy(dtype=bool)
    if fmt is not None:
        aware_format = "%z" in fmt or "%Z" in fmt
        parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc=aware_format)
        if aware_format:
            parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
        values = np.asarray(parsed.dt.as_unit(TIME_UNIT).array, dtype=f"datetime64[{TIME_UNIT}]")
        aware = np.full(n, aware_format)
    else:
        values, aware = _parse_time_text(text.astype(STR_DTYPE), present)
    parsed_ok = ~np.isnat(values)
    aware_rows = np.flatnonzero(parsed_ok & aware)
    naive_rows = np.flatnonzero(parsed_ok & ~aware)
    if aware_rows.size and naive_rows.size:
        raise MappingError(
            f"{file}: column {label} mixes times with a time-zone offset (first at row {aware_rows[0] + 1}: "
            f"{_show(text.iloc[aware_rows[0]])}) and without one (first at row {naive_rows[0] + 1}: "
            f"{_show(text.iloc[naive_rows[0]])}); one of the two readings would be wrong"
        )
    expected = f" (expected format {fmt})" if fmt else ""
    problems.add_per_value(
        f"invalid_timestamp:{label}",
        present & ~parsed_ok,
        text,
        lambda v: f"{label} {_show(v)} is not a valid timestamp{expected}",
    )
    if naive_rows.size:
        values, nonexistent, ambiguous = _localize(values, tz)
        problems.add_per_value(
            f"nonexistent_local_time:{label}",
            nonexistent,
            text,
            lambda v: f"{label} {_show(v)} does not exist in time zone {tz} (skipped by a daylight-saving change)",
        )
        problems.add_per_value(
            f"ambiguous_local_time:{label}",
            ambiguous,
            text,
            lambda v: f"{label} {_show(v)} is ambiguous in time zone {tz} (repeated by a daylight-saving change)",
        )
        values = values.copy()
        values[nonexistent | ambiguous] = np.datetime64("NaT", TIME_UNIT)
    return _ParsedTimes(values=values, missing=~present)


def _fixed_time(config: TimeConfig, tz: str, where: str) -> np.datetime64:
    stamp = pd.Timestamp(str(config.fixed))
    if stamp.tzinfo is None:
        try:
            stamp = stamp.tz_localize(tz, ambiguous="raise", nonexistent="raise")
        except (ValueError, TypeError) as exc:  # pytz-style errors subclass ValueError
            raise MappingError(f"{where}: fixed time {config.fixed!r} does not exist once in time zone {tz}") from exc
    return stamp.tz_convert("UTC").tz_localize(None).as_unit(TIME_UNIT).to_datetime64()


def _parse_numbers(text: pd.Series, label: str, problems: _RowProblems) -> np.ndarray:
    """Float64 values; spelled-out missing values (NaN, NA, null, ...) are missing, other non-numbers rejected."""
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    present = text.notna().to_numpy(dtype=bool)
    unparsed = present & np.isnan(values)
    if unparsed.any():
        spelled = text.str.strip().str.lower().isin(_NUMERIC_NA).to_numpy(dtype=bool, na_value=False)
        problems.add_per_value(
            f"invalid_number:{label}", unparsed & ~spelled, text, lambda v: f"{label} {_show(v)} is not a number"
        )
    problems.add_per_value(
        f"not_finite_number:{label}", np.isinf(values), text, lambda v: f"{label} {_show(v)} is not a finite number"
    )
    return np.where(np.isinf(values), np.nan, values)


def _label(source: str, column: str) -> str:
    return f"{source}.{column}"


# ============================================================================================
# The import
# ============================================================================================
@dataclass
class _Rule:
    """Output rows of one activity/stage rule before rejected rows are removed."""

    rule: str
    table: str
    source: str
    rows: np.ndarray  # source row positions of the output rows
    columns: dict[str, Any]
    not_applicable: Counter[str] = field(default_factory=Counter)
    skip_masks: dict[str, np.ndarray] = field(default_factory=dict)  # reason -> rows skipped by it


@dataclass
class _Built:
    tables: dict[str, pd.DataFrame]
    contract: Contract
    sources: dict[str, SourceReport]
    rules: list[RuleReport]
    rejects: dict[str, pd.DataFrame]


def _excluded_entries(mapping: MappingConfig, cols: _Columns) -> list[ExcludedColumn]:
    """Excluded columns for the contract, after checking each is known and none is also a feature."""
    entries: list[ExcludedColumn] = []
    explicit: set[tuple[str, str]] = set()
    for i, item in enumerate(mapping.excluded):
        where = f"excluded.{i}"
        if item.source is not None:
            if item.source not in cols.sources:
                cols.errors.append(f"{where}.source: source '{item.source}' is not declared under sources")
                continue
            owners = [item.source] if item.column in cols.columns_of(item.source) else []
        else:
            owners = [s for s in cols.sources if item.column in cols.columns_of(s)]
        if not owners:
            cols._missing(f"{where}.column", item.column, [item.source] if item.source else list(cols.sources))
            continue
        for owner in owners:
            explicit.add((owner, item.column))
            feature = cols.features.get((owner, item.column))
            if feature is not None:
                cols.errors.append(
                    f"{where}: column '{item.column}' of '{owner}' is excluded ({item.reason}) but used as a feature "
                    f"at {feature}; an excluded column is never a feature"
                )
            entries.append(
                ExcludedColumn(
                    name=snake_name(item.column),
                    reason=item.reason,
                    column=item.column,
                    source=cols.sources[owner].path.name,
                    note=item.note,
                )
            )
    for name, source in cols.sources.items():
        for column in cols.columns_of(name):
            if column in cols.used[name] or (name, column) in explicit:
                continue
            if mapping.other_columns is None:
                cols.errors.append(
                    f"column '{column}' of source '{name}' ({source.path.name}) is neither mapped nor excluded; "
                    "add it under attributes, or under excluded with a reason (leaky, post_outcome, identifier, "
                    "unused), or set other_columns"
                )
                continue
            entries.append(
                ExcludedColumn(
                    name=snake_name(column),
                    reason=mapping.other_columns.reason,
                    column=column,
                    source=source.path.name,
                    note=mapping.other_columns.note or "not mentioned in the mapping (other_columns)",
                )
            )
    if mapping.label is not None:
        entries.append(
            ExcludedColumn(
                name=snake_name(mapping.label.column),
                reason="outcome",
                column=mapping.label.column,
                source=cols.sources[mapping.label.source or mapping.leads.source].path.name,
                note="the label (single-snapshot outcome); never a feature",
            )
        )
    return entries


def _build(
    mapping: MappingConfig,
    mapping_path: Path,
    sources: dict[str, _Source],
    sample_rows: int | None,
) -> _Built:
    tz = mapping.timezone
    cols = _Columns(mapping, sources, mapping_path)
    lead_source = sources[mapping.leads.source]
    lead_frame = lead_source.frame
    n_leads = len(lead_frame)
    sampled = sample_rows is not None

    # -- resolve every column reference first, so all mistakes are reported at once ---------------
    id_config = mapping.leads.id
    if id_config.column is not None:
        cols.source_column(lead_source.name, id_config.column, "leads.id.column")
    created = mapping.leads.created_at
    created_src = None
    if created.column is not None:
        created_src = cols.lead_column(created.column, created.source, "leads.created_at.column")
    join_left_sources: list[str | None] = []
    for i, join in enumerate(mapping.joins):
        join_left_sources.append(cols.join_key(join.left_key, i, f"joins.{i}.left_on"))
        cols.source_column(join.source, join.right_key, f"joins.{i}.right_on")
    attribute_sources = [
        cols.lead_column(a.column, a.source, f"attributes.{i}.column", feature=True)
        for i, a in enumerate(mapping.attributes)
    ]
    aggregate_sources = [
        cols.lead_column(a.column, a.source, f"aggregate_activities.{i}.column", feature=True)
        for i, a in enumerate(mapping.aggregate_activities)
    ]
    label_source = None
    if mapping.label is not None:
        label_source = cols.lead_column(mapping.label.column, mapping.label.source, "label.column")
    rules: list[tuple[str, ActivityConfig | StageEventConfig]] = [
        (f"activities.{i}", r) for i, r in enumerate(mapping.activities)
    ]
    rules += [(f"stages.events.{i}", r) for i, r in enumerate(mapping.stages.events if mapping.stages else [])]
    for where, rule in rules:
        in_lead_rows = rule.source in cols.lead_sources
        if in_lead_rows and rule.lead_id is not None:
            cols.errors.append(
                f"{where}.lead_id: source '{rule.source}' is part of the lead rows (their id is leads.id); "
                "remove lead_id"
            )
        if not in_lead_rows:
            if rule.lead_id is None:
                cols.errors.append(f"{where}.lead_id: source '{rule.source}' needs the column holding the lead id")
            else:
                cols.source_column(rule.source, rule.lead_id, f"{where}.lead_id")
        if rule.time.fixed is not None:
            cols.errors.append(f"{where}.time: event times come from a column, not a fixed time")
        elif rule.time.source is not None and rule.time.source != rule.source:
            cols.errors.append(f"{where}.time.source: times come from the rule's own source '{rule.source}'")
        fields: list[tuple[str, str | None, bool]] = [("time.column", rule.time.column, False)]
        if isinstance(rule, ActivityConfig):
            if isinstance(rule.type, ColumnValue):
                fields.append(("type.column", rule.type.column, False))
            fields += [("channel", rule.channel, True), ("campaign", rule.campaign, True), ("value", rule.value, True)]
            if rule.topic is not None:
                fields.append(("topic.column", rule.topic.column, True))
        elif isinstance(rule.stage, ColumnValue):
            fields.append(("stage.column", rule.stage.column, False))
        for name, column, feature in fields:
            if column is not None:
                cols.source_column(rule.source, column, f"{where}.{name}", feature=feature)
    used_sources = set(cols.lead_sources) | {rule.source for _, rule in rules}
    for name in sources:
        if name not in used_sources:
            cols.errors.append(f"sources.{name}: declared but not used by leads, joins, activities or stage events")
    excluded = _excluded_entries(mapping, cols)
    cols.raise_if_errors()

    lead_problems = _RowProblems(n_leads)

    # -- lead ids and joins -----------------------------------------------------------------------
    if id_config.column is not None:
        lead_ids = lead_frame[id_config.column].astype(STR_DTYPE)
    else:
        lead_ids = pd.Series([f"{id_config.prefix}{i + 1}" for i in range(n_leads)], dtype=STR_DTYPE)
    present_ids = lead_ids.notna().to_numpy(dtype=bool)
    duplicate = present_ids & lead_ids.duplicated(keep="first").to_numpy(dtype=bool)
    if duplicate.any():
        dup_ids = lead_ids[duplicate].tolist()
        firsts = _first_rows(lead_ids, present_ids & ~duplicate, dup_ids)
        lead_problems.add(
            "duplicate_lead_id",
            duplicate,
            lambda pos: [f"lead id '{i}' is a duplicate of row {r + 1}" for i, r in zip(dup_ids, firsts, strict=True)],
        )

    join_problems: dict[str, _RowProblems] = {}
    join_skips: dict[str, dict[str, np.ndarray]] = {}
    for join, left_source in zip(mapping.joins, join_left_sources, strict=True):
        right = sources[join.source].frame
        problems = _RowProblems(len(right))
        keys = right[join.right_key].astype(STR_DTYPE)
        has_key = keys.notna().to_numpy(dtype=bool)
        problems.add_constant(f"missing_key:{join.right_key}", ~has_key, f"{join.right_key} is missing")
        dup = has_key & keys.duplicated(keep="first").to_numpy(dtype=bool)
        if dup.any():
            dup_keys = keys[dup].tolist()
            firsts = _first_rows(keys, has_key & ~dup, dup_keys)
            problems.add(f"duplicate_key:{join.right_key}", dup, _duplicate_messages(join.right_key, dup_keys, firsts))
        usable = has_key & ~dup
        index = pd.Index(keys[usable].to_numpy(dtype=object))
        left = _lead_values(cols, join.left_key, str(left_source), lead_frame)
        positions = index.get_indexer(pd.Index(left.to_numpy(dtype=object)))
        usable_rows = np.flatnonzero(usable)
        indexer = np.where(positions >= 0, usable_rows[np.maximum(positions, 0)], -1)
        indexer[left.isna().to_numpy(dtype=bool)] = -1
        cols.indexers[join.source] = indexer
        join_problems[join.source] = problems
        matched = np.zeros(len(right), dtype=bool)
        matched[indexer[indexer >= 0]] = True
        unmatched = usable & ~matched
        join_skips[join.source] = {}
        if sampled:
            join_skips[join.source]["outside the sample"] = unmatched
        elif join.unmatched == "skip":
            join_skips[join.source][f"no lead has this {join.right_key} (unmatched: skip)"] = unmatched
        else:
            unmatched_text = f"matches no {join.left_key} of source '{mapping.leads.source}'"
            problems.add_per_value(
                f"unmatched_key:{join.right_key}",
                unmatched,
                keys,
                _value_message(f"{join.right_key} {{value}} {unmatched_text}"),
            )

    # -- created time, attributes, label -----------------------------------------------------------
    if created.column is not None and created_src is not None:
        text = _lead_values(cols, created.column, created_src, lead_frame)
        created_times = _parse_times(
            text,
            created.format,
            tz,
            _label(created_src, created.column),
            lead_problems,
            file=sources[created_src].path,
        )
        created_utc = created_times.values
    else:
        created_utc = np.full(n_leads, _fixed_time(created, tz, f"{mapping_path}: leads.created_at.fixed"))

    leads_columns: dict[str, Any] = {"lead_id": lead_ids, "created_at": created_utc}
    attributes: list[AttributeSpec] = []
    for item, src in zip(mapping.attributes, attribute_sources, strict=True):
        assert src is not None
        label = _label(src, item.column)
        text, _ = _translate(_lead_values(cols, item.column, src, lead_frame), item.values)
        kind = item.kind
        if item.bins is not None:
            numbers = _parse_numbers(text, label, lead_problems)
            bin_labels = item.bins.bin_labels()
            codes = np.searchsorted(np.asarray(item.bins.edges, dtype=np.float64), numbers, side="right")
            binned = np.asarray(bin_labels, dtype=object)[codes]
            binned[np.isnan(numbers)] = None
            leads_columns[item.feature_name] = pd.Series(binned, dtype=STR_DTYPE)
        elif kind == "numeric":
            leads_columns[item.feature_name] = _parse_numbers(text, label, lead_problems)
        else:
            leads_columns[item.feature_name] = text
        description = f"{sources[src].path.name}: {item.column}"
        if item.bins is not None:
            description += f" (binned at {item.bins.edges})"
        attributes.append(
            AttributeSpec(
                name=item.feature_name,
                kind=kind,
                description=f"{description}. {item.description}" if item.description else description,
            )
        )
    for aggregate, src in zip(mapping.aggregate_activities, aggregate_sources, strict=True):
        assert src is not None
        text, _ = _translate(_lead_values(cols, aggregate.column, src, lead_frame), aggregate.values)
        leads_columns[aggregate.feature_name] = _parse_numbers(text, _label(src, aggregate.column), lead_problems)
        note = f"aggregate activity column {sources[src].path.name}: {aggregate.column} (total as of the export)"
        attributes.append(
            AttributeSpec(
                name=aggregate.feature_name,
                kind="numeric",
                description=f"{note}. {aggregate.description}" if aggregate.description else note,
            )
        )

    built_rules: list[_Rule] = []
    if mapping.label is not None and label_source is not None:
        built_rules.append(_label_rule(mapping.label, label_source, cols, lead_frame, created_utc, lead_problems))

    # -- activity and stage rules -------------------------------------------------------------------
    long_problems: dict[str, _RowProblems] = {
        name: _RowProblems(len(sources[name].frame)) for name in used_sources if name not in cols.lead_sources
    }
    for where, rule in rules:
        in_lead_rows = rule.source in cols.lead_sources
        problems = lead_problems if in_lead_rows else long_problems[rule.source]
        n_rows = n_leads if in_lead_rows else len(sources[rule.source].frame)
        built_rules.append(
            _event_rule(
                where,
                rule,
                _column_reader(cols, rule.source, lead_frame),
                n_rows,
                problems,
                tz,
                sources[rule.source].path,
                created_utc if in_lead_rows else None,
            )
        )

    # -- which lead rows survive; cascade to the rows that depend on them --------------------------
    lead_rejected = lead_problems.bad.copy()
    kept_ids = pd.Index(lead_ids[~lead_rejected & present_ids].to_numpy(dtype=object))
    rejected_ids = pd.Index(lead_ids[lead_rejected & present_ids].to_numpy(dtype=object)).difference(kept_ids)
    long_skips: dict[str, dict[str, np.ndarray]] = {name: {} for name in long_problems}
    for rule_out in built_rules:
        if rule_out.source in cols.lead_sources:
            continue
        frame = sources[rule_out.source].frame
        problems = long_problems[rule_out.source]
        rule_config = dict(rules)[rule_out.rule]
        lead_col = frame[str(rule_config.lead_id)].astype(STR_DTYPE)
        ids = lead_col.to_numpy(dtype=object)
        cascade = np.asarray(pd.Index(ids).isin(rejected_ids)) & lead_col.notna().to_numpy(dtype=bool)
        problems.add_per_value(
            "rejected_lead",
            cascade,
            lead_col,
            lambda v: f"lead {_show(v)} was rejected by the mapping (see source_{mapping.leads.source}.csv)",
        )
        if sampled:
            outside = lead_col.notna().to_numpy(dtype=bool) & ~np.asarray(pd.Index(ids).isin(kept_ids)) & ~cascade
            long_skips[rule_out.source]["outside the sample"] = outside | long_skips[rule_out.source].get(
                "outside the sample", np.zeros(len(frame), dtype=bool)
            )
        rule_out.columns["lead_id"] = lead_col.to_numpy(dtype=object)[rule_out.rows]

    # -- assemble the tables ----------------------------------------------------------------------
    keep_leads = ~lead_rejected
    leads_table = _frame(leads_columns, keep_leads)
    activity_parts: list[pd.DataFrame] = []
    stage_parts: list[pd.DataFrame] = []
    rule_reports: list[RuleReport] = []
    long_used: dict[str, np.ndarray] = {name: np.zeros(len(sources[name].frame), dtype=bool) for name in long_problems}
    for rule_out in built_rules:
        in_lead_rows = rule_out.source in cols.lead_sources or rule_out.rule == "label"
        if in_lead_rows:
            ok = keep_leads[rule_out.rows]
            rule_out.columns["lead_id"] = lead_ids.to_numpy(dtype=object)[rule_out.rows]
        else:
            bad = long_problems[rule_out.source].bad
            outside = long_skips[rule_out.source].get("outside the sample")
            ok = ~bad[rule_out.rows]
            if outside is not None:
                ok &= ~outside[rule_out.rows]
            long_used[rule_out.source][rule_out.rows[ok]] = True
        part = pd.DataFrame({name: np.asarray(values)[ok] for name, values in rule_out.columns.items()})
        (activity_parts if rule_out.table == "activities" else stage_parts).append(part)
        rule_reports.append(
            RuleReport(
                rule=rule_out.rule,
                table=rule_out.table,
                source=rule_out.source,
                rows_written=int(ok.sum()),
                not_applicable=dict(rule_out.not_applicable),
            )
        )
        for reason, mask in rule_out.skip_masks.items():
            if not in_lead_rows:
                skips = long_skips[rule_out.source]
                skips[reason] = skips.get(reason, np.zeros(len(mask), dtype=bool)) | mask
    activities_table = _events_table(
        activity_parts, ("lead_id", "occurred_at", "activity_type", "channel", "campaign_id", "topic", "value")
    )
    stages_table = _events_table(stage_parts, ("lead_id", "stage", "entered_at"))

    # -- accounting -------------------------------------------------------------------------------
    reports: dict[str, SourceReport] = {}
    rejects: dict[str, pd.DataFrame] = {}
    reports[lead_source.name] = _source_report(lead_source, "leads", lead_problems, keep_leads, {})
    rejects[lead_source.name] = _rejects_frame(lead_source.frame, lead_problems)
    for join in mapping.joins:
        joined = sources[join.source]
        problems = join_problems[join.source]
        indexer = cols.indexers[join.source]
        used = np.zeros(len(joined.frame), dtype=bool)
        used[indexer[(indexer >= 0) & keep_leads]] = True
        used &= ~problems.bad
        skips = dict(join_skips[join.source])
        referred = np.zeros(len(joined.frame), dtype=bool)
        referred[indexer[indexer >= 0]] = True
        skips["only rejected leads refer to it"] = referred & ~used & ~problems.bad
        reports[join.source] = _source_report(joined, "join", problems, used, skips)
        rejects[join.source] = _rejects_frame(joined.frame, problems)
    for name, problems in long_problems.items():
        source = sources[name]
        used = long_used[name] & ~problems.bad
        skips = {reason: mask & ~problems.bad & ~used for reason, mask in long_skips[name].items()}
        reports[name] = _source_report(source, "events", problems, used, skips)
        rejects[name] = _rejects_frame(source.frame, problems)

    activity_types = mapping.activity_type_names()
    topics = mapping.topic_names()
    try:
        contract = Contract(
            name=mapping.name,
            mode=mapping.mode,
            attributes=attributes,
            activity_types=activity_types,
            topics=topics,
            stages=mapping.stage_spec(),
            timezone=tz,
            excluded_columns=excluded,
        )
    except ValidationError as exc:
        raise MappingError(
            f"{mapping_path}: the mapping yields an invalid data contract:\n{format_validation_error(exc)}"
        ) from exc
    _check_feature_names(contract, mapping_path)
    return _Built(
        tables={"leads": leads_table, "activities": activities_table, "stage_history": stages_table},
        contract=contract,
        sources=reports,
        rules=rule_reports,
        rejects=rejects,
    )


def _duplicate_messages(key: str, values: list[Any], firsts: np.ndarray) -> Callable[[np.ndarray], list[str]]:
    def describe(positions: np.ndarray) -> list[str]:
        return [
            f"{key} '{v}' is a duplicate of row {r + 1} (a joined source needs one row per key)"
            for v, r in zip(values, firsts, strict=True)
        ]

    return describe


def _value_message(template: str) -> Callable[[Any], str]:
    """A per-value reason: ``template`` with ``{value}`` replaced by the value as shown in reasons."""
    return lambda value: template.replace("{value}", _show(value))


def _first_rows(values: pd.Series, first: np.ndarray, wanted: list[Any]) -> np.ndarray:
    """Row of the first occurrence (rows flagged in ``first``) of each value in ``wanted``."""
    rows = np.flatnonzero(first)
    return rows[pd.Index(values.to_numpy(dtype=object)[rows]).get_indexer(pd.Index(wanted, dtype=object))]


def _lead_values(cols: _Columns, column: str, source: str, lead_frame: pd.DataFrame) -> pd.Series:
    """A column of the lead rows (from the lead source or a joined source), aligned with the lead rows."""
    if source == cols.lead_sources[0]:
        return lead_frame[column].astype(STR_DTYPE).reset_index(drop=True)
    indexer = cols.indexers[source]
    right = cols.sources[source].frame[column].astype(STR_DTYPE)
    taken = right.array.take(indexer, allow_fill=True)
    return pd.Series(taken, dtype=STR_DTYPE)


def _column_reader(cols: _Columns, source: str, lead_frame: pd.DataFrame) -> Callable[[str], pd.Series]:
    """Columns of ``source`` row by row: aligned with the lead rows for lead sources, else as read."""
    if source in cols.lead_sources:
        return lambda column: _lead_values(cols, column, source, lead_frame)
    frame = cols.sources[source].frame
    return lambda column: frame[column].astype(STR_DTYPE)


def _label_rule(
    label: LabelConfig,
    source: str,
    cols: _Columns,
    lead_frame: pd.DataFrame,
    created_utc: np.ndarray,
    problems: _RowProblems,
) -> _Rule:
    text = _lead_values(cols, label.column, source, lead_frame)
    present = text.notna().to_numpy(dtype=bool)
    positive = text.isin(label.positive).to_numpy(dtype=bool)
    if label.negative is None:
        negative = present & ~positive
    else:
        negative = text.isin(label.negative).to_numpy(dtype=bool)
        unmapped = present & ~positive & ~negative
        problems.add_per_value(
            f"unmapped_value:{label.column}",
            unmapped,
            text,
            lambda v: (
                f"{_label(source, label.column)} {_show(v)} is neither a positive {label.positive} nor a negative "
                f"{label.negative} outcome value"
            ),
        )
    rows = np.flatnonzero(positive | negative)
    stage = np.where(positive[rows], SINGLE_SNAPSHOT_STAGES.converted, SINGLE_SNAPSHOT_STAGES.closed_negative[0])
    out = _Rule(
        rule="label",
        table="stage_history",
        source=source,
        rows=rows,
        columns={"stage": stage.astype(object), "entered_at": created_utc[rows]},
    )
    if (~present).any():
        out.not_applicable[f"{label.column} missing: lead left open (unlabelled)"] = int((~present).sum())
    return out


def _event_rule(
    where: str,
    rule: ActivityConfig | StageEventConfig,
    values: Callable[[str], pd.Series],
    n_rows: int,
    problems: _RowProblems,
    tz: str,
    file: Path,
    created_utc: np.ndarray | None,
) -> _Rule:
    """Output rows of an activity or stage rule; ``created_utc`` is given for rules over the lead rows."""
    source = rule.source
    applies = np.ones(n_rows, dtype=bool)
    out = _Rule(
        rule=where,
        table="activities" if isinstance(rule, ActivityConfig) else "stage_history",
        source=source,
        rows=np.empty(0, dtype=np.int64),
        columns={},
    )

    def mapped(value: ConstantValue | ColumnValue, kind: str) -> np.ndarray:
        nonlocal applies
        if isinstance(value, ConstantValue):
            return np.full(n_rows, value.value, dtype=object)
        text = values(value.column)
        label = _label(source, value.column)
        if value.values is None:
            result = text
        else:
            result, unmapped = _translate(text, value.values)
            problems.add_per_value(
                f"unmapped_value:{label}",
                unmapped,
                text,
                lambda v: f"{label} {_show(v)} is not in the {kind} value map of {where} (map it, or to null)",
            )
            to_none = text.notna().to_numpy(dtype=bool) & ~unmapped & result.isna().to_numpy(dtype=bool)
            if to_none.any():
                for raw, count in text[to_none].value_counts().items():
                    out.not_applicable[f"{label} {raw!r} maps to no {kind}"] = int(count)
                out.skip_masks[f"{where}: {kind} mapped to null"] = to_none
            applies &= ~to_none
        return result.to_numpy(dtype=object)

    if isinstance(rule, ActivityConfig):
        kind_values = mapped(rule.type, "activity type")
    else:
        kind_values = mapped(rule.stage, "stage")
    time_column = str(rule.time.column)
    text = values(time_column)
    time_label = _label(source, time_column)
    times = _parse_times(text, rule.time.format, tz, time_label, problems, file=file)
    if rule.skip_if_time_missing:
        skip = times.missing & applies
        if skip.any():
            out.not_applicable[f"{time_label} missing (skip_if_time_missing)"] = int(skip.sum())
            out.skip_masks[f"{where}: {time_column} missing"] = skip
        applies &= ~times.missing
    columns: dict[str, Any] = {}
    if isinstance(rule, ActivityConfig):
        columns["activity_type"] = kind_values
        columns["occurred_at"] = times.values
        none = np.full(n_rows, None, dtype=object)
        columns["channel"] = values(rule.channel).to_numpy(dtype=object) if rule.channel else none
        columns["campaign_id"] = values(rule.campaign).to_numpy(dtype=object) if rule.campaign else none
        columns["topic"] = mapped(rule.topic, "topic") if rule.topic is not None else none
        columns["value"] = (
            _parse_numbers(values(rule.value), _label(source, rule.value), problems)
            if rule.value
            else np.full(n_rows, np.nan)
        )
    else:
        columns["stage"] = kind_values
        columns["entered_at"] = times.values
        if created_utc is not None:
            # A stage entry before the lead's own created time in the same row is a contradiction: the lead
            # would look unconverted if only the entry were dropped, so the lead row is rejected.
            early = applies & ~np.isnat(times.values) & ~np.isnat(created_utc) & (times.values < created_utc)
            if early.any():
                created_text = pd.DatetimeIndex(created_utc[early]).strftime("%Y-%m-%dT%H:%M:%SZ")
                entry_text = pd.DatetimeIndex(times.values[early]).strftime("%Y-%m-%dT%H:%M:%SZ")
                stages = kind_values[early]
                problems.add(
                    "stage_before_created",
                    early,
                    lambda pos: [
                        f"{where}: stage '{s}' at {time_label} {e} is before the lead's created time {c}"
                        for s, e, c in zip(stages, entry_text, created_text, strict=True)
                    ],
                )
    rows = np.flatnonzero(applies)
    out.rows = rows
    out.columns = {k: v[rows] for k, v in columns.items()}
    return out


def _frame(columns: dict[str, Any], keep: np.ndarray) -> pd.DataFrame:
    out: dict[str, Any] = {}
    for name, values in columns.items():
        if isinstance(values, pd.Series):
            out[name] = values[keep].reset_index(drop=True)
        elif isinstance(values, np.ndarray) and values.dtype.kind == "M":
            out[name] = _utc(values[keep])
        else:
            out[name] = np.asarray(values)[keep]
    return pd.DataFrame(out)


def _utc(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values.astype(f"datetime64[{TIME_UNIT}]")).tz_localize("UTC"))


def _events_table(parts: list[pd.DataFrame], columns: Sequence[str]) -> pd.DataFrame:
    frames = [p for p in parts if len(p)]
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({c: [] for c in columns})
    out: dict[str, Any] = {}
    for column in columns:
        values = data[column] if column in data.columns else pd.Series([None] * len(data))
        if column in ("occurred_at", "entered_at"):
            out[column] = _utc(np.asarray(values, dtype=f"datetime64[{TIME_UNIT}]"))
        elif column == "value":
            out[column] = pd.to_numeric(values, errors="raise").astype("float64")
        else:
            out[column] = pd.Series(values, dtype=object).astype(STR_DTYPE)
    return pd.DataFrame(out)


def _source_report(
    source: _Source, role: str, problems: _RowProblems, used: np.ndarray, skips: dict[str, np.ndarray]
) -> SourceReport:
    n = len(source.frame)
    taken = used | problems.bad
    skipped = np.zeros(n, dtype=bool)
    counts: dict[str, int] = {}
    for reason, mask in skips.items():
        mask = mask & ~taken & ~skipped
        if mask.any():
            counts[reason] = int(mask.sum())
            skipped |= mask
    leftover = ~(taken | skipped)
    if leftover.any():
        # Rows of an event source that no rule turned into a row and no rule skipped explicitly.
        counts["produced no entry"] = int(leftover.sum())
        skipped |= leftover
    return SourceReport(
        name=source.name,
        path=source.path,
        role=role,
        rows_read=n,
        rows_used=int(used.sum()),
        rows_skipped=int(skipped.sum()),
        rows_rejected=int(problems.bad.sum()),
        rejected=problems.reason_counts(),
        skipped=counts,
    )


def _rejects_frame(frame: pd.DataFrame, problems: _RowProblems) -> pd.DataFrame:
    positions, reasons = problems.reasons()
    out = frame.iloc[positions].reset_index(drop=True)
    out = out.rename(columns={c: f"original_{c}" for c in ("source_row", "reason") if c in out.columns})
    out.insert(0, "source_row", pd.Series(positions + 1, dtype=np.int64))
    out["reason"] = pd.Series(reasons, dtype=STR_DTYPE)
    return out


def _check_feature_names(contract: Contract, mapping_path: Path) -> None:
    from features.config import FeatureConfig

    try:
        if contract.mode == "single_snapshot":
            from features.single_snapshot import single_snapshot_spec

            single_snapshot_spec(contract, FeatureConfig())
        else:
            from features.build import feature_names

            feature_names(contract, FeatureConfig())
    except ValueError as exc:
        raise MappingError(f"{mapping_path}: {exc}") from exc


# ============================================================================================
# Writing the data directory
# ============================================================================================
def _check_out_dir(out_dir: Path, sources: Iterable[_Source], source_dir: Path) -> None:
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
        name: _read_source(
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
    built = _build(mapping, mapping_file, sources, sample_rows)
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
