"""The mapping file: its YAML schema (pydantic models), loading and the shipped mappings."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.contract import (
    REQUIRED_COLUMNS,
    StageSpec,
    format_validation_error,
)
from features.yamlfile import read_yaml_mapping

if TYPE_CHECKING:
    pass


MAPPING_VERSION = 1
IMPORT_REPORT_FILE = "import.json"
QUARANTINE_DIR = "quarantine"
#: Stage names written in single-snapshot mode: open (no outcome), converted, not converted.
SINGLE_SNAPSHOT_STAGES = StageSpec(order=["open", "won", "lost"], converted="won", closed_negative=["lost"])
_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"
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
