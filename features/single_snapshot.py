"""Single-snapshot features: one row per lead from its attributes, labelled by its final outcome.

Some exports hold no history at all: one row per lead with static columns, aggregate activity columns
(``TotalVisits``, ``campaign``) and a final outcome (``Converted``, ``y``). A data directory made from such
an export has ``mode: single_snapshot`` in its contract (``leadscore import`` writes it). Point-in-time
snapshots are impossible there, so this module builds the feature table instead of
:func:`features.build.build_features`, in the same shape (ids, features, the three label columns), so that
``train`` and ``score`` work unchanged.

How the outcome is encoded in the contract tables
-------------------------------------------------
The outcome is a terminal stage entry in ``stage_history``: ``contract.stages.converted`` (``won``) for a
converted lead, a ``contract.stages.closed_negative`` stage (``lost``) for a lead that did not convert, at
the lead's ``created_at`` (the export has no outcome time). A lead without a terminal entry has no known
outcome (``open``). When a lead has several entries, the latest one counts (ties: the later stage in the
contract order), as in history mode.

Rows and labels
---------------
- ``lead_id``; ``as_of`` = the lead's ``created_at`` rounded up to a whole second: the moment the export
  describes. Rows are sorted by ``lead_id``.
- Features: the contract's attributes only (static columns and aggregate activity columns; categorical as
  ``str``, numeric as ``float32``). Activities and stage entries are never features: in single-snapshot
  mode the stage entries *are* the label.
- ``converted`` = 1 for a converted lead, else 0 (int8).
- ``days_to_conversion`` = NaN: the export has no conversion time.
- ``observed_days`` = ``+inf`` for a lead with an outcome (its label is final, never censored, whatever the
  horizon) and ``0.0`` for a lead without one: it is then censored for every horizon, so training (the
  temporal split and :func:`models.fit.stratified.stratified_split`) leaves it out while ``score`` still scores
  it.

The stage (buying-stage) model needs time to conversion and cannot be trained on single-snapshot data.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.config import FeatureConfig
from features.contract import Contract
from features.history import ProspectHistory
from features.spec import ID_COLUMNS, LABEL_COLUMNS, FeatureSpec

__all__ = [
    "OPEN_OBSERVED_DAYS",
    "OUTCOME_OBSERVED_DAYS",
    "SINGLE_SNAPSHOT",
    "build_single_snapshot_features",
    "is_single_snapshot",
    "single_snapshot_spec",
]

SINGLE_SNAPSHOT = "single_snapshot"
#: observed_days of a lead with a known outcome: never censored.
OUTCOME_OBSERVED_DAYS = float("inf")
#: observed_days of a lead without an outcome: censored for every horizon (scored, not trained on).
OPEN_OBSERVED_DAYS = 0.0
FEATURE_DTYPE = np.float32


def is_single_snapshot(contract: Contract) -> bool:
    """Whether a data directory's features come from :func:`build_single_snapshot_features`."""
    return contract.mode == SINGLE_SNAPSHOT


def single_snapshot_spec(contract: Contract, config: FeatureConfig) -> FeatureSpec:
    """The :class:`FeatureSpec` of a single-snapshot feature table: the contract's attributes.

    Raises:
        ValueError: an attribute would shadow an id or label column, or the contract has no attributes.
    """
    clash = [a.name for a in contract.attributes if a.name in (*ID_COLUMNS, *LABEL_COLUMNS)]
    if clash:
        raise ValueError(
            f"attribute(s) {clash} clash with the id/label columns {[*ID_COLUMNS, *LABEL_COLUMNS]} of the feature "
            "table; rename them in the data contract (or the mapping)"
        )
    if not contract.attributes:
        raise ValueError("a single-snapshot data set needs at least one attribute: features come only from them")
    return FeatureSpec(
        categorical=contract.categorical_attributes,
        numeric=contract.numeric_attributes,
        horizon_days=config.horizon_days,
        windows_days=list(config.windows_days),
        trend_window_days=config.trend_window_days,
        contract_name=contract.name,
        mode=SINGLE_SNAPSHOT,
    )


