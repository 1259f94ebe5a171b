"""Training on a Dask cluster from a partitioned feature table (the optional ``dask`` extra).

The feature table of a partitioned data directory is one ``part-NNNNN.parquet`` per partition of leads
(:func:`features.partitioned.build_partitioned_features`). Training on it with a ``distributed.Client``
keeps the training rows on the workers and brings only what needs one machine to the client:

1. **Keys** (``lead_id``, ``as_of`` and the label columns, plus a recorded stage column if the config
   names one) of every row are read on the workers and gathered: a few columns per row. They are sorted
   as :func:`features.partitioned.read_partitioned_features` sorts the whole table, so the split
   (:func:`models.fit.split.temporal_split`, run on the keys) selects exactly the rows it selects on one
   machine, with the same index labels.
2. The **validation and test rows** (the newest snapshot dates; for stage, the held-out leads and the
   stage test dates) are pulled to the client with all their columns: early stopping, calibration,
   grade cut-offs, stage decision weights and every test metric are computed there, on the same rows as
   on one machine.
3. The **categorical encoder** is fitted from category counts computed on the workers and added up
   (:meth:`models.fit.encoding.FeatureEncoder.fit_counts`): the same categories as on one machine.
4. The **boosters** are trained with ``lightgbm.dask.DaskLGBMClassifier`` on the training rows, encoded
   on the workers (one chunk per partition), and converted to a local booster (``to_local()``).
   LightGBM's Dask interface has no early stopping (microsoft/LightGBM#3712), so the booster is trained
   for ``num_boost_round`` rounds and then cut at the iteration early stopping would have chosen: the
   validation loss of every iteration is computed on the client from the local booster, and the first
   iteration after which it did not improve for ``early_stopping_rounds`` rounds ends the search, as
   ``lightgbm.early_stopping`` does.
5. The **leakage probe and the baselines** run on a seeded stratified sample of the training rows pulled
   to the client (the probe's own sample, so the probe sees the rows it would see on one machine; the
   baselines are fitted on that sample instead of on every training row).

The registered model is then assembled, evaluated, logged and served exactly as after a single-machine
fit. This module imports Dask and LightGBM's Dask interface only inside the functions that need them.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.special import expit, log_softmax

from features.spec import ID_COLUMNS, LABEL_COLUMNS, FeatureSpec, read_feature_spec
from models.fit.encoding import FeatureEncoder, add_category_counts, category_counts

_PART, _POS = "_part", "_pos"
#: The order of a partitioned feature table read as one (features.partitioned.read_partitioned_features).
SORT_COLUMNS = ["as_of", "lead_id"]


# -- what runs on the workers (module-level functions, so they pickle by reference) ---------------------


def read_part_columns(path: str, columns: Sequence[str]) -> pd.DataFrame:
    """Some columns of one feature partition."""
    return pd.read_parquet(path, columns=list(columns))


def take_part_rows(path: str, positions: np.ndarray, columns: Sequence[str] | None) -> pd.DataFrame:
    """The rows at ``positions`` (0-based, in file order) of one feature partition."""
    frame = pd.read_parquet(path, columns=list(columns) if columns is not None else None)
    return frame.iloc[positions]


def count_part_categories(
    path: str, position_sets: Sequence[np.ndarray], columns: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Category counts of ``columns`` over each set of row positions of one partition, added up."""
    frame = pd.read_parquet(path, columns=list(columns))
    total: dict[str, dict[str, int]] = {}
    for positions in position_sets:
        if len(positions):
            add_category_counts(total, category_counts(frame.iloc[positions], columns))
    return total


