"""Train, calibrate and evaluate the readiness and stage models (plus baselines) on one temporal split.

:func:`train_models` is a plain function (no MLflow, no Prefect): features in, :class:`TrainingResult`
out. The result carries everything a tracking/registry layer needs: the split, the :class:`ScoringModel`
to serve, the baselines, test metrics of every model on the same test snapshots, the grade table,
figures, the ids of the test snapshots and :meth:`TrainingResult.evaluate_on` to score another model
(e.g. the current champion) on exactly those rows.

The served model is the evaluated one: boosters trained on the train snapshots only (early stopping and
calibration on valid), never refitted on newer data after evaluation.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from features.single_snapshot import SINGLE_SNAPSHOT
from features.spec import FeatureSpec
from models.config import TrainConfig, load_train_config
from models.fit.baselines import BaselineModel, fit_baselines
from models.fit.distributed import DaskFeaturePartitions
from models.fit.encoding import FeatureEncoder
from models.fit.readiness import ReadinessModel
from models.fit.scoring import ScoringModel
from models.fit.split import READINESS_TARGET, InsufficientDataError, Split, TaskSplit, temporal_split
from models.fit.stage import STAGE_TARGET, StageModel
from models.fit.stratified import stratified_split
from models.judge import plots
from models.judge.evaluation import grade_cutoffs_from_config, grade_table, readiness_metrics, stage_metrics
from models.judge.leakage import LeakageReport, probe_leakage, stratified_sample
from models.judge.reference import reference_population

__all__ = [
    "InsufficientDataError",
    "PreparedTraining",
    "TrainingResult",
    "evaluate_models",
    "fit_baseline_models",
    "fit_readiness",
    "fit_stage",
    "predict_readiness_of",
    "prepare_partitioned_training",
    "prepare_training",
    "train_models",
]

log = logging.getLogger(__name__)

LEADSCORE = "leadscore"
LEADSCORE_UNCALIBRATED = "leadscore_uncalibrated"


def predict_readiness_of(model_like: Any, df: pd.DataFrame) -> np.ndarray:
    """Readiness probabilities from any model-like object.

    Accepts an object with ``predict_readiness(df)`` (ScoringModel, ReadinessModel, baselines), with
    ``predict_proba(df)`` (scikit-learn classifiers: column 1), or with ``predict(df)`` returning a frame
    with a ``readiness`` column (an MLflow pyfunc of a ScoringModel) or a 1-D array of probabilities.
    """
    if hasattr(model_like, "predict_readiness"):
        p = model_like.predict_readiness(df)
    elif hasattr(model_like, "predict_proba"):
        p = np.asarray(model_like.predict_proba(df))[:, 1]
    elif hasattr(model_like, "predict"):
        out = model_like.predict(df)
        if isinstance(out, pd.DataFrame):
            if "readiness" not in out.columns:
                raise ValueError(f"model output has no 'readiness' column (columns: {list(out.columns)})")
            p = out["readiness"]
        else:
            p = out
    else:
        raise TypeError(f"{type(model_like).__name__} has no predict_readiness, predict_proba or predict method")
    arr = np.asarray(p, dtype=np.float64).reshape(-1)
    if len(arr) != len(df):
        raise ValueError(f"model returned {len(arr)} predictions for {len(df)} rows")
    return arr


def test_ids_digest(ids: pd.DataFrame) -> str:
    """SHA-256 of the sorted (lead_id, as_of) test snapshot ids: equal digests = the same test rows."""
    keys = ids["lead_id"].astype(str) + "|" + pd.to_datetime(ids["as_of"], utc=True).map(lambda t: t.isoformat())
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()


@dataclass
class TrainingResult:
    """Everything one training run produced (see the module docstring)."""

    spec: FeatureSpec
    config: TrainConfig
    split: Split
    model: ScoringModel
    readiness_model: ReadinessModel
    stage_model: StageModel | None
    baselines: dict[str, BaselineModel]
    readiness_metrics: dict[str, dict[str, float]]
    stage_metrics: dict[str, Any] | None
    grade_table: pd.DataFrame
    figures: dict[str, Figure]
    test_ids: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: The leakage probe's verdict on every feature (``None`` when ``leakage.enabled`` is false).
    leakage: LeakageReport | None = None
    #: Trained on a Dask cluster: the split's training frame holds keys only, and these are the training rows
    #: (with features) the drift reference is drawn from (:func:`drift_reference_source`).
    reference_source: pd.DataFrame | None = None

    @property
    def test_frame(self) -> pd.DataFrame:
        """The readiness test snapshots (features and labels)."""
        return self.split.test

    @property
    def primary_metric(self) -> float:
        """The leadscore model's test value of ``config.primary_metric``."""
        return self.readiness_metrics[LEADSCORE][self.config.primary_metric]

    def evaluate_on(self, model_like: Any, test_df: pd.DataFrame | None = None) -> dict[str, float]:
        """Readiness metrics of ``model_like`` on ``test_df`` (default: this run's test snapshots).

        ``test_df`` needs the model's feature columns and ``converted``. Use it to compare a champion
        with this run's model on the same rows (see :func:`predict_readiness_of` for accepted models).
        """
        df = self.split.test if test_df is None else test_df
        if READINESS_TARGET not in df.columns:
            raise ValueError(f"test frame lacks the label column '{READINESS_TARGET}'")
        p = predict_readiness_of(model_like, df)
        return readiness_metrics(df[READINESS_TARGET].to_numpy(), p, self.config.evaluation.ece_bins)

    def summary_table(self) -> pd.DataFrame:
        """Test readiness metrics, one row per model (leadscore first)."""
        return pd.DataFrame.from_dict(self.readiness_metrics, orient="index")

    def flat_metrics(self) -> dict[str, float]:
        """All scalar test metrics as ``test.<model>.<metric>`` and ``test.stage.<metric>`` (for tracking)."""
        out = {f"test.{name}.{k}": float(v) for name, ms in self.readiness_metrics.items() for k, v in ms.items()}
        if self.stage_metrics is not None:
            for k, v in self.stage_metrics.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"test.stage.{k}"] = float(v)
        return out


