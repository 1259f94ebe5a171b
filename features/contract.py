"""The prospect-history data contract.

A data directory holds three tables (``leads``, ``activities``, ``stage_history``) as CSV or
Parquet, plus a ``contract.yaml`` that declares what the tables mean: which lead attributes
exist and their kind, the activity types and topics, and the ordered funnel stages. The
contract travels with the data (the simulator and the importer write it), so the same data
directory is self-describing for ``features``, ``train``, ``score`` and ``serve``.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from features.errors import ContractError
from features.io import atomic_write_text
from features.yamlfile import read_yaml_mapping

CONTRACT_FILE = "contract.yaml"
CONTRACT_VERSION = 1

TABLES = ("leads", "activities", "stage_history")

#: ``history``: leads with timed activities and stage entries (point-in-time snapshots).
#: ``single_snapshot``: one observation per lead and its final outcome (see features/single_snapshot.py).
Mode = Literal["history", "single_snapshot"]
MODES: tuple[str, ...] = get_args(Mode)
#: Why a source column is excluded from the data set (``excluded_columns[].reason``).
ExclusionReason = Literal["leaky", "post_outcome", "identifier", "outcome", "unused"]
EXCLUSION_REASONS: tuple[str, ...] = get_args(ExclusionReason)
#: Exclusion reasons that mean "known only after, or because of, the outcome".
POST_OUTCOME_REASONS = ("leaky", "post_outcome", "outcome")

# Columns every table must have, and optional columns it may have. Lead attributes are
# declared per data set in the contract.
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "leads": ("lead_id", "created_at"),
    "activities": ("lead_id", "occurred_at", "activity_type"),
    "stage_history": ("lead_id", "stage", "entered_at"),
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "leads": (),
    "activities": ("channel", "campaign_id", "topic", "value"),
    "stage_history": (),
}
TIME_COLUMNS: dict[str, str] = {
    "leads": "created_at",
    "activities": "occurred_at",
    "stage_history": "entered_at",
}

_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"


def check_timezone(value: str) -> str:
    """``value`` if it names an IANA time zone, else a ValueError naming it (for pydantic validators)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone '{value}'") from exc
    return value


def check_encoding(value: str) -> str:
    """``value`` if Python knows the text encoding, else a ValueError naming it (for pydantic validators)."""
    try:
        codecs.lookup(value)
    except LookupError as exc:
        raise ValueError(f"unknown text encoding '{value}' (e.g. utf-8, latin-1, cp1252)") from exc
    return value


class AttributeSpec(BaseModel):
    """One static lead attribute (a column of ``leads``) used as a feature."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME_PATTERN)
    kind: Literal["categorical", "numeric"]
    description: str = ""

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in REQUIRED_COLUMNS["leads"]:
            raise ValueError(f"'{value}' is a required leads column, not an attribute")
        return value


class StageSpec(BaseModel):
    """The funnel: ordered stages, the conversion stage and the negative terminal stages."""

    model_config = ConfigDict(extra="forbid")

    order: list[str] = Field(
        default_factory=lambda: ["new", "mql", "sql", "opportunity", "won", "lost", "disqualified"],
        min_length=2,
    )
    converted: str = "won"
    closed_negative: list[str] = Field(default_factory=lambda: ["lost", "disqualified"])

    @model_validator(mode="after")
    def _consistent(self) -> StageSpec:
        if len(set(self.order)) != len(self.order):
            raise ValueError(f"stages.order has duplicates: {self.order}")
        if self.converted not in self.order:
            raise ValueError(f"stages.converted '{self.converted}' is not in stages.order {self.order}")
        unknown = [s for s in self.closed_negative if s not in self.order]
        if unknown:
            raise ValueError(f"stages.closed_negative {unknown} are not in stages.order {self.order}")
        if self.converted in self.closed_negative:
            raise ValueError("the conversion stage cannot also be a negative terminal stage")
        return self

    @property
    def terminal(self) -> list[str]:
        """Stages that close a lead: the conversion stage and the negative ones."""
        return [self.converted, *self.closed_negative]

    @property
    def open_stages(self) -> list[str]:
        return [s for s in self.order if s not in self.terminal]


class ExcludedColumn(BaseModel):
    """A column of the original export that is deliberately left out of the data set, and why.

    ``name`` is the feature name the column would have had; no attribute may carry it, so a declared
    leaky or post-outcome column can never come back as a feature by editing the attributes.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME_PATTERN)
    reason: ExclusionReason
    column: str = Field(default="", description="the column as named in the export")
    source: str = Field(default="", description="the export file it comes from")
    note: str = ""


