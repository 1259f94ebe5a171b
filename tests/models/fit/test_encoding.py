from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.fit.encoding import FeatureEncoder


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "color": pd.array(["red", "blue", "red", None, "green", "red", "blue"], dtype="str"),
            "size": pd.Categorical(["s", "m", "s", "l", None, "s", "m"], categories=["s", "m", "l", "xl"]),
            "n": np.array([1, 2, 3, np.nan, 5, 6, 7], dtype=np.float32),
        }
    )


def test_codes_by_frequency_then_name() -> None:
    enc = FeatureEncoder(["color", "size"], ["n"]).fit(_frame())
    assert enc.categories_["color"] == ["red", "blue", "green"]
    assert enc.categories_["size"] == ["s", "m", "l"]  # 'xl' never occurs
    X = enc.transform(_frame())
    assert X.dtype == np.float64 and X.shape == (7, 3)
    assert X[:, 0].tolist()[:3] == [0.0, 1.0, 0.0]
    assert np.isnan(X[3, 0]) and np.isnan(X[4, 1]) and np.isnan(X[3, 2])
    assert enc.feature_names_out_ == ["color", "size", "n"]


def test_rare_and_excess_categories_become_missing() -> None:
    enc = FeatureEncoder(["color"], [], max_categories=2).fit(_frame())
    assert enc.categories_["color"] == ["red", "blue"]
    enc = FeatureEncoder(["color"], [], min_category_count=2).fit(_frame())
    assert enc.categories_["color"] == ["red", "blue"]
    assert np.isnan(enc.transform(pd.DataFrame({"color": ["green"]}))[0, 0])


def test_all_input_forms_agree() -> None:
    df = _frame()
    enc = FeatureEncoder(["color", "size"], ["n"]).fit(df)
    expected = enc.transform(df)
    frame = df.astype(object).where(df.notna(), None)
    records: list[dict[str, Any]] = [{str(k): v for k, v in r.items()} for r in frame.to_dict(orient="records")]
    assert np.array_equal(enc.transform_records(records), expected, equal_nan=True)
    array = np.array([[r["color"], r["size"], r["n"]] for r in records], dtype=object)
    assert np.array_equal(enc.transform(array), expected, equal_nan=True)  # small-batch path
    big = np.concatenate([array] * 10)
    assert np.array_equal(enc.transform(big), np.concatenate([expected] * 10), equal_nan=True)  # vectorised path
    assert np.array_equal(enc.transform(records[1]), expected[1:2], equal_nan=True)
    assert np.array_equal(enc.transform(records), expected, equal_nan=True)
    # Small frames take the per-value path, large ones the column-wise path: same result.
    assert np.array_equal(enc.transform(pd.concat([df] * 10)), np.concatenate([expected] * 10), equal_nan=True)


def test_object_and_category_inputs_match_str_input() -> None:
    df = _frame()
    enc = FeatureEncoder(["color", "size"], ["n"]).fit(df)
    other = df.assign(color=df["color"].astype("category"), size=df["size"].astype(object))
    assert np.array_equal(enc.transform(other), enc.transform(df), equal_nan=True)


def test_numbers_used_as_categories_match_by_text() -> None:
    enc = FeatureEncoder(["code"], []).fit(pd.DataFrame({"code": [1, 2, 2]}))
    assert enc.categories_["code"] == ["2", "1"]
    assert enc.transform(pd.DataFrame({"code": pd.array(["1", "2"], dtype="str")}))[:, 0].tolist() == [1.0, 0.0]


def test_errors_name_the_problem() -> None:
    enc = FeatureEncoder(["color", "size"], ["n"]).fit(_frame())
    with pytest.raises(ValueError, match=r"lacks feature columns \['n'\]"):
        enc.transform(_frame().drop(columns=["n"]))
    with pytest.raises(ValueError, match="feature 'n' must be numeric"):
        enc.transform_records([{"color": "red", "size": "s", "n": "lots"}])
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        enc.transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="more than once"):
        FeatureEncoder(["color"], ["color"]).fit(_frame())