# -- checks -------------------------------------------------------------------------------------------


#: Feature-table modes training accepts: snapshot history (temporal split) and one row per lead (stratified split).
TRAINABLE_MODES = ("history", SINGLE_SNAPSHOT)


def _check_features(df: pd.DataFrame, spec: FeatureSpec, config: TrainConfig) -> None:
    mode = getattr(spec, "mode", "history")
    if mode not in TRAINABLE_MODES:
        raise ValueError(
            f"feature table mode '{mode}' is not supported for training: expected one of {list(TRAINABLE_MODES)} "
            "('history': point-in-time snapshots, temporal split; 'single_snapshot': one row per lead, "
            "stratified split)"
        )
    missing = [c for c in spec.features if c not in df.columns]
    if missing:
        raise ValueError(f"feature table lacks feature columns named by its spec: {missing}")
    bad = [c for c in spec.numeric if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"numeric features must have a numeric dtype: {[(c, str(df[c].dtype)) for c in bad]}")
    recorded = config.stage.use_recorded_stage_column
    if config.stage.enabled and recorded is not None and recorded in spec.features:
        raise ValueError(
            f"stage.use_recorded_stage_column '{recorded}' is also a feature: the stage model would see its "
            "own label. Remove it from the features or train on time-to-conversion buckets."
        )


def _counts(y: pd.Series) -> tuple[int, int]:
    pos = int(y.sum())
    return pos, len(y) - pos


def _dates(part: pd.DataFrame) -> str:
    return f"as_of {part['as_of'].min().date()} to {part['as_of'].max().date()}" if len(part) else "no rows"


def _check_readiness_counts(split: TaskSplit, config: TrainConfig, horizon: int) -> None:
    pos, neg = _counts(split.train[READINESS_TARGET])
    need = config.min_class_count
    if pos < need or neg < need:
        raise InsufficientDataError(
            f"too little data for the readiness model: the training snapshots ({len(split.train)} rows, "
            f"{_dates(split.train)}) hold {pos} converted and {neg} non-converted rows; at least {need} of "
            f"each are needed (train.min_class_count). Provide more leads or a longer history (more snapshot "
            f"dates before the test period), or change the {horizon}-day horizon (a longer one counts more "
            "conversions, a shorter one leaves more snapshot dates for training)."
        )
    need_eval = config.evaluation.min_eval_class_count
    for part in ("valid", "test"):
        frame = getattr(split, part)
        pos, neg = _counts(frame[READINESS_TARGET])
        if pos < need_eval or neg < need_eval:
            raise InsufficientDataError(
                f"too little data to {'calibrate' if part == 'valid' else 'evaluate'} the readiness model: the "
                f"{part} snapshots ({len(frame)} rows, {_dates(frame)}) hold {pos} converted and {neg} "
                f"non-converted rows; at least {need_eval} of each are needed "
                "(train.evaluation.min_eval_class_count). Provide more leads, or give the "
                f"{part} period more snapshot dates (split.{part}_weeks / {part}_fraction)."
            )


