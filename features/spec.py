"""Description of a feature table: which columns are ids, features (by kind) and labels."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from features.io import read_table_metadata, write_table

SPEC_METADATA_KEY = "leadscore.feature_spec"

ID_COLUMNS = ("lead_id", "as_of")
# converted: conversion within (as_of, as_of + horizon]; days_to_conversion: days from as_of to
# the first conversion after it (any time, NaN if none observed); observed_days: days of data
# after as_of (labels whose window is longer than this are censored).
LABEL_COLUMNS = ("converted", "days_to_conversion", "observed_days")


@dataclass
class FeatureSpec:
    """Which columns of a feature table are features, of which kind, and how labels were made."""

    categorical: list[str]
    numeric: list[str]
    horizon_days: int
    windows_days: list[int] = field(default_factory=lambda: [7, 30, 90])
    trend_window_days: int = 30
    contract_name: str = ""
    version: int = 1
    # "history": one row per (lead, as_of) snapshot (features.build); "single_snapshot": one row per lead
    # labelled by its final outcome (features.single_snapshot), for which a temporal split is impossible.
    mode: str = "history"

    @property
    def features(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls(**json.loads(text))


def write_feature_table(df: pd.DataFrame, spec: FeatureSpec, path: str | Path) -> Path:
    """Write a feature table with its spec embedded in the Parquet metadata (atomic)."""
    missing = [c for c in (*ID_COLUMNS, *spec.features) if c not in df.columns]
    if missing:
        raise ValueError(f"feature table lacks columns named by its spec: {missing}")
    return write_table(df, path, metadata={SPEC_METADATA_KEY: spec.to_json()})


def read_feature_spec(path: str | Path) -> FeatureSpec:
    """The spec embedded in a feature table written by :func:`write_feature_table` (no row is read)."""
    meta = read_table_metadata(path)
    if SPEC_METADATA_KEY not in meta:
        raise ValueError(f"{path}: not a leadscore feature table (no {SPEC_METADATA_KEY} metadata)")
    return FeatureSpec.from_json(meta[SPEC_METADATA_KEY])


def read_feature_table(path: str | Path) -> tuple[pd.DataFrame, FeatureSpec]:
    """Read a feature table written by :func:`write_feature_table`."""
    spec = read_feature_spec(path)
    return pd.read_parquet(path), spec