def encode_part_rows(path: str, positions: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
    """The encoded feature matrix of the rows at ``positions`` of one partition."""
    frame = pd.read_parquet(path, columns=encoder.input_columns)
    return encoder.transform(frame.iloc[positions])


# -- early stopping after the fact ------------------------------------------------------------------------


def _iteration_losses(booster: lgb.Booster, X: np.ndarray, y: np.ndarray, n_classes: int) -> list[float]:
    """Validation log loss after each boosting iteration (binary or multiclass, natural log, as LightGBM's)."""
    n_iter = booster.current_iteration()
    margin = np.zeros((len(X), n_classes) if n_classes > 2 else len(X))
    losses = []
    eps = 1e-15
    for t in range(n_iter):
        margin = margin + np.asarray(booster.predict(X, raw_score=True, start_iteration=t, num_iteration=1)).reshape(
            margin.shape
        )
        if n_classes > 2:
            losses.append(float(-log_softmax(margin, axis=1)[np.arange(len(y)), y].mean()))
        else:
            p = np.clip(expit(margin), eps, 1 - eps)
            losses.append(float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()))
    return losses


def early_stopping_iteration(losses: Sequence[float], rounds: int) -> tuple[int, int]:
    """(best iteration, 1-based; iterations evaluated) as ``lightgbm.early_stopping`` would stop on ``losses``."""
    best, best_loss = 0, float("inf")
    for i, loss in enumerate(losses):
        if loss < best_loss:
            best, best_loss = i, loss
        elif i - best >= rounds:
            return best + 1, i + 1
    return best + 1, len(losses)


# -- the partitioned training rows ----------------------------------------------------------------------------