def _check_stage(split: TaskSplit) -> None:
    present = split.train[STAGE_TARGET].value_counts()
    if (present > 0).sum() < 2:
        raise InsufficientDataError(
            f"too little data for the stage model: its {len(split.train)} training snapshots ({_dates(split.train)}) "
            f"hold a single stage ({present[present > 0].to_dict()}). Provide a longer history, change the stage "
            "buckets, or set stage.enabled: false."
        )


# -- training -----------------------------------------------------------------------------------------


def _package_version() -> str:
    try:
        return importlib_metadata.version("leadscore")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _figures(
    result_parts: dict[str, Any],
    spec: FeatureSpec,
    config: TrainConfig,
) -> dict[str, Figure]:
    y = result_parts["y_test"]
    probas = result_parts["test_probas"]
    model: ScoringModel = result_parts["model"]
    test: pd.DataFrame = result_parts["test"]
    figs = {
        "roc_curve": plots.roc_figure(y, probas),
        "pr_curve": plots.pr_figure(y, probas),
        "calibration_curve": plots.calibration_figure(y, probas, config.evaluation.ece_bins),
        "cumulative_gains": plots.gains_figure(y, probas),
        "feature_importance": plots.feature_importance_figure(result_parts["importance"]),
    }
    n = min(config.evaluation.shap_sample_rows, len(test))
    sample = test.sample(n=n, random_state=config.seed) if n < len(test) else test
    contrib = model.readiness_contributions(sample)
    figs["shap_summary"] = plots.shap_summary_figure(contrib, sample[spec.features], spec.categorical, seed=config.seed)
    stage = result_parts.get("stage_metrics")
    if stage is not None:
        figs["stage_confusion_matrix"] = plots.confusion_matrix_figure(stage["confusion_matrix"], stage["labels"])
    return figs


@dataclass
class PreparedTraining:
    """The split and the shared categorical encoder: the input of every fitting step."""

    features_df: pd.DataFrame
    spec: FeatureSpec
    config: TrainConfig
    split: Split
    encoder: FeatureEncoder
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    leakage: LeakageReport | None = None
    #: Set when the training rows stay on a Dask cluster (:func:`prepare_partitioned_training`): the split's
    #: train frames then hold only the keys, and ``client_sample`` the training rows pulled to the client.
    partitions: DaskFeaturePartitions | None = None
    client_sample: pd.DataFrame | None = None


def _split(features_df: pd.DataFrame, spec: FeatureSpec, config: TrainConfig) -> Split:
    """Temporal split for snapshot history; fixed stratified split by lead for single-snapshot tables."""
    if spec.mode == SINGLE_SNAPSHOT:
        return stratified_split(features_df, config, horizon_days=spec.horizon_days)
    return temporal_split(features_df, config, horizon_days=spec.horizon_days)


def _probe_leakage(
    train: pd.DataFrame, spec: FeatureSpec, config: TrainConfig, max_rows: int | None = None
) -> LeakageReport | None:
    """Stop on features that predict the label on their own (unless acknowledged); ``None`` when disabled."""
    lc = config.leakage
    if not lc.enabled:
        return None
    report = probe_leakage(
        train,
        spec.features,
        spec.categorical,
        train[READINESS_TARGET],
        threshold=lc.threshold,
        acknowledged=lc.acknowledge,
        groups=train["lead_id"],
        min_populated=lc.min_populated,
        n_folds=lc.n_folds,
        smoothing=lc.smoothing,
        max_rows=lc.max_rows if max_rows is None else max_rows,
        seed=config.seed,
    )
    report.raise_for_leaks()
    return report