class Contract(BaseModel):
    """What a prospect-history data directory contains (``contract.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = CONTRACT_VERSION
    name: str = "prospect-history"
    mode: Mode = Field(
        default="history",
        description=(
            "history: point-in-time snapshots from timed activities and stage entries; single_snapshot: one row "
            "per lead from its attributes, labelled by its final outcome (a terminal stage entry)"
        ),
    )
    attributes: list[AttributeSpec] = Field(default_factory=list)
    activity_types: list[str] = Field(
        default_factory=list, description="at least one in history mode (the point-in-time features need one)"
    )
    topics: list[str] = Field(default_factory=list)
    stages: StageSpec = Field(default_factory=StageSpec)
    timezone: str = Field(
        default="UTC",
        description="Time zone of timestamps written without an offset; all times are stored in UTC.",
    )
    ignore_columns: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Columns present in a table that are deliberately not used (per table).",
    )
    excluded_columns: list[ExcludedColumn] = Field(
        default_factory=list,
        description="Export columns left out of the data set with the reason (leaky, post-outcome, ...).",
    )
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of the CSV tables (a Python codec name: utf-8, latin-1, cp1252, ...). A UTF-8 "
        "byte-order mark is accepted either way. Parquet tables are not affected.",
    )
    delimiter: str = Field(
        default=",",
        description="Field delimiter of the CSV tables: one character, e.g. ';' for exports of European spreadsheets.",
    )

    @field_validator("version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != CONTRACT_VERSION:
            raise ValueError(f"contract version {value} is not supported (expected {CONTRACT_VERSION})")
        return value

    @field_validator("activity_types", "topics")
    @classmethod
    def _unique_names(cls, values: list[str]) -> list[str]:
        import re

        bad = [v for v in values if not re.match(_NAME_PATTERN, v)]
        if bad:
            raise ValueError(f"names must match {_NAME_PATTERN} (they become feature names): {bad}")
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate names: {values}")
        return values

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        return check_timezone(value)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        return check_encoding(value)

    @field_validator("delimiter")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1 or value in ('"', "\n", "\r"):
            raise ValueError(f"delimiter must be one character other than a quote or a line break, got {value!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        if self.mode == "history" and not self.activity_types:
            raise ValueError(
                "activity_types must name at least one activity type in history mode (the point-in-time "
                "features count activities per type); only mode: single_snapshot may have none"
            )
        names = [a.name for a in self.attributes]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate attribute names: {names}")
        excluded = {e.name: e for e in self.excluded_columns}
        clash = [n for n in names if n in excluded]
        if clash:
            details = "; ".join(
                f"'{n}' (excluded as {excluded[n].reason}{': ' + excluded[n].note if excluded[n].note else ''})"
                for n in clash
            )
            raise ValueError(
                f"attribute(s) {details} are declared in excluded_columns: an excluded column is never used as a "
                "feature. Remove the attribute, or remove the exclusion if the column is known before the outcome."
            )
        unknown_tables = set(self.ignore_columns) - set(TABLES)
        if unknown_tables:
            raise ValueError(f"ignore_columns names unknown tables {sorted(unknown_tables)}; tables are {TABLES}")
        return self

    @property
    def categorical_attributes(self) -> list[str]:
        return [a.name for a in self.attributes if a.kind == "categorical"]

    @property
    def numeric_attributes(self) -> list[str]:
        return [a.name for a in self.attributes if a.kind == "numeric"]

    @property
    def post_outcome_columns(self) -> list[str]:
        """Names of excluded columns known only after (or because of) the outcome: never features."""
        return [e.name for e in self.excluded_columns if e.reason in POST_OUTCOME_REASONS]

    def expected_columns(self, table: str) -> tuple[set[str], set[str]]:
        """Required and allowed columns of ``table`` under this contract."""
        required = set(REQUIRED_COLUMNS[table])
        allowed = required | set(OPTIONAL_COLUMNS[table]) | set(self.ignore_columns.get(table, []))
        if table == "leads":
            required |= {a.name for a in self.attributes}
            allowed |= required
        return required, allowed

    # -- files ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> Contract:
        """Read and validate a contract YAML file, with errors that name the file and field."""
        path = Path(path)
        if path.is_dir():
            path = path / CONTRACT_FILE
        if not path.exists():
            raise ContractError(
                f"{path}: no data contract found. A data directory needs a {CONTRACT_FILE} declaring its "
                "attributes, activity types, topics and stages (see docs/data-contract.md)."
            )
        raw = read_yaml_mapping(path.read_text(encoding="utf-8"), str(path), ContractError)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ContractError(f"{path}: invalid data contract:\n{_format_errors(exc)}") from exc

    def dump(self, path: str | Path) -> Path:
        """Write the contract as YAML (atomically)."""
        path = Path(path)
        if path.is_dir():
            path = path / CONTRACT_FILE
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
        atomic_write_text(path, text)
        return path


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  - {where}: {err['msg']}")
    return "\n".join(lines)


def format_validation_error(exc: ValidationError) -> str:
    """Pydantic errors as one line per field: ``path.to.field: message``."""
    return _format_errors(exc)