def _outcomes(history: ProspectHistory, lead_ids: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Per lead (in ``lead_ids`` order): converted, and whether the outcome is known."""
    stages = history.contract.stages
    entries = history.stage_history
    n = len(lead_ids)
    converted = np.zeros(n, dtype=np.int8)
    known = np.zeros(n, dtype=bool)
    if not len(entries):
        return converted, known
    order = {name: i for i, name in enumerate(stages.order)}
    rank = entries["stage"].map(order)
    if rank.isna().any():
        bad = entries.loc[rank.isna(), "stage"].iloc[0]
        raise ValueError(f"stage_history.stage '{bad}' is not in the contract's stages; validate the history first")
    latest = (
        entries.assign(_rank=rank.to_numpy(dtype=np.int64))
        .sort_values(["lead_id", "entered_at", "_rank"], kind="stable")
        .drop_duplicates("lead_id", keep="last")
    )
    position = lead_ids.get_indexer(pd.Index(latest["lead_id"].to_numpy(dtype=object)))
    if (position < 0).any():
        unknown = latest["lead_id"].to_numpy(dtype=object)[position < 0][:5].tolist()
        raise ValueError(f"stage_history refers to leads missing from leads: {unknown}; validate the history first")
    stage = latest["stage"].to_numpy(dtype=object)
    is_converted = stage == stages.converted
    is_negative = np.isin(stage, stages.closed_negative)
    converted[position[is_converted]] = 1
    known[position[is_converted | is_negative]] = True
    return converted, known


def build_single_snapshot_features(
    history: ProspectHistory, config: FeatureConfig | None = None
) -> tuple[pd.DataFrame, FeatureSpec]:
    """One row per lead: attributes as features, the final outcome as the label (see the module docstring).

    Args:
        history: validated history of a ``mode: single_snapshot`` data directory.
        config: only ``horizon_days`` (recorded in the spec) is used; snapshots and windows do not apply.

    Returns:
        The feature table (``lead_id``, ``as_of``, features, ``converted``, ``days_to_conversion``,
        ``observed_days``; sorted by ``lead_id``) and its :class:`FeatureSpec` (``mode="single_snapshot"``).

    Raises:
        ValueError: the contract is not in single-snapshot mode, or the history breaks its invariants.
    """
    config = config or FeatureConfig()
    contract = history.contract
    if not is_single_snapshot(contract):
        raise ValueError(
            f"data set '{contract.name}' is in {contract.mode} mode; build its features with "
            "features.build.build_features (point-in-time snapshots)"
        )
    spec = single_snapshot_spec(contract, config)
    leads = history.leads
    if leads["lead_id"].isna().any() or not leads["lead_id"].is_unique:
        raise ValueError("leads.lead_id must be unique and present; validate the history first")
    leads = leads.sort_values("lead_id", ignore_index=True)
    lead_ids = pd.Index(leads["lead_id"].to_numpy(dtype=object))
    converted, known = _outcomes(history, lead_ids)

    created = pd.DatetimeIndex(leads["created_at"])
    created = created.tz_localize("UTC") if created.tz is None else created.tz_convert("UTC")
    columns: dict[str, object] = {
        "lead_id": leads["lead_id"].array,
        "as_of": created.as_unit("us").ceil("s"),
    }
    for name in spec.categorical:
        columns[name] = leads[name].astype("str").array
    for name in spec.numeric:
        columns[name] = leads[name].to_numpy(dtype=FEATURE_DTYPE, na_value=np.nan)
    columns["converted"] = converted
    columns["days_to_conversion"] = np.full(len(leads), np.nan, dtype=np.float64)
    columns["observed_days"] = np.where(known, OUTCOME_OBSERVED_DAYS, OPEN_OBSERVED_DAYS)
    return pd.DataFrame(columns, copy=False), spec