def prepare_training(
    features_df: pd.DataFrame, spec: FeatureSpec, config: TrainConfig | None = None
) -> PreparedTraining:
    """Check the feature table, split it, probe it for leakage and fit the categorical encoder on train rows only.

    Snapshot history (``spec.mode == "history"``) is split in time; a single-snapshot table (one row per
    lead) gets a fixed stratified split by lead (:func:`models.fit.stratified.stratified_split`) and no stage
    model. The leakage probe (``config.leakage``) then runs on the readiness training rows only.

    Raises:
        InsufficientDataError: too few snapshot dates (or leads) for the split, fewer than ``min_class_count``
            converted or non-converted training snapshots, too few in valid/test, or no usable stage data.
        LeakageError: a feature predicts the label on its own and is not in ``leakage.acknowledge``.
        ValueError: malformed feature table or config conflicts.
    """
    config = config or load_train_config()
    t = time.perf_counter()
    _check_features(features_df, spec, config)
    split, notes = _checked_split(features_df, spec, config)
    timings = {"split": time.perf_counter() - t}
    t = time.perf_counter()
    leakage = _probe_leakage(split.readiness.train, spec, config)
    timings["leakage_probe"] = time.perf_counter() - t
    notes += _acknowledged_notes(leakage)
    t = time.perf_counter()
    encoder_rows = [split.readiness.train[spec.categorical]]
    if split.stage is not None:
        encoder_rows.append(split.stage.train[spec.categorical])
    encoder = FeatureEncoder(
        spec.categorical, spec.numeric, config.encoding.max_categories, config.encoding.min_category_count
    ).fit(pd.concat(encoder_rows, ignore_index=True))
    timings["encoder"] = time.perf_counter() - t
    return PreparedTraining(features_df, spec, config, split, encoder, notes, timings, leakage)


def _checked_split(frame: pd.DataFrame, spec: FeatureSpec, config: TrainConfig) -> tuple[Split, list[str]]:
    """The split with its count checks, and the notes it gives."""
    notes: list[str] = []
    split = _split(frame, spec, config)
    _check_readiness_counts(split.readiness, config, spec.horizon_days)
    if spec.mode == SINGLE_SNAPSHOT and split.readiness.note:
        notes.append(split.readiness.note)
    if split.stage is not None:
        _check_stage(split.stage)
        if split.stage.note:
            notes.append(split.stage.note)
    elif spec.mode == SINGLE_SNAPSHOT and config.stage.enabled:
        notes.append("no stage model: single-snapshot data has no time to conversion to define buying stages")
    log.info("split: %s", split.summary())
    return split, notes


def _acknowledged_notes(leakage: LeakageReport | None) -> list[str]:
    if leakage is None:
        return []
    return [
        f"leakage probe: feature '{f.feature}' acknowledged in train.leakage.acknowledge although {f.reason}"
        for f in leakage.acknowledged
    ]


def prepare_partitioned_training(
    partitions: DaskFeaturePartitions, config: TrainConfig | None = None, *, client_sample_rows: int | None = None
) -> PreparedTraining:
    """:func:`prepare_training` for a partitioned feature table whose rows stay on a Dask cluster.

    The split runs on the keys, so it selects the rows the single-machine split selects (same index
    labels); the validation and test rows are pulled to the client; the encoder is fitted from category
    counts added up over the workers (the same categories). The leakage probe runs on its seeded stratified
    sample of at most ``leakage.max_rows`` training rows (the rows it probes on one machine); that sample
    (or ``client_sample_rows`` rows, if given) is kept as ``client_sample`` for the baselines. Snapshot
    history only: a single-snapshot table (one row per lead) is trained on one machine.
    See :mod:`models.fit.distributed`.
    """
    config = config or load_train_config()
    spec, schema = partitions.spec_and_schema()
    if spec.mode != "history":
        raise ValueError(
            f"a {spec.mode} feature table is trained on one machine (one row per lead fits): train it without --cluster"
        )
    t = time.perf_counter()
    _check_features(schema, spec, config)
    keys = partitions.keys
    split, notes = _checked_split(keys, spec, config)
    r = split.readiness
    readiness = replace(r, valid=partitions.rows(r.valid.index), test=partitions.rows(r.test.index))
    stage = split.stage
    if stage is not None:
        stage = replace(
            stage,
            valid=partitions.rows(stage.valid.index).assign(**{STAGE_TARGET: stage.valid[STAGE_TARGET]}),
            test=partitions.rows(stage.test.index).assign(**{STAGE_TARGET: stage.test[STAGE_TARGET]}),
        )
    split = replace(split, readiness=readiness, stage=stage)
    timings = {"split": time.perf_counter() - t}
    t = time.perf_counter()
    lc = config.leakage
    y_train = r.train[READINESS_TARGET].to_numpy()
    n_sample = lc.max_rows if client_sample_rows is None else client_sample_rows
    positions = stratified_sample(len(r.train), y_train, n_sample, config.seed)
    sample_index = r.train.index if positions is None else r.train.index[positions]
    sample = partitions.rows(sample_index)
    leakage = _probe_leakage(sample, spec, config, max_rows=max(lc.max_rows, len(sample))) if lc.enabled else None
    timings["leakage_probe"] = time.perf_counter() - t
    notes += _acknowledged_notes(leakage)
    t = time.perf_counter()
    indexes = [r.train.index] + ([stage.train.index] if stage is not None else [])
    encoder = FeatureEncoder(
        spec.categorical, spec.numeric, config.encoding.max_categories, config.encoding.min_category_count
    ).fit_counts(partitions.category_counts(indexes, spec.categorical))
    timings["encoder"] = time.perf_counter() - t
    return PreparedTraining(
        keys, spec, config, split, encoder, notes, timings, leakage, partitions=partitions, client_sample=sample
    )


