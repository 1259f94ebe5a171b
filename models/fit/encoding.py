"""Feature matrix encoding shared by the readiness and stage models.

:class:`FeatureEncoder` turns a feature table (or records, or a numpy array in ``input_columns`` order)
into one float64 matrix whose columns are the categorical features followed by the numeric features,
the order of :attr:`FeatureSpec.features`. Categorical values become integer codes of the categories
seen in training (most frequent first), which LightGBM uses as native categorical features; missing,
rare (fewer than ``min_category_count`` training rows, or beyond ``max_categories``) and unseen values
become NaN, which LightGBM routes like a missing value. Scoring therefore never fails on a new category.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

# What the encoder accepts: a frame, one record, several records, or an array in input_columns order.
FeatureInput = pd.DataFrame | Mapping[str, Any] | Sequence[Mapping[str, Any]] | np.ndarray

# Below this many rows a per-value dict lookup beats building a pandas Index lookup.
_SMALL_BATCH = 32


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _as_text(values: pd.Series) -> pd.Series | np.ndarray:
    """Values of a categorical column in a form comparable with the learned (string) categories."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype) or pd.api.types.is_object_dtype(dtype):
        return values
    if isinstance(dtype, pd.CategoricalDtype):
        return values  # handled through the categories, see FeatureEncoder._column_codes
    # Numbers or booleans used as categories: compare by their text, keeping missing as missing.
    out = values.astype(object)
    mask = out.notna()
    out[mask] = out[mask].map(str)
    return out


def _to_float(value: Any, name: str) -> float:
    if _is_missing(value):
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature '{name}' must be numeric, got {value!r}") from exc


def category_counts(X: pd.DataFrame, columns: Sequence[str]) -> dict[str, dict[str, int]]:
    """Rows per category (as text; missing values not counted) of each of ``columns``."""
    out: dict[str, dict[str, int]] = {}
    for col in columns:
        counts: dict[str, int] = {}
        # Count first (hashed, fast), then key by text: 1 and "1" are the same category.
        for value, n in X[col].value_counts(dropna=True, sort=False).items():
            key = str(value)
            counts[key] = counts.get(key, 0) + int(n)
        out[col] = counts
    return out


