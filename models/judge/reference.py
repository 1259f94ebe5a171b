"""The drift reference: which of the champion's training rows a scored population is compared with.

Lives in ``models`` because training logs it with the run (``monitoring/reference_rows.parquet``, see
:mod:`models.package.tracking`); :mod:`serving.monitoring.drift` re-exports it and compares against it.
"""

from __future__ import annotations

import pandas as pd


def reference_population(
    training_rows: pd.DataFrame,
    *,
    last_snapshots: int = 4,
    max_rows: int | None = 50_000,
    seed: int = 0,
) -> pd.DataFrame:
    """The like-with-like reference: the champion's training snapshots at its last ``last_snapshots`` as-of dates.

    ``training_rows`` are the readiness *training* rows of the champion (``lead_id``, ``as_of`` and the
    features), i.e. every lead open at each training as-of date. Keeping the newest dates keeps the
    reference close in time (the open population ages as the data grows); several dates smooth the
    week-to-week noise of one snapshot. At most ``max_rows`` rows are kept (a seeded sample, so the same
    training rows always give the same reference). Rows are returned sorted by (``as_of``, ``lead_id``).

    Single-snapshot training data (one row per lead, each at its own as-of) has no snapshot dates to
    choose from: every row is kept (then sampled).
    """
    if "as_of" not in training_rows.columns:
        raise ValueError("training rows lack the 'as_of' column (the snapshot date of each row)")
    if last_snapshots < 1:
        raise ValueError(f"last_snapshots must be at least 1, got {last_snapshots}")
    frame = training_rows
    dates = pd.DatetimeIndex(frame["as_of"].unique()).sort_values()
    per_date = len(frame) / max(len(dates), 1)
    if per_date > 1.5:  # a snapshot history (many leads per date), not one row per lead
        frame = frame[frame["as_of"].isin(dates[-last_snapshots:])]
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.sample(n=max_rows, random_state=seed)
    sort = [c for c in ("as_of", "lead_id") if c in frame.columns]
    return frame.sort_values(sort).reset_index(drop=True)