def fit_readiness(prep: PreparedTraining) -> ReadinessModel:
    """LightGBM readiness with early stopping on valid, then calibration on valid."""
    t = time.perf_counter()
    r, rc, spec = prep.split.readiness, prep.config.readiness, prep.spec
    readiness = ReadinessModel(
        spec.categorical,
        spec.numeric,
        params={**rc.params.to_lightgbm(prep.config.seed)},
        num_boost_round=rc.num_boost_round,
        early_stopping_rounds=rc.early_stopping_rounds,
        calibration=rc.calibration,
        isotonic_min_rows=rc.isotonic_min_rows,
        isotonic_min_positives=rc.isotonic_min_positives,
        score=rc.score,
        encoder=prep.encoder,
    )
    if prep.partitions is None:
        readiness.fit(r.train, r.train[READINESS_TARGET], r.valid, r.valid[READINESS_TARGET])
    else:
        y_valid = r.valid[READINESS_TARGET].to_numpy()
        booster, best, evals = prep.partitions.train_booster(
            readiness.booster_params(),
            r.train.index,
            r.train[READINESS_TARGET].to_numpy(),
            prep.encoder,
            num_boost_round=rc.num_boost_round,
            early_stopping_rounds=rc.early_stopping_rounds,
            X_valid=prep.encoder.transform(r.valid),
            y_valid=y_valid,
            n_classes=2,
        )
        readiness.fit_trained_booster(booster, best, evals, r.valid, y_valid, n_train=len(r.train))
    prep.timings["readiness_fit"] = time.perf_counter() - t
    if readiness.best_iteration_ >= rc.num_boost_round:
        prep.notes.append(
            f"readiness used all {rc.num_boost_round} boosting rounds without early stopping; "
            "consider raising readiness.num_boost_round or the learning rate"
        )
    return readiness


def fit_stage(prep: PreparedTraining) -> StageModel | None:
    """Multiclass buying-stage model (``None`` when the split has no usable stage data)."""
    if prep.split.stage is None:
        return None
    t = time.perf_counter()
    s, sc, spec = prep.split.stage, prep.config.stage, prep.spec
    stage_model = StageModel(
        prep.split.stage_labels,
        spec.categorical,
        spec.numeric,
        params=sc.params.to_lightgbm(prep.config.seed),
        num_boost_round=sc.num_boost_round,
        early_stopping_rounds=sc.early_stopping_rounds,
        decision_rule=sc.decision_rule,
        encoder=prep.encoder,
    )
    if prep.partitions is None:
        stage_model.fit(s.train, s.train[STAGE_TARGET], s.valid, s.valid[STAGE_TARGET])
    else:
        codes = stage_model.label_codes(s.train[STAGE_TARGET], "stage training labels")
        valid = len(s.valid) > 0
        booster, best, evals = prep.partitions.train_booster(
            stage_model.booster_params(),
            s.train.index,
            codes,
            prep.encoder,
            num_boost_round=sc.num_boost_round,
            early_stopping_rounds=sc.early_stopping_rounds,
            X_valid=prep.encoder.transform(s.valid) if valid else None,
            y_valid=stage_model.label_codes(s.valid[STAGE_TARGET], "stage valid labels") if valid else None,
            n_classes=len(prep.split.stage_labels),
        )
        counts = np.bincount(codes, minlength=len(prep.split.stage_labels))
        stage_model.fit_trained_booster(booster, best, evals, counts, s.valid, s.valid[STAGE_TARGET])
    prep.timings["stage_fit"] = time.perf_counter() - t
    empty = [k for k, v in stage_model.class_counts_.items() if v == 0]
    if empty:
        prep.notes.append(f"stage classes without training snapshots (never predicted well): {empty}")
    return stage_model


