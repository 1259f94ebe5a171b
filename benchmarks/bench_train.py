"""Benchmark: training time of readiness + stage + calibration, and ScoringModel predict speed.

Target (issue 3): training on 1,000,000 snapshot rows x ~60 features completes in under 3 minutes on
2 cores (readiness + stage + calibration). Serving needs (issue 4): one row well under 5 ms including
reasons; batch readiness + stage at >= 50% of raw ``Booster.predict`` throughput.

Usage::

    python benchmarks/bench_train.py                       # 1,000,000 synthetic rows x 60 features
    python benchmarks/bench_train.py --rows 200000 --features 40
    python benchmarks/bench_train.py --table features.parquet   # a real feature table (write_feature_table)
    python benchmarks/bench_train.py --with-baselines      # also time baselines, evaluation plots

Training uses the shipped default config (``models/default_config.yaml``) unless ``--config`` is given.
Figures are wall-clock on whatever else the machine is doing; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.spec import FeatureSpec, read_feature_table
from models.config import TrainConfig, load_train_config, parse_train_config
from models.fit.encoding import FeatureEncoder
from models.fit.readiness import ReadinessModel
from models.fit.stage import StageModel, stage_labels
from models.fit.training import train_models

CARDINALITIES = (3, 5, 8, 12, 30, 100)


def synthetic_features(rows: int, n_features: int, seed: int = 0) -> tuple[pd.DataFrame, FeatureSpec]:
    """A feature table shaped like the builder's: weekly snapshots, float32 numerics, str categoricals.

    About 50 snapshots per lead over 120 weekly dates plus 100 days of tail (so the newest dates are
    censored for stage but not readiness). A latent intent drives ~1/3 of the numeric features and a
    time-to-conversion with a ~5% 90-day conversion rate; the rest is noise.
    """
    rng = np.random.default_rng(seed)
    n_dates = 120
    n_leads = max(100, rows // 50)
    n_cat = min(len(CARDINALITIES), max(1, n_features // 10))
    n_num = n_features - n_cat
    lead = rng.integers(0, n_leads, size=rows)
    date = rng.integers(0, n_dates, size=rows)
    # (lead, date) pairs must be unique: resolve collisions by shifting the lead id.
    key = np.unique(lead.astype(np.int64) * n_dates + date)
    while len(key) < rows:
        extra = rng.integers(0, n_leads * n_dates, size=rows - len(key))
        key = np.unique(np.concatenate([key, extra]))
    lead, date = key // n_dates, key % n_dates
    start = pd.Timestamp("2022-01-03", tz="UTC")
    as_of = start + pd.to_timedelta(date * 7, unit="D")
    data_end = start + pd.Timedelta(days=(n_dates - 1) * 7 + 100)
    intent = rng.normal(size=n_leads)[lead] + rng.normal(0, 0.7, size=rows)
    cols: dict[str, Any] = {"lead_id": pd.array([f"L{i:07d}" for i in lead], dtype="str"), "as_of": as_of}
    cat_names, num_names = [], []
    effect = np.zeros(rows)
    for j in range(n_cat):
        k = CARDINALITIES[j]
        codes = rng.integers(0, k, size=n_leads)[lead]
        effect += rng.normal(0, 0.4, size=k)[codes]
        name = f"cat_{j}"
        values = np.array([f"{name}_v{i}" for i in range(k)], dtype=object)[codes]
        values[rng.random(rows) < 0.03] = None
        cols[name] = pd.array(values, dtype="str")
        cat_names.append(name)
    for j in range(n_num):
        name = f"num_{j}"
        if j % 3 == 0:
            x = rng.poisson(np.exp(0.2 + 0.5 * intent + rng.normal(0, 0.3, size=rows))).astype(np.float32)
        elif j % 3 == 1:
            x = (0.4 * intent + rng.normal(size=rows)).astype(np.float32)
        else:
            x = rng.normal(size=rows).astype(np.float32)
        x[rng.random(rows) < 0.05] = np.nan
        cols[name] = x
        num_names.append(name)
    log_rate = -9.0 + 0.9 * intent + effect
    t = rng.exponential(np.exp(-log_rate))
    observed = ((data_end - as_of) / pd.Timedelta(days=1)).to_numpy(dtype=np.float64)
    seen = t <= observed
    cols["converted"] = ((t <= 90) & seen).astype(np.int8)
    cols["days_to_conversion"] = np.where(seen, t, np.nan)
    cols["observed_days"] = observed
    df = pd.DataFrame(cols).sort_values(["as_of", "lead_id"], ignore_index=True)
    return df, FeatureSpec(categorical=cat_names, numeric=num_names, horizon_days=90)


def _per_call(fn: Any, repeat: int) -> dict[str, float]:
    for _ in range(min(50, repeat)):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return {
        "p50_us": statistics.median(times) * 1e6,
        "p99_us": times[int(0.99 * (len(times) - 1))] * 1e6,
    }


def _best_of(fn: Any, runs: int = 3) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_predict(model: Any, frame: pd.DataFrame, batch_rows: int) -> dict[str, Any]:
    cols = model.input_columns
    rows = frame[cols].sample(n=min(batch_rows, len(frame)), random_state=0)
    Xe = model.encode(rows)
    one_frame = rows.iloc[[0]]
    record = {c: (None if pd.isna(v) else v) for c, v in rows.iloc[0].items()}
    one_array = np.array([[record[c] for c in cols]], dtype=object)
    one_encoded = Xe[:1]
    rb, sb = model.readiness_booster, model.stage_booster

    def raw_one() -> None:
        rb.predict(one_encoded, raw_score=True, num_threads=1)
        if sb is not None:
            sb.predict(one_encoded, num_threads=1)

    single = {
        "raw_booster_predict_readiness+stage": _per_call(raw_one, 2000),
        "ScoringModel.predict_one(record)": _per_call(lambda: model.predict_one(record), 2000),
        "ScoringModel.predict_arrays(1-row array)": _per_call(lambda: model.predict_arrays(one_array), 2000),
        "ScoringModel.predict(1-row DataFrame)": _per_call(lambda: model.predict(one_frame), 500),
        "contributions (1 row, exact TreeSHAP)": _per_call(
            lambda: model.contributions_from_encoded(model.encoder.transform_records([record])), 500
        ),
    }

    def raw_batch() -> None:
        rb.predict(Xe, raw_score=True)
        if sb is not None:
            sb.predict(Xe)

    raw_s = _best_of(raw_batch)
    arrays_s = _best_of(lambda: model.predict_arrays(rows))
    frame_s = _best_of(lambda: model.predict(rows))
    n_contrib = min(5000, len(rows))
    contrib_s = _best_of(lambda: model.contributions_from_encoded(Xe[:n_contrib]), runs=1)
    batch = {
        "rows": len(rows),
        "raw_booster_rows_per_s": len(rows) / raw_s,
        "predict_arrays_rows_per_s": len(rows) / arrays_s,
        "predict_dataframe_rows_per_s": len(rows) / frame_s,
        "predict_arrays_vs_raw": raw_s / arrays_s,
        "predict_dataframe_vs_raw": raw_s / frame_s,
        "contributions_rows_per_s": n_contrib / contrib_s,
    }
    return {"single_row": single, "batch": batch}


def bench_direct(df: pd.DataFrame, spec: FeatureSpec, config: TrainConfig) -> dict[str, float]:
    """Worst case: readiness and stage fitted on *every* row (80% fit / 20% early stopping + calibration).

    Not an honest evaluation (rows are split at random); it only measures fitting cost when all rows
    are training rows, whereas the temporal split trains on the older part only.
    """
    rng = np.random.default_rng(0)
    fit = rng.random(len(df)) < 0.8
    train, valid = df.loc[fit], df.loc[~fit]
    rc, sc = config.readiness, config.stage
    t = time.perf_counter()
    encoder = FeatureEncoder(spec.categorical, spec.numeric).fit(train[spec.categorical])
    ReadinessModel(
        spec.categorical,
        spec.numeric,
        params=rc.params.to_lightgbm(config.seed),
        num_boost_round=rc.num_boost_round,
        early_stopping_rounds=rc.early_stopping_rounds,
        calibration=rc.calibration,
        encoder=encoder,
    ).fit(train, train["converted"], valid, valid["converted"])
    readiness_s = time.perf_counter() - t
    # Every row gets a stage label here (undetermined ones count as the open bucket): cost only.
    labels = np.asarray(
        stage_labels(df["days_to_conversion"], np.full(len(df), 1e9), sc.buckets).astype(object), dtype=object
    )
    t = time.perf_counter()
    StageModel(
        sc.labels,
        spec.categorical,
        spec.numeric,
        params=sc.params.to_lightgbm(config.seed),
        num_boost_round=sc.num_boost_round,
        early_stopping_rounds=sc.early_stopping_rounds,
        encoder=encoder,
    ).fit(train, labels[fit], valid, labels[~fit])
    stage_s = time.perf_counter() - t
    return {"readiness_fit_s": readiness_s, "stage_fit_s": stage_s, "rows": float(len(df))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", type=Path, help="benchmark on this feature table instead of synthetic rows")
    parser.add_argument("--config", type=Path, help="training config YAML (default: shipped defaults)")
    parser.add_argument("--with-baselines", action="store_true", help="also fit baselines and draw plots")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows for the batch predict timing")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument(
        "--direct", action="store_true", help="also time fitting both models on every row (worst-case cost)"
    )
    args = parser.parse_args(argv)

    t = time.perf_counter()
    if args.table is not None:
        df, spec = read_feature_table(args.table)
        source = str(args.table)
    else:
        df, spec = synthetic_features(args.rows, args.features, args.seed)
        source = f"synthetic(seed={args.seed})"
    prepare_s = time.perf_counter() - t
    print(
        f"data: {source}: {len(df):,} rows x {len(spec.features)} features "
        f"({len(spec.categorical)} categorical), base rate {df['converted'].mean():.4f}; prepared in {prepare_s:.1f} s"
    )

    config = load_train_config(args.config)
    if not args.with_baselines:
        raw = config.model_dump(mode="json")
        raw["baselines"]["enabled"] = False
        raw["evaluation"]["plots"] = False
        config = parse_train_config(raw)
    t = time.perf_counter()
    result = train_models(df, spec, config)
    total_s = time.perf_counter() - t
    tm = result.timings
    core_s = tm.get("split", 0) + tm.get("readiness_fit", 0) + tm.get("stage_fit", 0)
    r = result.split.readiness
    s = result.split.stage
    print(
        f"cpu: {os.cpu_count()} logical cores, {platform.processor() or platform.machine()}; "
        f"load average at end {os.getloadavg()[0]:.1f}"
    )
    print(
        f"readiness: train {len(r.train):,} rows, valid {len(r.valid):,}, test {len(r.test):,}; "
        f"best iteration {result.readiness_model.best_iteration_}, "
        f"calibration {result.readiness_model.calibration_method_}"
    )
    if s is not None and result.stage_model is not None:
        print(
            f"stage: train {len(s.train):,} rows, valid {len(s.valid):,}, test {len(s.test):,} ({s.test_strategy}); "
            f"best iteration {result.stage_model.best_iteration_}"
        )
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in tm.items()))
    print(
        f"TRAIN readiness + stage + calibration (split + fits): {core_s:.1f} s  (target < 180 s); "
        f"train_models total {total_s:.1f} s"
    )
    m = result.readiness_metrics["leadscore"]
    print("test readiness: " + ", ".join(f"{k} {v:.4f}" for k, v in m.items()))
    if result.stage_metrics:
        print(
            f"test stage: accuracy {result.stage_metrics['accuracy']:.4f}, "
            f"macro_f1 {result.stage_metrics['macro_f1']:.4f}"
        )

    direct = None
    if args.direct:
        direct = bench_direct(df, spec, config)
        print(
            f"DIRECT fit on all {len(df):,} rows (80% fit / 20% valid): readiness + calibration "
            f"{direct['readiness_fit_s']:.1f} s, stage {direct['stage_fit_s']:.1f} s, "
            f"total {direct['readiness_fit_s'] + direct['stage_fit_s']:.1f} s"
        )

    pred = bench_predict(result.model, r.test if len(r.test) >= 1000 else df, args.batch_rows)
    print("single row (p50 / p99 microseconds):")
    for name, v in pred["single_row"].items():
        print(f"  {name:45s} {v['p50_us']:9.1f} {v['p99_us']:9.1f}")
    b = pred["batch"]
    print(
        f"batch of {b['rows']:,} rows (rows/s): "
        f"raw Booster.predict readiness+stage {b['raw_booster_rows_per_s']:,.0f}; "
        f"predict_arrays {b['predict_arrays_rows_per_s']:,.0f} ({b['predict_arrays_vs_raw']:.0%} of raw); "
        f"predict DataFrame {b['predict_dataframe_rows_per_s']:,.0f} ({b['predict_dataframe_vs_raw']:.0%} of raw); "
        f"contributions {b['contributions_rows_per_s']:,.0f}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "source": source,
            "rows": len(df),
            "features": len(spec.features),
            "timings_s": tm,
            "core_train_s": core_s,
            "train_models_s": total_s,
            "readiness_metrics": m,
            "stage_metrics": {k: v for k, v in (result.stage_metrics or {}).items() if not isinstance(v, list)},
            "predict": pred,
            "direct_fit": direct,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
