"""Temporal train / valid / test split of a snapshot feature table, per task.

Never a random row split: the same lead appears in many snapshots, so rows are split by snapshot date
(``as_of``) and separated by gaps so that no label window of an earlier part overlaps a later part.

Readiness (label window = the horizon ``h``)
    Only rows whose label is fully observed (``observed_days >= h``) are usable. Over the usable dates:
    test = the newest dates; valid = the newest dates ``d`` with ``d + gap < first test date``; train =
    the dates ``d`` with ``d + gap < first valid date``. ``gap`` defaults to ``h`` and may not be smaller,
    so ``max(train as_of) + h < min(valid as_of)`` and ``max(valid as_of) + h < min(test as_of)``: every
    train label is settled before the first valid snapshot, every valid label before the first test one.

Stage (label window = the largest finite bucket bound ``L``, 365 days by default)
    A bucket label needs ``L`` days observed after ``as_of``: a snapshot with less cannot tell
    ``awareness`` from ``not_in_market`` (a conversion may still come). Taking the determined labels of
    such snapshots (only the converted ones) would bias the model towards conversion, so the stage model
    only uses snapshots with ``observed_days >= L`` (with a recorded stage column, ``L`` = 0). These are
    the older snapshots, so stage has its own dates: test = the newest usable dates, train = dates ``d``
    with ``d + stage_gap < first test date`` (``stage_gap`` defaults to ``L``), and valid (early stopping
    only) = a seeded share of the train-period *leads* held out, not extra dates, because a second gap of
    ``L`` would need years of history. If the history is too short for a later stage test period, the
    stage test set is a seeded ``test_fraction`` of the *leads* instead (``test_strategy="lead_holdout"``:
    no lead is in both, but the periods overlap) and :attr:`TaskSplit.note` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.spec import ID_COLUMNS, LABEL_COLUMNS
from models.config import TrainConfig
from models.fit.stage import STAGE_TARGET, recorded_stage_labels, stage_labels

READINESS_TARGET = "converted"


class InsufficientDataError(ValueError):
    """The data cannot support an honest model or evaluation (the message says what is missing and what to do)."""


@dataclass(frozen=True)
class TaskSplit:
    """Train / valid / test frames of one task, with the dates and gap that separate them."""

    task: str
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    label_window_days: int
    gap_days: int
    train_dates: pd.DatetimeIndex
    valid_dates: pd.DatetimeIndex
    test_dates: pd.DatetimeIndex
    n_censored: int
    n_in_gaps: int
    valid_strategy: str
    test_strategy: str = "temporal"
    note: str = ""

    @property
    def has_test(self) -> bool:
        return len(self.test) > 0

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description (row counts, date ranges, gap) for run metadata."""

        def span(dates: pd.DatetimeIndex) -> list[str] | None:
            return [dates.min().isoformat(), dates.max().isoformat()] if len(dates) else None

        out: dict[str, Any] = {
            "task": self.task,
            "label_window_days": self.label_window_days,
            "gap_days": self.gap_days,
            "valid_strategy": self.valid_strategy,
            "test_strategy": self.test_strategy,
            "rows_censored_dropped": self.n_censored,
            "rows_in_gaps_unused": self.n_in_gaps,
            "note": self.note,
        }
        for part in ("train", "valid", "test"):
            frame: pd.DataFrame = getattr(self, part)
            dates: pd.DatetimeIndex = getattr(self, f"{part}_dates")
            out[f"{part}_rows"] = len(frame)
            out[f"{part}_leads"] = int(frame["lead_id"].nunique()) if len(frame) else 0
            out[f"{part}_dates"] = len(dates)
            out[f"{part}_as_of_range"] = span(dates)
        return out


@dataclass(frozen=True)
class Split:
    """The readiness split (the main one) and the stage split (``None`` when stage is disabled)."""

    readiness: TaskSplit
    stage: TaskSplit | None
    stage_labels: list[str] = field(default_factory=list)

    @property
    def train(self) -> pd.DataFrame:
        return self.readiness.train

    @property
    def valid(self) -> pd.DataFrame:
        return self.readiness.valid

    @property
    def test(self) -> pd.DataFrame:
        return self.readiness.test

    @property
    def boundaries(self) -> dict[str, pd.Timestamp]:
        """First and last as_of of each readiness part (``train_start`` ... ``test_end``)."""
        r = self.readiness
        out = {}
        for part, dates in (("train", r.train_dates), ("valid", r.valid_dates), ("test", r.test_dates)):
            out[f"{part}_start"], out[f"{part}_end"] = dates.min(), dates.max()
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "readiness": self.readiness.summary(),
            "stage": self.stage.summary() if self.stage is not None else None,
            "stage_labels": list(self.stage_labels),
        }


# -- input checks -----------------------------------------------------------------------------------