def fit_baseline_models(prep: PreparedTraining, readiness: ReadinessModel) -> dict[str, BaselineModel]:
    """Logistic regression and HistGradientBoosting on the same split, calibrated the same way."""
    if not prep.config.baselines.enabled:
        return {}
    t = time.perf_counter()
    r = prep.split.readiness
    # On a cluster: fitted on the training rows pulled to the client (a seeded stratified sample).
    train = r.train if prep.client_sample is None else prep.client_sample
    baselines = fit_baselines(
        train,
        train[READINESS_TARGET],
        r.valid,
        r.valid[READINESS_TARGET],
        categorical=prep.spec.categorical,
        numeric=prep.spec.numeric,
        config=prep.config.baselines,
        calibration_method=readiness.calibration_method_,
        seed=prep.config.seed,
    )
    prep.timings["baselines_fit"] = time.perf_counter() - t
    return baselines


def train_models(features_df: pd.DataFrame, spec: FeatureSpec, config: TrainConfig | None = None) -> TrainingResult:
    """Split, train readiness (+ calibration) and stage, fit baselines, evaluate on the test snapshots.

    The same steps the ``train`` flow runs as separate tasks.

    Args:
        features_df: the feature table (ids, ``spec.features``, label columns).
        spec: its :class:`FeatureSpec` (feature kinds and label horizon).
        config: training config (default: :func:`load_train_config` defaults).

    Raises:
        InsufficientDataError: see :func:`prepare_training`.
        ValueError: malformed feature table or config conflicts.
    """
    prep = prepare_training(features_df, spec, config)
    readiness = fit_readiness(prep)
    stage_model = fit_stage(prep)
    baselines = fit_baseline_models(prep, readiness)
    return evaluate_models(prep, readiness, stage_model, baselines)