def add_category_counts(
    total: dict[str, dict[str, int]], more: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """``total`` plus ``more``, column by column (in place; returns ``total``)."""
    for col, counts in more.items():
        into = total.setdefault(col, {})
        for key, n in counts.items():
            into[key] = into.get(key, 0) + int(n)
    return total


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Categorical codes + numeric values as one float64 matrix (see the module docstring).

    Args:
        categorical: categorical feature columns.
        numeric: numeric feature columns.
        max_categories: most frequent training categories kept per column.
        min_category_count: categories with fewer training rows are treated as missing.
    """

    def __init__(
        self,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        max_categories: int = 1000,
        min_category_count: int = 1,
    ) -> None:
        self.categorical = categorical
        self.numeric = numeric
        self.max_categories = max_categories
        self.min_category_count = min_category_count

    # -- fitting -------------------------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> FeatureEncoder:
        """Learn the categories of each categorical column from ``X``."""
        cat = list(self.categorical)
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(X).__name__}")
        # Only the categorical columns are learned from, so a frame of just those is enough.
        missing = [c for c in cat if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks categorical feature columns {missing}")
        return self.fit_counts(category_counts(X, cat))

    def fit_counts(self, counts: Mapping[str, Mapping[str, int]]) -> FeatureEncoder:
        """Learn the categories from per-column category counts (:func:`category_counts`, summable over parts).

        ``fit(X)`` is ``fit_counts(category_counts(X, categorical))``: counts of row subsets (e.g. the
        partitions of a table on a Dask cluster) added up give exactly the encoder of the whole table.
        """
        cat, num = list(self.categorical), list(self.numeric)
        dupes = sorted({c for c in cat + num if (cat + num).count(c) > 1})
        if dupes:
            raise ValueError(f"columns listed more than once (or as both categorical and numeric): {dupes}")
        missing = [c for c in cat if c not in counts]
        if missing:
            raise ValueError(f"no category counts for categorical feature columns {missing}")
        self.categories_: dict[str, list[str]] = {}
        for col in cat:
            # Most frequent first, ties by name, so codes do not depend on row order.
            order = sorted(counts[col].items(), key=lambda kv: (-kv[1], kv[0]))
            kept = [k for k, n in order if n >= self.min_category_count][: self.max_categories]
            self.categories_[col] = kept
        self.feature_names_out_ = [*cat, *num]
        self.n_features_out_ = len(self.feature_names_out_)
        self.categorical_indices_ = list(range(len(cat)))
        self._build_lookups()
        return self

    def _build_lookups(self) -> None:
        self.category_index_ = {c: pd.Index(v, dtype=object) for c, v in self.categories_.items()}
        self.category_codes_ = {c: {v: float(i) for i, v in enumerate(vals)} for c, vals in self.categories_.items()}

    @property
    def input_columns(self) -> list[str]:
        """Columns the encoder reads, in the order a numpy input must have."""
        return [*self.categorical, *self.numeric]

    # -- transforming --------------------------------------------------------------------------------
    def _check_columns(self, X: pd.DataFrame) -> None:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"expected a pandas DataFrame, got {type(X).__name__}")
        missing = [c for c in self.input_columns if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks feature columns {missing} (the model needs {len(self.input_columns)})")

    def _column_codes(self, col: str, values: pd.Series) -> np.ndarray:
        index = self.category_index_[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            # Map the (few) categories once, then gather by the integer codes.
            cat_codes = index.get_indexer(pd.Index(values.cat.categories.map(str), dtype=object))
            codes = values.cat.codes.to_numpy()
            mapped = np.where(codes >= 0, cat_codes[np.maximum(codes, 0)], -1)
        else:
            mapped = index.get_indexer(pd.Index(np.asarray(_as_text(values), dtype=object), dtype=object))
        out = mapped.astype(np.float64)
        out[mapped < 0] = np.nan
        return out

    def transform(self, X: FeatureInput) -> np.ndarray:
        """Encode a DataFrame, a record or list of records (mappings), or an array in input_columns order."""
        if isinstance(X, pd.DataFrame):
            return self.transform_frame(X)
        if isinstance(X, Mapping):
            return self.transform_records([X])
        if isinstance(X, np.ndarray):
            return self.transform_array(X)
        if X and all(isinstance(r, Mapping) for r in X):
            return self.transform_records(X)
        return self.transform_array(np.asarray(X, dtype=object))

    def transform_frame(self, X: pd.DataFrame) -> np.ndarray:
        self._check_columns(X)
        if len(X) <= _SMALL_BATCH:
            # Column-wise pandas lookups cost ~10 us each; for a few rows one object array is cheaper.
            return self.transform_array(X[self.input_columns].to_numpy(dtype=object))
        out = np.empty((len(X), self.n_features_out_), dtype=np.float64)
        n_cat = len(self.categorical)
        for j, col in enumerate(self.categorical):
            out[:, j] = self._column_codes(col, X[col])
        if self.numeric:
            block = X[list(self.numeric)]
            try:
                out[:, n_cat:] = block.to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError) as exc:
                bad = [c for c in self.numeric if not pd.api.types.is_numeric_dtype(X[c])]
                raise ValueError(
                    f"numeric feature columns hold non-numeric values: {bad or list(self.numeric)}"
                ) from exc
        return out

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Encode records (mappings of column -> value) without pandas; fast for a few rows."""
        cols = self.input_columns
        out = np.empty((len(records), self.n_features_out_), dtype=np.float64)
        for i, rec in enumerate(records):
            missing = [c for c in cols if c not in rec]
            if missing:
                raise ValueError(f"record {i} lacks feature columns {missing}")
            out[i] = self._encode_row([rec[c] for c in cols])
        return out

    def _encode_row(self, values: Sequence[Any]) -> list[float]:
        n_cat = len(self.categorical)
        row: list[float] = []
        for j, col in enumerate(self.categorical):
            v = values[j]
            row.append(np.nan if _is_missing(v) else self.category_codes_[col].get(str(v), np.nan))
        for j in range(n_cat, len(values)):
            row.append(_to_float(values[j], self.numeric[j - n_cat]))
        return row

    def transform_array(self, X: np.ndarray) -> np.ndarray:
        """Encode a numpy array whose columns are :attr:`input_columns` (categoricals as str or None)."""
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != self.n_features_out_:
            raise ValueError(
                f"array input must have shape (n, {self.n_features_out_}) in input_columns order, got {X.shape}"
            )
        n_cat = len(self.categorical)
        if n_cat == 0 and X.dtype.kind == "f":
            return np.asarray(X, dtype=np.float64)
        if len(X) <= _SMALL_BATCH:
            return np.array([self._encode_row(list(row)) for row in X], dtype=np.float64)
        out = np.empty(X.shape, dtype=np.float64)
        for j, col in enumerate(self.categorical):
            out[:, j] = self._column_codes(col, pd.Series(X[:, j], dtype=object))
        try:
            out[:, n_cat:] = X[:, n_cat:].astype(np.float64)
        except (TypeError, ValueError):
            # None or pd.NA among the numbers: take the careful per-value path (raises on real junk).
            for j in range(n_cat, X.shape[1]):
                name = self.numeric[j - n_cat]
                out[:, j] = [_to_float(v, name) for v in X[:, j]]
        return out
