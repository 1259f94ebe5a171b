"""Tests for models.judge.leakage: single features that predict the label on their own are flagged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from features.build import build_features
from features.config import FeatureConfig
from features.mapping import builtin_mappings, import_export
from features.snapshots import snapshot_dates
from features.validation import load_history
from models.judge.leakage import LeakageConfig, LeakageError, probe_leakage
from tests.features.test_adapters import NOW, shared_data_dir
from tests.models.conftest import make_feature_frame


def _labels(n: int = 2000, rate: float = 0.3, seed: int = 0) -> np.ndarray:
    # Its own stream: features drawn with default_rng(seed) must not replay the labels' random numbers.
    rng = np.random.default_rng([seed, 2024])
    return (rng.random(n) < rate).astype(np.int8)


def _probe(frame: pd.DataFrame, y: np.ndarray, categorical: tuple[str, ...] = (), **kwargs):
    return probe_leakage(frame, list(frame.columns), list(categorical), y, **kwargs)


def test_a_numeric_separator_is_flagged_in_either_direction() -> None:
    y = _labels()
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "revenue": y * 10.0 + rng.random(len(y)),  # high for converters
            "days_to_close": (1 - y) * 10.0 + rng.random(len(y)),  # low for converters
            "visits": y + rng.normal(0, 1.5, len(y)),  # genuinely predictive, far from perfect
        }
    )
    report = _probe(frame, y)
    by_name = {f.feature: f for f in report.features}
    assert by_name["revenue"].flagged and by_name["revenue"].auc == 1.0
    assert by_name["days_to_close"].flagged and by_name["days_to_close"].auc == 1.0
    assert not by_name["visits"].flagged
    expected = roc_auc_score(y, frame["visits"])
    assert by_name["visits"].auc == pytest.approx(max(expected, 1 - expected), abs=1e-12)
    assert [f.feature for f in report.flagged] == ["days_to_close", "revenue"]
    assert "ROC AUC 1.000 on its own (numeric" in by_name["revenue"].reason
    with pytest.raises(LeakageError):
        report.raise_for_leaks()


def test_missingness_that_reveals_the_label_is_caught() -> None:
    y = _labels(seed=2)
    rng = np.random.default_rng(3)
    # Random values, but missing for 97% of the non-converted rows: the *missingness* leaks.
    values = rng.random(len(y))
    values[(y == 0) & (rng.random(len(y)) < 0.97)] = np.nan
    frame = pd.DataFrame({"close_value": values})
    report = _probe(frame, y)
    result = report.features[0]
    filled = np.where(np.isnan(values), -1.0, values)  # missing below every value
    assert result.auc == pytest.approx(roc_auc_score(y, filled), abs=1e-12)
    assert result.auc > 0.95 and result.flagged


def test_a_feature_populated_for_one_class_only_is_flagged() -> None:
    y = _labels(seed=4)
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "seller_id": pd.Series(np.where(y == 1, rng.integers(0, 10**6, len(y)).astype(str), None), dtype="str"),
            "rare": np.where((y == 1) & (np.arange(len(y)) < 40), 1.0, np.nan),  # a few converted rows only
        }
    )
    n_pos, n_neg = int(y.sum()), int((y == 0).sum())
    n_rare = int(y[:40].sum())
    report = _probe(frame, y, categorical=("seller_id",))
    by_name = {f.feature: f for f in report.features}
    seller, rare = by_name["seller_id"], by_name["rare"]
    assert seller.flagged
    assert f"populated only for converted rows ({n_pos:,} of {n_pos:,} converted, 0 of {n_neg:,} not converted)" in (
        seller.reason
    )
    assert (seller.populated_positive, seller.populated_negative) == (n_pos, 0)
    # Its own AUC is modest (it is missing on most converted rows too): only the population rule flags it.
    assert rare.auc < 0.95
    assert (
        rare.reason
        == f"populated only for converted rows ({n_rare} of {n_pos:,} converted, 0 of {n_neg:,} not converted)"
    )
    report = _probe(frame, y, categorical=("seller_id",), min_populated=n_rare + 1)
    assert not next(f for f in report.features if f.feature == "rare").flagged


def test_a_sparse_feature_absent_from_a_small_class_by_chance_is_not_flagged() -> None:
    # Like the simulator's days_since_event_attendance: filled on ~1.3% of rows, so about 4 of 300
    # converted rows would hold it; holding none is chance (P ~ 2%), not leakage.
    n_pos, n_neg = 300, 23_000
    y = np.r_[np.ones(n_pos, dtype=np.int8), np.zeros(n_neg, dtype=np.int8)]
    sparse = np.full(len(y), np.nan)
    sparse[n_pos : n_pos + 303] = 1.0  # 303 non-converted rows only
    dense = np.full(len(y), np.nan)
    dense[n_pos : n_pos + 3000] = 1.0  # 13% of non-converted rows: ~39 converted rows expected, 0 seen
    report = _probe(pd.DataFrame({"sparse": sparse, "dense": dense}), y)
    by_name = {f.feature: f for f in report.features}
    assert (by_name["sparse"].populated_positive, by_name["sparse"].populated_negative) == (0, 303)
    assert not by_name["sparse"].flagged
    assert by_name["dense"].flagged
    assert "populated only for non-converted rows (0 of 300 converted, 3,000 of 23,000" in by_name["dense"].reason


def test_one_class_only_evidence_is_counted_in_leads_when_rows_repeat_leads() -> None:
    # 691 non-converted rows, but from 58 leads seen in ~12 weekly snapshots each: in leads, about 1.4 of the
    # 425 converted rows' 60 leads would hold it, so none holding it is chance; in rows (expected ~11) it
    # would look like leakage. The same rows from 691 distinct leads are flagged.
    n_pos, n_neg = 425, 25_898
    y = np.r_[np.ones(n_pos, dtype=np.int8), np.zeros(n_neg, dtype=np.int8)]
    pos_leads = [f"P{i % 60}" for i in range(n_pos)]
    neg_leads = [f"N{i // 12}" for i in range(n_neg)]  # 12 rows per lead, 2,159 leads
    groups = pd.Series(pos_leads + neg_leads)
    values = np.full(len(y), np.nan)
    values[n_pos : n_pos + 691] = 3.0  # the first 58 negative leads
    frame = pd.DataFrame({"days_since_event_attendance": values})
    (in_leads,) = _probe(frame, y, groups=groups).features
    assert not in_leads.flagged and (in_leads.populated_positive, in_leads.populated_negative) == (0, 691)
    (in_rows,) = _probe(frame, y).features
    assert in_rows.flagged and "populated only for non-converted rows (0 of 425 converted, 691 of 25,898" in (
        in_rows.reason
    )
    distinct = pd.Series([f"D{i}" for i in range(len(y))])  # every row its own lead: as in rows
    (flagged,) = _probe(frame, y, groups=distinct).features
    assert flagged.flagged


def test_out_of_fold_encoding_keeps_ids_low_and_leaky_categories_high() -> None:
    y = _labels(n=3000, seed=6)
    rng = np.random.default_rng(7)
    tag = np.where(y == 1, "Closed won", rng.choice(["Ringing", "Busy", "Lost to competitor"], len(y)))
    flip = rng.random(len(y)) < 0.01
    tag = np.where(flip, "Ringing", tag)
    frame = pd.DataFrame(
        {
            "prospect_id": pd.Series([f"P{i}" for i in range(len(y))], dtype="str"),
            "tags": pd.Series(tag, dtype="str"),
            "city": pd.Series(rng.choice(["Mumbai", "Thane", None], len(y)), dtype="str"),
        }
    )
    report = _probe(frame, y, categorical=("prospect_id", "tags", "city"))
    by_name = {f.feature: f for f in report.features}
    # A unique id encodes to the prior out of fold (in fold it would encode its own label: AUC 1).
    assert by_name["prospect_id"].auc < 0.6 and not by_name["prospect_id"].flagged
    assert by_name["tags"].auc > 0.95 and by_name["tags"].flagged
    assert "categorical, out-of-fold target rate" in by_name["tags"].reason
    assert by_name["city"].auc < 0.6 and not by_name["city"].flagged


def test_groups_keep_one_leads_snapshots_from_encoding_each_other() -> None:
    # 300 leads x 10 snapshots, the label a property of the lead, the lead id a categorical feature.
    rng = np.random.default_rng(8)
    lead_label = (rng.random(300) < 0.3).astype(np.int8)
    leads = np.repeat(np.arange(300), 10)
    y = lead_label[leads]
    frame = pd.DataFrame({"account": pd.Series([f"A{i}" for i in leads], dtype="str")})
    ungrouped = _probe(frame, y, categorical=("account",))
    grouped = _probe(frame, y, categorical=("account",), groups=pd.Series(leads))
    assert ungrouped.features[0].auc > 0.95  # other snapshots of the same lead give its label away
    assert grouped.features[0].auc < 0.6 and grouped.ok


def test_acknowledged_features_are_reported_but_do_not_stop_training() -> None:
    y = _labels(seed=9)
    frame = pd.DataFrame({"revenue": y * 10.0, "noise": np.random.default_rng(9).random(len(y))})
    report = _probe(frame, y, acknowledged=["revenue"])
    assert report.ok
    report.raise_for_leaks()  # nothing unacknowledged: no error
    assert [f.feature for f in report.acknowledged] == ["revenue"]
    assert report.to_dict()["acknowledged"] == ["revenue"]


def test_the_error_names_each_feature_and_how_to_acknowledge_it() -> None:
    y = _labels(seed=10)
    rng = np.random.default_rng(10)
    frame = pd.DataFrame(
        {
            "close_value": y * 1000.0,
            "sdr_id": pd.Series(np.where(y == 1, "sdr", None), dtype="str"),
            "visits": rng.random(len(y)),
        }
    )
    with pytest.raises(LeakageError) as info:
        _probe(frame, y, categorical=("sdr_id",)).raise_for_leaks()
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "2 feature(s) predict the label on their own" in message
    assert "  - close_value: ROC AUC 1.000 on its own" in message
    assert "  - sdr_id: " in message and "populated only for converted rows" in message
    assert "threshold 0.95" in message
    assert "train.leakage.acknowledge" in message
    assert "acknowledge: [close_value, sdr_id]" in message
    assert "visits" not in message
    assert [f.feature for f in info.value.report.flagged] == ["close_value", "sdr_id"]


def test_the_threshold_is_configurable() -> None:
    y = _labels(seed=11)
    rng = np.random.default_rng(11)
    frame = pd.DataFrame({"score": y + rng.normal(0, 0.6, len(y))})
    auc = _probe(frame, y).features[0].auc
    assert 0.8 < auc < 0.95
    assert _probe(frame, y).ok
    assert not _probe(frame, y, threshold=0.8).ok


def test_no_legitimate_feature_of_the_synthetic_snapshots_is_flagged_but_a_planted_leak_is() -> None:
    df, spec = make_feature_frame(n_leads=200, n_dates=12)
    train = df[df["observed_days"] >= spec.horizon_days].copy()
    report = probe_leakage(train, spec.features, spec.categorical, train["converted"], groups=train["lead_id"], seed=1)
    assert report.ok, report.message()
    train["days_to_conversion_copy"] = train["days_to_conversion"].astype(np.float32)
    report = probe_leakage(
        train,
        [*spec.features, "days_to_conversion_copy"],
        spec.categorical,
        "converted",
        groups=train["lead_id"],
    )
    assert [f.feature for f in report.flagged] == ["days_to_conversion_copy"]


def test_large_inputs_are_probed_on_a_stratified_sample() -> None:
    y = _labels(n=5000, rate=0.1, seed=12)
    frame = pd.DataFrame({"x": np.random.default_rng(12).random(len(y))})
    report = _probe(frame, y, max_rows=1000)
    assert report.rows_probed == 1000
    assert (report.n_rows, report.n_positive) == (5000, int(y.sum()))
    assert report.features[0].populated_positive == round(1000 * y.mean())
    assert _probe(frame, y, max_rows=1000).features[0].auc == report.features[0].auc  # seeded


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"threshold": 0.5}, "threshold must be in (0.5, 1]"),
        ({"acknowledged": ["revenu"]}, "train.leakage.acknowledge names ['revenu'], which are not features"),
        ({"features": ["missing"], "categorical": []}, "training frame lacks feature columns ['missing']"),
        ({"categorical": ["other"]}, "categorical features ['other'] are not among the probed features"),
        ({"y": np.zeros(100)}, "single class"),
        ({"y": np.full(100, 2)}, "y must be 0 or 1 (position 0: 2.0)"),
        ({"y": np.zeros(3)}, "y has 3 values for 100 training rows"),
    ],
)
def test_bad_inputs_are_explained(kwargs: dict, fragment: str) -> None:
    frame = pd.DataFrame({"revenue": np.arange(100.0), "tag": pd.Series(["a"] * 100, dtype="str")})
    args = {
        "train_df": frame,
        "features": ["revenue", "tag"],
        "categorical": ["tag"],
        "y": np.arange(100) % 2,
        **kwargs,
    }
    with pytest.raises(ValueError) as info:
        probe_leakage(**args)
    assert fragment in str(info.value)


def test_a_numeric_feature_with_text_is_refused() -> None:
    frame = pd.DataFrame({"revenue": pd.Series(["1"] * 10, dtype="str")})
    with pytest.raises(ValueError, match="numeric feature 'revenue' has non-numeric dtype"):
        probe_leakage(frame, ["revenue"], [], np.arange(10) % 2)


def test_leakage_config() -> None:
    config = LeakageConfig()
    assert (config.enabled, config.threshold, config.acknowledge) == (True, 0.95, [])
    with pytest.raises(ValidationError):
        LeakageConfig(threshold=0.4)
    with pytest.raises(ValidationError):
        LeakageConfig(acknowlege=["x"])


@pytest.mark.realdata
def test_olist_post_outcome_columns_would_be_caught_by_the_leakage_probe(tmp_path: Path) -> None:
    src = shared_data_dir("olist_marketing_funnel")
    raw = yaml.safe_load(builtin_mappings()["olist_marketing_funnel"].read_text())
    raw["excluded"] = [e for e in raw["excluded"] if e["column"] != "business_segment"]
    raw["attributes"].append({"column": "business_segment", "kind": "categorical"})
    mapping = tmp_path / "olist_leaky.yaml"
    mapping.write_text(yaml.safe_dump(raw))
    import_export(mapping, src, tmp_path / "olist", now=NOW, sample_rows=3000)
    history = load_history(tmp_path / "olist", now=NOW).history
    config = FeatureConfig(horizon_days=30)
    # Closed deals are only recorded from December 2017: earlier snapshots would be mislabelled.
    frame, spec = build_features(history, snapshot_dates(history, 7, start="2017-12-01"), config)
    train = frame[frame["observed_days"] >= config.horizon_days]
    report = probe_leakage(train, spec.features, spec.categorical, train["converted"], groups=train["lead_id"])
    assert [f.feature for f in report.flagged] == ["business_segment"]
    assert "business_segment" in report.message()