def check_feature_frame(df: pd.DataFrame) -> None:
    """Check the id and label columns a split needs; errors name the column, row and expectation."""
    missing = [c for c in (*ID_COLUMNS, *LABEL_COLUMNS) if c not in df.columns]
    if missing:
        raise ValueError(f"feature table lacks columns {missing}; expected ids {ID_COLUMNS} and labels {LABEL_COLUMNS}")
    if not pd.api.types.is_datetime64_any_dtype(df["as_of"]):
        raise ValueError(f"feature table column 'as_of' must be a datetime (UTC), got {df['as_of'].dtype}")
    if df["as_of"].isna().any():
        raise ValueError(f"feature table column 'as_of' has a missing value (row {df.index[df['as_of'].isna()][0]})")
    if df["lead_id"].isna().any():
        raise ValueError(
            f"feature table column 'lead_id' has a missing value (row {df.index[df['lead_id'].isna()][0]})"
        )
    observed = pd.to_numeric(df["observed_days"], errors="coerce")
    bad = observed.isna() | (observed < 0)
    if bad.any():
        row = df.index[bad.to_numpy()][0]
        raise ValueError(
            f"feature table column 'observed_days' must be a number >= 0 (row {row}: {df.at[row, 'observed_days']!r})"
        )
    converted = df["converted"]
    ok = converted.isin([0, 1]) & converted.notna()
    if not ok.all():
        row = df.index[~ok.to_numpy()][0]
        raise ValueError(f"feature table column 'converted' must be 0 or 1 (row {row}: {df.at[row, 'converted']!r})")
    if df.duplicated(list(ID_COLUMNS)).any():
        row = df.index[df.duplicated(list(ID_COLUMNS)).to_numpy()][0]
        raise ValueError(f"feature table has duplicate (lead_id, as_of) rows (row {row})")


# -- date selection ---------------------------------------------------------------------------------


def _newest(dates: pd.DatetimeIndex, weeks: int | None, fraction: float, n_reference: int) -> pd.DatetimeIndex:
    """The newest dates: those within ``weeks`` of the newest one, else ``fraction`` of ``n_reference`` dates."""
    if len(dates) == 0:
        return dates
    if weeks is not None:
        return dates[dates > dates.max() - pd.Timedelta(weeks=weeks)]
    n = max(1, round(fraction * n_reference))
    return dates[-n:]


def _describe_dates(dates: pd.DatetimeIndex) -> str:
    if len(dates) == 0:
        return "none"
    span_days = (dates.max() - dates.min()).days
    return f"{len(dates)} ({dates.min().date()} to {dates.max().date()}, {span_days} days)"


def _readiness_split(df: pd.DataFrame, config: TrainConfig, horizon: int) -> TaskSplit:
    sc = config.split
    gap = horizon if sc.gap_days is None else sc.gap_days
    if gap < horizon:
        raise ValueError(
            f"split.gap_days={gap} is shorter than the label horizon ({horizon} days): train labels would "
            "overlap valid/test snapshots. Use a gap of at least the horizon (or null for the horizon)."
        )
    usable_mask = df["observed_days"].to_numpy(dtype=np.float64) >= horizon
    usable = df.loc[usable_mask]
    n_censored = int((~usable_mask).sum())
    dates = pd.DatetimeIndex(usable["as_of"].unique()).sort_values()
    test_dates = _newest(dates, sc.test_weeks, sc.test_fraction, len(dates))
    before_test = dates[dates + pd.Timedelta(days=gap) < test_dates.min()] if len(test_dates) else dates[:0]
    valid_dates = _newest(before_test, sc.valid_weeks, sc.valid_fraction, len(dates))
    train_dates = dates[dates + pd.Timedelta(days=gap) < valid_dates.min()] if len(valid_dates) else dates[:0]
    if len(train_dates) == 0:
        raise InsufficientDataError(
            "too few snapshot dates for an honest temporal split of the readiness model: "
            f"{_describe_dates(dates)} usable snapshot dates (rows with the full {horizon}-day label window "
            f"observed; {n_censored} newer rows are censored). Test takes {_describe_dates(test_dates)}, "
            f"validation {_describe_dates(valid_dates)} at least {gap} days earlier, and training needs "
            f"dates at least {gap} days before validation. Provide a longer history (more snapshot dates), "
            "a shorter horizon, or smaller train.split.test_weeks/valid_weeks (or test_fraction/valid_fraction)."
        )

    def rows(part_dates: pd.DatetimeIndex) -> pd.DataFrame:
        return usable.loc[usable["as_of"].isin(part_dates).to_numpy()]

    train, valid, test = rows(train_dates), rows(valid_dates), rows(test_dates)
    return TaskSplit(
        task="readiness",
        train=train,
        valid=valid,
        test=test,
        label_window_days=horizon,
        gap_days=gap,
        train_dates=train_dates,
        valid_dates=valid_dates,
        test_dates=test_dates,
        n_censored=n_censored,
        n_in_gaps=len(usable) - len(train) - len(valid) - len(test),
        valid_strategy="temporal",
    )