@dataclass
class DaskFeaturePartitions:
    """A partitioned feature table on a Dask cluster: its keys on the client, its rows on the workers.

    ``keys`` holds one row per feature row (ids, labels, the partition ``_part`` and the position ``_pos``
    within it), sorted and indexed as the whole table read on one machine.
    """

    client: Any
    paths: list[str]
    keys: pd.DataFrame

    @classmethod
    def open(
        cls, client: Any, features_dir: str | Path, extra_key_columns: Sequence[str] = ()
    ) -> DaskFeaturePartitions:
        """Read the keys of every ``part-NNNNN.parquet`` in ``features_dir`` (on the workers)."""
        from features.partitioned import feature_parts

        paths = [str(p) for p in feature_parts(features_dir)]
        if not paths:
            raise ValueError(f"{features_dir}: no feature partition (part-NNNNN.parquet) in it")
        columns = [*ID_COLUMNS, *LABEL_COLUMNS, *[c for c in extra_key_columns if c not in LABEL_COLUMNS]]
        futures = client.map(read_part_columns, paths, columns=columns, pure=False)
        frames = client.gather(futures)
        for i, frame in enumerate(frames):
            frame[_PART] = np.int32(i)
            frame[_POS] = np.arange(len(frame), dtype=np.int64)
        keys = pd.concat(frames, ignore_index=True)
        keys = keys.sort_values(SORT_COLUMNS, ignore_index=True, kind="stable")
        return cls(client, paths, keys)

    def spec_and_schema(self) -> tuple[FeatureSpec, pd.DataFrame]:
        """The feature spec and an empty frame with the table's columns and dtypes (the first partition's
        Parquet schema and metadata only: no row is read)."""
        path = self.paths[0]
        return read_feature_spec(path), pq.read_schema(path).empty_table().to_pandas()

    def _positions(self, index: pd.Index) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """For each partition: (positions within it, the global index labels) of the rows in ``index``."""
        sub = self.keys.loc[index, [_PART, _POS]]
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for part, group in sub.groupby(_PART, sort=True):
            out[int(cast(Any, part))] = (group[_POS].to_numpy(), group.index.to_numpy())
        return out

    def rows(self, index: pd.Index, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows with global labels ``index`` (all columns, or ``columns``), pulled to the client, in that order."""
        if len(index) == 0:
            empty = self.spec_and_schema()[1]
            return empty if columns is None else empty[list(columns)]
        where = self._positions(index)
        futures = [
            self.client.submit(take_part_rows, self.paths[p], pos, columns, pure=False) for p, (pos, _) in where.items()
        ]
        frames = self.client.gather(futures)
        for frame, (_, labels) in zip(frames, where.values(), strict=True):
            frame.index = labels
        return pd.concat(frames).loc[index]

    def category_counts(self, indexes: Sequence[pd.Index], columns: Sequence[str]) -> dict[str, dict[str, int]]:
        """Category counts of ``columns`` over the rows of each of ``indexes`` (added up), counted on the workers."""
        per_part: dict[int, list[np.ndarray]] = {}
        for index in indexes:
            for part, (pos, _) in self._positions(index).items():
                per_part.setdefault(part, []).append(pos)
        futures = [
            self.client.submit(count_part_categories, self.paths[p], sets, list(columns), pure=False)
            for p, sets in per_part.items()
        ]
        total: dict[str, dict[str, int]] = {c: {} for c in columns}
        for counts in self.client.gather(futures):
            add_category_counts(total, counts)
        return total

    def train_booster(
        self,
        params: Mapping[str, Any],
        index: pd.Index,
        y: np.ndarray,
        encoder: FeatureEncoder,
        *,
        num_boost_round: int,
        early_stopping_rounds: int,
        X_valid: np.ndarray | None,
        y_valid: np.ndarray | None,
        n_classes: int,
    ) -> tuple[lgb.Booster, int, dict[str, Any]]:
        """Train a booster on the rows ``index`` (labels ``y`` in that order) with ``DaskLGBMClassifier``.

        Returns what :func:`models.fit.readiness.train_booster` returns: the local booster cut at the best
        iteration (early stopping emulated on ``X_valid``, see the module docstring), that iteration and the
        validation history.
        """
        import dask
        import dask.array as da
        from lightgbm.dask import DaskLGBMClassifier

        y = np.asarray(y)
        present = np.unique(y)
        if n_classes > 2 and len(present) < n_classes:
            raise ValueError(
                f"the training rows hold {len(present)} of the {n_classes} classes; LightGBM's Dask interface "
                "can only train on every class present. Train without --cluster (a class without training "
                "rows is then never predicted) or change the stage buckets."
            )
        where = self._positions(index)
        label_of = pd.Series(y, index=index)
        X_chunks, y_chunks = [], []
        n_features = len(encoder.feature_names_out_)
        for p, (pos, labels) in where.items():
            part = dask.delayed(encode_part_rows, pure=True)(self.paths[p], pos, encoder)
            X_chunks.append(da.from_delayed(part, shape=(len(pos), n_features), dtype=np.float64))
            y_chunks.append(da.from_array(label_of.loc[labels].to_numpy(), chunks=len(pos)))
        X, y_da = da.concatenate(X_chunks), da.concatenate(y_chunks)
        # objective/classes come from the estimator; each worker's thread count is set by LightGBM's Dask
        # interface from the worker's nthreads (a num_threads given here would only be ignored with a warning).
        dropped = {"objective", "num_class", "metric", "num_threads", "n_jobs", "nthread", "num_thread", "nthreads"}
        kwargs = {k: v for k, v in params.items() if k not in dropped}
        model = DaskLGBMClassifier(
            client=self.client,
            objective=params.get("objective"),
            n_estimators=num_boost_round,
            **kwargs,
        )
        with warnings.catch_warnings():
            # The estimator's own n_jobs=None default, dropped by the Dask interface like num_threads above.
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(
                X,
                y_da,
                feature_name=list(encoder.feature_names_out_),
                categorical_feature=list(encoder.categorical_indices_),
            )
        booster = model.to_local().booster_
        metric = str(params.get("metric", "binary_logloss"))
        if X_valid is None or y_valid is None or len(X_valid) == 0:
            return booster, int(booster.current_iteration()), {}
        losses = _iteration_losses(booster, X_valid, np.asarray(y_valid), n_classes)
        best, evaluated = early_stopping_iteration(losses, early_stopping_rounds)
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        return booster, best, {"valid": {metric: losses[:evaluated]}}


__all__ = [
    "DaskFeaturePartitions",
    "count_part_categories",
    "early_stopping_iteration",
    "encode_part_rows",
    "read_part_columns",
    "take_part_rows",
]
