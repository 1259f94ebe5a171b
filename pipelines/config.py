"""The modelling configuration: one versioned YAML file, validated by pydantic.

Each package owns the model of its own section (``features:`` -> ``features.config.FeatureConfig``,
``train:`` -> ``models.config.TrainConfig``, merged over ``models/default_config.yaml``);
this module only composes them and reports errors with the file and field.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from features.config import FeatureConfig
from features.contract import format_validation_error
from features.yamlfile import read_yaml_mapping
from models.config import TrainConfig, TrainConfigError, load_train_config, parse_train_config

CONFIG_VERSION = 1


class ConfigError(ValueError):
    """The modelling configuration file is missing or invalid."""


class ProjectConfig(BaseModel):
    """Everything about *how* to model (not *where* things live: that is ``Settings``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = CONFIG_VERSION
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    train: TrainConfig = Field(default_factory=load_train_config)

    @field_validator("version")
    @classmethod
    def _supported(cls, value: int) -> int:
        if value != CONFIG_VERSION:
            raise ValueError(f"config version {value} is not supported (expected {CONFIG_VERSION})")
        return value


def load_config(path: str | Path | None) -> ProjectConfig:
    """Read the modelling config; ``None`` means all defaults."""
    if path is None:
        return ProjectConfig()
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: config file not found")
    raw = read_yaml_mapping(path.read_text(encoding="utf-8"), str(path), ConfigError, empty_ok=True)
    train_section = raw.pop("train", None) or {}
    if not isinstance(train_section, dict):
        raise ConfigError(f"{path}: 'train' must be a mapping")
    try:
        train = parse_train_config(train_section, source=str(path))
    except TrainConfigError as exc:
        raise ConfigError(str(exc)) from exc
    try:
        return ProjectConfig.model_validate({**raw, "train": train})
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{format_validation_error(exc)}") from exc