def _lead_holdout(frame: pd.DataFrame, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of rows whose lead is in a seeded ``fraction`` of the leads (at least one lead)."""
    leads = np.sort(frame["lead_id"].astype(str).unique())
    rng = np.random.default_rng(seed)
    n_hold = max(1, math.floor(fraction * len(leads))) if len(leads) > 1 else 0
    held = set(rng.choice(leads, size=n_hold, replace=False).tolist())
    return frame["lead_id"].astype(str).isin(held).to_numpy()


def _stage_split(df: pd.DataFrame, config: TrainConfig, horizon: int) -> tuple[TaskSplit, list[str]]:
    st = config.stage
    if st.use_recorded_stage_column is not None:
        labels, order = recorded_stage_labels(df, st.use_recorded_stage_column, st.recorded_stage_order, st.labels)
        window = 0
        default_gap = horizon if config.split.gap_days is None else config.split.gap_days
    else:
        labels = stage_labels(df["days_to_conversion"], df["observed_days"], st.buckets)
        order = st.labels
        window = st.label_window_days
        default_gap = window
    gap = default_gap if config.split.stage_gap_days is None else config.split.stage_gap_days
    known = np.asarray(pd.notna(labels))
    # Only snapshots with the whole label window observed: their labels are all determined, so the
    # classes keep their true mix (a recent snapshot only has a label if it converted early).
    full_window = df["observed_days"].to_numpy(dtype=np.float64) >= window
    keep = known & full_window
    usable = df.loc[keep].copy()
    usable[STAGE_TARGET] = pd.Categorical(np.asarray(labels, dtype=object)[keep], categories=order, ordered=True)
    n_censored = int((~keep).sum())
    if len(usable) == 0:
        raise InsufficientDataError(
            f"no snapshot has a determined buying-stage label: stage buckets need {window} days observed after "
            f"as_of (largest finite bucket bound) and the longest observed is {df['observed_days'].max():.0f} "
            "days. Provide a longer history, use shorter stage buckets, or set stage.enabled: false."
        )
    dates = pd.DatetimeIndex(usable["as_of"].unique()).sort_values()
    sc = config.split
    test_dates = _newest(dates, sc.test_weeks, sc.test_fraction, len(dates))
    train_dates = dates[dates + pd.Timedelta(days=gap) < test_dates.min()]
    note = ""
    test_strategy = "temporal"
    if len(train_dates) > 0:
        train_period = usable.loc[usable["as_of"].isin(train_dates).to_numpy()]
        test = usable.loc[usable["as_of"].isin(test_dates).to_numpy()]
    else:
        # No room for a later test period: test on held-out *leads* of the same period instead, and say so.
        test_strategy = "lead_holdout"
        note = (
            f"stage test uses held-out leads, not a later period: the {_describe_dates(dates)} snapshot dates "
            f"with the full {window}-day stage window observed cannot hold a test period {gap} days after a "
            "training period. Stage test metrics may be optimistic if behaviour drifts over time; a longer "
            "history gives a temporal stage test."
        )
        in_test = _lead_holdout(usable, sc.test_fraction, config.seed + 1)
        train_period, test = usable.loc[~in_test], usable.loc[in_test]
        test_dates = pd.DatetimeIndex(test["as_of"].unique()).sort_values()
    held = _lead_holdout(train_period, st.valid_fraction, config.seed)
    train, valid = train_period.loc[~held], train_period.loc[held]
    split = TaskSplit(
        task="stage",
        train=train,
        valid=valid,
        test=test,
        label_window_days=window,
        gap_days=gap,
        train_dates=pd.DatetimeIndex(train["as_of"].unique()).sort_values(),
        valid_dates=pd.DatetimeIndex(valid["as_of"].unique()).sort_values(),
        test_dates=test_dates,
        n_censored=n_censored,
        n_in_gaps=len(usable) - len(train_period) - len(test),
        valid_strategy="lead_holdout",
        test_strategy=test_strategy,
        note=note,
    )
    return split, list(order)


def temporal_split(df: pd.DataFrame, config: TrainConfig, *, horizon_days: int) -> Split:
    """Split a feature table by snapshot date for readiness and (if enabled) stage; see the module docstring.

    Args:
        df: feature table with ``lead_id``, ``as_of``, feature and label columns.
        config: training config (``split`` and ``stage`` sections are used).
        horizon_days: the readiness label horizon (``FeatureSpec.horizon_days``).

    Raises:
        InsufficientDataError: too few snapshot dates for train / valid / test with the required gaps,
            or (stage enabled) no snapshot with a determined stage label.
        ValueError: malformed id/label columns, or a gap shorter than the horizon.
    """
    check_feature_frame(df)
    readiness = _readiness_split(df, config, horizon_days)
    stage: TaskSplit | None = None
    labels: list[str] = []
    if config.stage.enabled:
        stage, labels = _stage_split(df, config, horizon_days)
    return Split(readiness=readiness, stage=stage, stage_labels=labels)