def evaluate_models(
    prep: PreparedTraining,
    readiness: ReadinessModel,
    stage_model: StageModel | None,
    baselines: dict[str, BaselineModel],
) -> TrainingResult:
    """Test metrics of every model on the same test snapshots, grades, figures, the ScoringModel."""
    spec, config, split, notes, timings = prep.spec, prep.config, prep.split, prep.notes, prep.timings
    r = split.readiness
    cutoffs = grade_cutoffs_from_config(config.grades, readiness.predict_readiness(r.valid))
    t = time.perf_counter()
    y_test = r.test[READINESS_TARGET].to_numpy()
    bins = config.evaluation.ece_bins
    test_probas = {LEADSCORE: readiness.predict_readiness(r.test)}
    test_probas.update({name: b.predict_readiness(r.test) for name, b in baselines.items()})
    metrics = {name: readiness_metrics(y_test, p, bins) for name, p in test_probas.items()}
    metrics[LEADSCORE_UNCALIBRATED] = readiness_metrics(y_test, readiness.predict_uncalibrated(r.test), bins)
    grades = grade_table(y_test, test_probas[LEADSCORE], cutoffs)

    stage_result: dict[str, Any] | None = None
    if stage_model is not None and split.stage is not None and split.stage.has_test:
        s = split.stage
        stage_proba = stage_model.predict_proba(s.test)
        stage_result = stage_metrics(
            s.test[STAGE_TARGET], stage_proba, split.stage_labels, weights=stage_model.decision_weights_
        )
        stage_result["decision_rule"] = stage_model.decision_rule
        stage_result["decision_weights"] = [float(w) for w in stage_model.decision_weights_]
        argmax_result = stage_metrics(s.test[STAGE_TARGET], stage_proba, split.stage_labels)
        stage_result["argmax_accuracy"] = argmax_result["accuracy"]
        stage_result["argmax_macro_f1"] = argmax_result["macro_f1"]
        # References: always predicting the most frequent training stage, and the training class shares.
        counts = np.array([stage_model.class_counts_[k] for k in split.stage_labels], dtype=np.float64)
        prior = np.tile(counts / counts.sum(), (len(s.test), 1))
        stage_result["prior_log_loss"] = stage_metrics(s.test[STAGE_TARGET], prior, split.stage_labels)["log_loss"]
        majority = max(stage_model.class_counts_, key=lambda k: stage_model.class_counts_[k])
        stage_result["majority_class"] = majority
        stage_result["majority_class_accuracy"] = float((s.test[STAGE_TARGET].astype(str) == majority).mean())
        stage_result["test_strategy"] = s.test_strategy
    timings["evaluation"] = time.perf_counter() - t

    test_ids = r.test[["lead_id", "as_of"]].reset_index(drop=True)
    model_metadata: dict[str, Any] = {
        "trained_at": datetime.now(UTC).isoformat(),
        "leadscore_version": _package_version(),
        "lightgbm_version": lgb.__version__,
        "config": config.model_dump(mode="json"),
        "feature_spec": spec.to_json(),
        "split": split.summary(),
        "test_ids_sha256": test_ids_digest(test_ids),
        "metrics": {"readiness": metrics, "stage": stage_result},
        "grade_cutoffs": cutoffs,
        "calibration": readiness.calibration_.to_dict(),
        "score_scale": readiness.score_scale_.to_dict(),
        "readiness_best_iteration": readiness.best_iteration_,
        "stage_best_iteration": stage_model.best_iteration_ if stage_model is not None else None,
        "notes": list(notes),
    }
    model = assemble_scoring_model(spec, readiness, cutoffs, stage=stage_model, metadata=model_metadata)

    figures: dict[str, Figure] = {}
    if config.evaluation.plots:
        t = time.perf_counter()
        figures = _figures(
            {
                "y_test": y_test,
                "test_probas": test_probas,
                "model": model,
                "test": r.test,
                "importance": readiness.feature_importance("gain"),
                "stage_metrics": stage_result,
            },
            spec,
            config,
        )
        timings["plots"] = time.perf_counter() - t
    for note in notes:
        log.warning("%s", note)
    return TrainingResult(
        spec=spec,
        config=config,
        split=split,
        model=model,
        readiness_model=readiness,
        stage_model=stage_model,
        baselines=baselines,
        readiness_metrics=metrics,
        stage_metrics=stage_result,
        grade_table=grades,
        figures=figures,
        test_ids=test_ids,
        notes=notes,
        timings=timings,
        leakage=prep.leakage,
        reference_source=drift_reference_source(prep),
    )


def drift_reference_source(prep: PreparedTraining) -> pd.DataFrame | None:
    """On a cluster: the training rows the drift reference is drawn from, pulled to the client (else ``None``).

    :func:`models.judge.reference.reference_population` picks them from the keys exactly as it picks them
    from the whole training frame on one machine (same dates, same seeded sample, same order), so the
    reference logged with the model is the single-machine one.
    """
    if prep.partitions is None or len(prep.split.readiness.train) == 0:
        return None
    keys = prep.split.readiness.train
    monitoring = prep.config.monitoring
    chosen = reference_population(
        keys[["lead_id", "as_of"]].assign(_row=keys.index),
        last_snapshots=monitoring.reference_snapshots,
        max_rows=monitoring.reference_max_rows,
        seed=prep.config.seed,
    )
    return prep.partitions.rows(pd.Index(chosen["_row"]))


def assemble_scoring_model(
    spec: FeatureSpec,
    readiness: ReadinessModel,
    grade_cutoffs: Mapping[str, float],
    stage: StageModel | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> ScoringModel:
    """The :class:`ScoringModel` of fitted :class:`ReadinessModel` / :class:`StageModel` sharing one encoder."""
    if (
        stage is not None
        and stage.encoder_ is not readiness.encoder_
        and stage.encoder_.categories_ != readiness.encoder_.categories_
    ):
        raise ValueError("readiness and stage models must share one fitted encoder (pass encoder=...)")
    return ScoringModel(
        spec=spec,
        encoder=readiness.encoder_,
        readiness_booster=readiness.booster_,
        calibration=readiness.calibration_,
        grade_cutoffs=grade_cutoffs,
        stage_booster=stage.booster_ if stage is not None else None,
        stage_labels=list(stage.classes_) if stage is not None else (),
        score_scale=readiness.score_scale_,
        metadata=metadata,
        stage_weights=stage.decision_weights_ if stage is not None else None,
    )
