"""Fixed stratified train / valid / test split by lead, for data without a usable time order.

Single-snapshot data (one row per lead with its final outcome, see :mod:`features.single_snapshot`) has
no snapshot dates to split on, so :func:`models.fit.split.temporal_split` cannot apply. This split is the
honest alternative: a seeded random split **by lead** (no lead is in two parts, so a data set with
several rows per lead cannot leak a lead's label across parts), **stratified** by the lead's label (the
converted share is the same in every part, up to rounding), and **fixed** (the same seed and data give
the same split, so metrics of different models and runs compare on the same test leads).

Rows whose label is censored (``observed_days < horizon_days``; for single-snapshot data, the leads
without a known outcome) are left out first, as in the temporal split. A lead's stratum is 1 if any of
its usable rows converted. Within each stratum, leads are ordered by id and shuffled with
``numpy.random.default_rng(seed)``; the first ``round(test_fraction * n)`` go to test, the next
``round(valid_fraction * n)`` to valid, the rest to train (the fractions come from ``split`` of the
training config). The result is the same :class:`~models.fit.split.Split` as the temporal split, with
``valid_strategy = test_strategy = "stratified"``, no gap and no stage split (the stage model needs time to
conversion).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from models.config import SplitConfig, TrainConfig
from models.fit.split import READINESS_TARGET, InsufficientDataError, Split, TaskSplit, check_feature_frame

__all__ = ["STRATIFIED", "stratified_split"]

STRATIFIED = "stratified"


def _split_config(config: Any) -> tuple[SplitConfig, int | None]:
    if isinstance(config, TrainConfig):
        return config.split, config.seed
    if isinstance(config, SplitConfig):
        return config, None
    raise TypeError(f"expected a TrainConfig or SplitConfig, got {type(config).__name__}")


def _dates(frame: pd.DataFrame) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(frame["as_of"].unique()).sort_values()


def stratified_split(
    df: pd.DataFrame,
    config: TrainConfig | SplitConfig,
    *,
    seed: int | None = None,
    horizon_days: int,
) -> Split:
    """Split a feature table into train / valid / test leads, stratified by label (see the module docstring).

    Args:
        df: feature table with ``lead_id``, ``as_of``, features and the label columns.
        config: the training config (its ``split`` fractions and ``seed``) or just a ``SplitConfig``.
        seed: seeds the shuffle; defaults to ``config.seed`` (required with a bare ``SplitConfig``).
        horizon_days: rows with ``observed_days`` below it are censored and left out.

    Raises:
        InsufficientDataError: no usable row, a single class, or a part that would get no lead of a class.
        ValueError: malformed id/label columns.
    """
    check_feature_frame(df)
    split_config, config_seed = _split_config(config)
    seed = config_seed if seed is None else seed
    if seed is None:
        raise ValueError("give seed= when passing a bare SplitConfig")
    usable_mask = df["observed_days"].to_numpy(dtype=np.float64) >= horizon_days
    usable = df.loc[usable_mask]
    n_censored = int((~usable_mask).sum())
    if len(usable) == 0:
        raise InsufficientDataError(
            f"no row has an observed label: all {len(df)} rows have observed_days below the {horizon_days}-day "
            "horizon (for single-snapshot data: no lead has a known outcome)"
        )

    lead_label = usable.groupby(usable["lead_id"].astype(str), sort=True)[READINESS_TARGET].max()
    rng = np.random.default_rng(seed)
    parts: dict[str, set[str]] = {"train": set(), "valid": set(), "test": set()}
    for label in (0, 1):
        leads = lead_label.index[lead_label.to_numpy() == label].to_numpy(dtype=object)
        name = "converted" if label else "non-converted"
        if len(leads) == 0:
            raise InsufficientDataError(
                f"no {name} lead among the {len(lead_label)} leads with an observed label: a classifier needs both"
            )
        shuffled = leads[rng.permutation(len(leads))]
        n_test = round(split_config.test_fraction * len(leads))
        n_valid = round(split_config.valid_fraction * len(leads))
        if n_test == 0 or n_valid == 0 or n_test + n_valid >= len(leads):
            raise InsufficientDataError(
                f"too few {name} leads ({len(leads)}) for a stratified split with test_fraction "
                f"{split_config.test_fraction} and valid_fraction {split_config.valid_fraction}: every part needs "
                "at least one. Provide more leads."
            )
        parts["test"].update(shuffled[:n_test].tolist())
        parts["valid"].update(shuffled[n_test : n_test + n_valid].tolist())
        parts["train"].update(shuffled[n_test + n_valid :].tolist())

    lead_text = usable["lead_id"].astype(str)
    frames = {part: usable.loc[lead_text.isin(leads).to_numpy()] for part, leads in parts.items()}
    note = (
        f"fixed stratified split by lead (seed {seed}): {len(parts['train'])} train, {len(parts['valid'])} valid and "
        f"{len(parts['test'])} test leads with the same converted share; the data has no time order to split on, "
        "so test metrics assume future leads resemble past ones"
    )
    readiness = TaskSplit(
        task="readiness",
        train=frames["train"],
        valid=frames["valid"],
        test=frames["test"],
        label_window_days=horizon_days,
        gap_days=0,
        train_dates=_dates(frames["train"]),
        valid_dates=_dates(frames["valid"]),
        test_dates=_dates(frames["test"]),
        n_censored=n_censored,
        n_in_gaps=0,
        valid_strategy=STRATIFIED,
        test_strategy=STRATIFIED,
        note=note,
    )
    return Split(readiness=readiness, stage=None, stage_labels=[])
