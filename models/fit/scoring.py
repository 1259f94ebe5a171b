"""The one object serving needs: :class:`ScoringModel`.

It holds plain, fast pieces rather than scikit-learn wrappers, so one row scores in tens of
microseconds: the :class:`~features.spec.FeatureSpec`, the fitted :class:`~models.fit.encoding.FeatureEncoder`,
the readiness LightGBM ``Booster`` with the calibrator's *parameters* (:class:`ProbabilityCalibration`),
the stage ``Booster`` with its ordered labels, the score scale, the grade cut-offs and a metadata dict.
It needs numpy, pandas, scipy, lightgbm and scikit-learn (only as the encoder's base class), nothing from
``pipelines/``, and pickles with pickle, joblib or cloudpickle (boosters travel as their model text).

Outputs
-------
- ``readiness``: calibrated probability of converting within ``horizon_days``.
- ``score``: an integer 0-100 from :class:`ScoreScale`: by default the readiness percentile among the
  calibration snapshots (90 = readier than 90% of them); optionally ``round(100 * readiness)``.
- ``grade``: ``A`` if readiness >= cut-off A, else ``B`` if >= cut-off B, else ``C`` if >= cut-off C, else ``D``.
- ``stage`` and ``stage_proba_<label>``: the most likely buying stage and each stage's probability.

Explanations
------------
:meth:`ScoringModel.readiness_contributions` gives exact TreeSHAP contributions (LightGBM
``pred_contrib``) per feature plus ``bias`` in raw log-odds: each row sums to the booster's raw margin
``m``. The calibrated probability is a monotone increasing function of ``m``: with sigmoid calibration
``logit(readiness) = -(a * m + b)`` exactly (``a < 0``), so scaling every contribution by ``-a`` and adding
``-b`` to the bias (``space="calibrated_logit"``) decomposes the calibrated log-odds exactly; with isotonic
calibration there is no additive decomposition, but the raw contributions still order and sign the drivers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.special import expit

from features.spec import FeatureSpec
from models.fit.encoding import FeatureEncoder, FeatureInput
from models.fit.fastpredict import SmallBatchPredictor

if TYPE_CHECKING:
    from sklearn.calibration import CalibratedClassifierCV

GRADE_LETTERS = ("A", "B", "C", "D")
_GRADE_BY_INDEX = np.array(["D", "C", "B", "A"], dtype=object)
BIAS_COLUMN = "bias"
# Up to this many rows LightGBM predicts on one thread (waking an OpenMP team costs more than it saves, and
# far more on a busy machine: ~90 us vs ~430 us for one row measured under load) and straight through the
# C API (models.fit.fastpredict). Larger batches use Booster.predict with LightGBM's default thread count.
SMALL_BATCH_ROWS = 64
STAGE_PROBA_PREFIX = "stage_proba_"


# -- calibration, scores, grades ----------------------------------------------------------------------


def centered_isotonic_knots(x_thresholds: np.ndarray, y_thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of the *centered* isotonic fit: one knot per constant block, at the block's centre.

    scikit-learn's isotonic calibrator is a step-like function: each block of pooled rows maps to one
    value, so all scores inside a block tie and ranking metrics (PR AUC in particular) drop. Joining the
    block centres with straight lines (centered isotonic regression, Oron & Flournoy 2017) gives a
    strictly increasing map with the same block values, so calibration is kept and ranking is not lost
    (only scores beyond the outermost centres stay flat).
    """
    x = np.asarray(x_thresholds, dtype=np.float64)
    y = np.asarray(y_thresholds, dtype=np.float64)
    starts = np.r_[0, np.flatnonzero(np.diff(y) != 0) + 1]
    ends = np.r_[starts[1:], len(y)] - 1
    return (x[starts] + x[ends]) / 2.0, y[starts]


@dataclass(frozen=True, eq=False)
class ProbabilityCalibration:
    """A fitted probability calibrator reduced to its parameters, applied to the booster's raw margin.

    ``sigmoid``: ``p = 1 / (1 + exp(a * m + b))`` (Platt; exactly scikit-learn's sigmoid calibrator).
    ``isotonic``: ``p = interp(m, knots_x, knots_y)``, constant beyond the outer knots; the knots are the
    block centres of scikit-learn's isotonic fit (:func:`centered_isotonic_knots`).
    ``identity``: ``p = 1 / (1 + exp(-m))``, the booster's own probability.
    """

    method: Literal["sigmoid", "isotonic", "identity"]
    a: float = -1.0
    b: float = 0.0
    knots_x: np.ndarray = field(default_factory=lambda: np.empty(0))
    knots_y: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __call__(self, margin: ArrayLike) -> np.ndarray:
        margin = np.asarray(margin, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(margin, self.knots_x, self.knots_y)
        return expit(-(self.a * margin + self.b))

    @classmethod
    def from_calibrated_classifier(cls, calibrated: CalibratedClassifierCV) -> ProbabilityCalibration:
        """Parameters of a binary ``CalibratedClassifierCV`` fitted on a frozen margin model."""
        if len(calibrated.calibrated_classifiers_) != 1:
            raise ValueError("expected one calibrated classifier (a frozen estimator, ensemble=False)")
        (calibrator,) = calibrated.calibrated_classifiers_[0].calibrators
        if calibrated.method == "sigmoid":
            return cls("sigmoid", a=float(calibrator.a_), b=float(calibrator.b_))
        if calibrated.method == "isotonic":
            kx, ky = centered_isotonic_knots(calibrator.X_thresholds_, calibrator.y_thresholds_)
            return cls("isotonic", knots_x=kx, knots_y=ky)
        raise ValueError(f"unsupported calibration method '{calibrated.method}'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters (for run metadata)."""
        out: dict[str, Any] = {"method": self.method}
        if self.method == "isotonic":
            out.update(knots_x=self.knots_x.tolist(), knots_y=self.knots_y.tolist())
        else:
            out.update(a=self.a, b=self.b)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProbabilityCalibration:
        if data["method"] == "isotonic":
            return cls(
                "isotonic",
                knots_x=np.asarray(data["knots_x"], dtype=np.float64),
                knots_y=np.asarray(data["knots_y"], dtype=np.float64),
            )
        return cls(data["method"], a=float(data["a"]), b=float(data["b"]))


def score_from_probability(proba: ArrayLike) -> np.ndarray:
    """Integer score 0-100: the probability in percent, rounded half to even."""
    return np.clip(np.rint(np.asarray(proba, dtype=np.float64) * 100.0), 0, 100).astype(np.int64)


@dataclass(frozen=True, eq=False)
class ScoreScale:
    """How the calibrated readiness maps to the integer 0-100 score.

    ``percentile`` (default): the score is the readiness's percentile among reference snapshots (the
    calibration snapshots at training time): 90 means "readier than 90% of them". With the low
    conversion rates of B2B funnels most probabilities are a few percent, so a probability-in-percent
    score would squeeze most leads into 0-5; the percentile spreads them over 0-100 and lines up with
    ``top_fraction`` grades (top 10% = A = score >= 90). ``probability``: ``round(100 * readiness)``.
    Both are non-decreasing in readiness.
    """

    method: Literal["percentile", "probability"] = "probability"
    values: np.ndarray = field(default_factory=lambda: np.empty(0))
    levels: np.ndarray = field(default_factory=lambda: np.empty(0))

    @classmethod
    def percentile_of(cls, reference: np.ndarray) -> ScoreScale:
        """Percentile scale of ``reference`` probabilities, kept as its 101 percentiles (ties pooled)."""
        ref = np.asarray(reference, dtype=np.float64)
        if len(ref) == 0 or not np.isfinite(ref).all():
            raise ValueError("a percentile score needs finite reference probabilities")
        # inverted_cdf: each percentile is an actual reference value (the smallest with that share at or below).
        q = np.quantile(ref, np.linspace(0.0, 1.0, 101), method="inverted_cdf")
        # For tied percentiles keep the highest level: the share of the reference at or below the value.
        values, first_in_reversed = np.unique(q[::-1], return_index=True)
        return cls("percentile", values=values, levels=(100 - first_in_reversed) / 100.0)

    def __call__(self, proba: ArrayLike) -> np.ndarray:
        p = np.asarray(proba, dtype=np.float64)
        if self.method == "probability":
            return score_from_probability(p)
        share = np.interp(p, self.values, self.levels, left=0.0, right=1.0)
        return np.clip(np.rint(share * 100.0), 0, 100).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.method == "percentile":
            out.update(values=self.values.tolist(), levels=self.levels.tolist())
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreScale:
        if data["method"] == "percentile":
            return cls("percentile", np.asarray(data["values"], dtype=np.float64), np.asarray(data["levels"]))
        return cls("probability")


def check_grade_cutoffs(cutoffs: Mapping[str, float]) -> dict[str, float]:
    """Validate ``{"A": pA, "B": pB, "C": pC}`` with ``pA >= pB >= pC`` (D is below pC)."""
    if set(cutoffs) != set(GRADE_LETTERS[:-1]):
        raise ValueError(f"grade cut-offs need exactly the keys A, B, C; got {sorted(cutoffs)}")
    out = {g: float(cutoffs[g]) for g in GRADE_LETTERS[:-1]}
    if not out["A"] >= out["B"] >= out["C"]:
        raise ValueError(f"grade cut-offs must satisfy A >= B >= C, got {out}")
    return out


def assign_grades(proba: ArrayLike, cutoffs: Mapping[str, float]) -> np.ndarray:
    """Grade letters (object array): A if p >= cutoffs['A'], else B if p >= cutoffs['B'], else C/D likewise."""
    thresholds = np.array([cutoffs["C"], cutoffs["B"], cutoffs["A"]], dtype=np.float64)
    return _GRADE_BY_INDEX[np.searchsorted(thresholds, np.asarray(proba, dtype=np.float64), side="right")]


# -- the serving model --------------------------------------------------------------------------------


Input = FeatureInput


class ScoringModel:
    """Readiness + stage scoring with exact explanations; see the module docstring.

    Args:
        spec: the feature spec the models were trained on.
        encoder: fitted encoder producing the booster's feature matrix (columns ``spec.features``).
        readiness_booster: binary LightGBM booster (raw margin in log-odds).
        calibration: calibrator parameters mapping the margin to a probability.
        grade_cutoffs: ``{"A": pA, "B": pB, "C": pC}`` probability cut-offs.
        stage_booster: multiclass LightGBM booster, or ``None`` when stage is disabled.
        stage_labels: stage names in class order (buckets order).
        score_scale: readiness -> 0-100 score (default: probability in percent).
        metadata: JSON-friendly facts about the training run (trained_at, metrics, config, ...).

    Attributes:
        effects: the estimated effects of campaigns and actions (the table of
            :class:`models.explain.effects.EffectEstimator`), attached at training so that serving's
            next-best actions need nothing else; ``None`` when none were estimated (also for models
            pickled before effects existed: this class attribute is their default).
    """

    effects: pd.DataFrame | None = None

    def __init__(
        self,
        *,
        spec: FeatureSpec,
        encoder: FeatureEncoder,
        readiness_booster: lgb.Booster,
        calibration: ProbabilityCalibration,
        grade_cutoffs: Mapping[str, float],
        stage_booster: lgb.Booster | None = None,
        stage_labels: Sequence[str] = (),
        score_scale: ScoreScale | None = None,
        metadata: Mapping[str, Any] | None = None,
        stage_weights: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        features = list(spec.features)
        if list(encoder.feature_names_out_) != features:
            raise ValueError("the encoder's columns differ from the feature spec's features")
        if readiness_booster.feature_name() != features:
            raise ValueError("the readiness booster was trained on different features than the spec lists")
        if stage_booster is not None:
            if stage_booster.feature_name() != features:
                raise ValueError("the stage booster was trained on different features than the spec lists")
            n_class = stage_booster.num_model_per_iteration()
            if n_class != len(stage_labels):
                raise ValueError(f"the stage booster has {n_class} classes but {len(stage_labels)} labels were given")
        self.spec = spec
        self.encoder = encoder
        self.readiness_booster = readiness_booster
        self.calibration = calibration
        self.score_scale = score_scale or ScoreScale("probability")
        self.grade_cutoffs = check_grade_cutoffs(grade_cutoffs)
        self.stage_booster = stage_booster
        self.stage_labels = list(stage_labels) if stage_booster is not None else []
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._stage_label_array = np.array(self.stage_labels, dtype=object)
        # multipliers of the stage decision rule (named stage = argmax(proba * weights)); see models.fit.stage
        self.stage_weights = (
            np.asarray(stage_weights, dtype=np.float64)
            if stage_weights is not None
            else np.ones(len(self.stage_labels))
        )
        if len(self.stage_weights) != len(self.stage_labels):
            raise ValueError(f"{len(self.stage_weights)} stage weights for {len(self.stage_labels)} stage labels")
        self._attach_predictors()

    def _attach_predictors(self) -> None:
        # Small matrices (endpoint requests) skip Booster.predict's per-call overhead; see models.fit.fastpredict.
        self._readiness_predictor = SmallBatchPredictor(self.readiness_booster, max_rows=SMALL_BATCH_ROWS)
        stage = self.stage_booster
        self._stage_predictor = SmallBatchPredictor(stage, max_rows=SMALL_BATCH_ROWS) if stage is not None else None

    # -- description ----------------------------------------------------------------------------------
    @property
    def input_columns(self) -> list[str]:
        """Columns :meth:`predict` reads (others are ignored); also the order of a numpy input's columns."""
        return self.encoder.input_columns

    @property
    def feature_names(self) -> list[str]:
        return list(self.encoder.feature_names_out_)

    @property
    def horizon_days(self) -> int:
        return self.spec.horizon_days

    @property
    def has_stage(self) -> bool:
        return self.stage_booster is not None

    @property
    def output_columns(self) -> list[str]:
        cols = ["readiness", "score", "grade"]
        if self.has_stage:
            cols += ["stage", *(f"{STAGE_PROBA_PREFIX}{s}" for s in self.stage_labels)]
        return cols

    def __repr__(self) -> str:
        stage = f", stages={self.stage_labels}" if self.has_stage else ""
        return (
            f"ScoringModel(features={len(self.feature_names)}, horizon_days={self.horizon_days}, "
            f"calibration={self.calibration.method}, score={self.score_scale.method}{stage})"
        )

    # -- encoding -------------------------------------------------------------------------------------
    def encode(self, X: Input) -> np.ndarray:
        """The float64 feature matrix the boosters read (see :class:`FeatureEncoder`)."""
        return self.encoder.transform(X)

    # -- readiness ------------------------------------------------------------------------------------
    def margin_from_encoded(self, Xe: np.ndarray) -> np.ndarray:
        return self._readiness_predictor.predict(Xe, "raw")

    def predict_margin(self, X: Input) -> np.ndarray:
        """Raw readiness margin (log-odds before calibration)."""
        return self.margin_from_encoded(self.encode(X))

    def predict_readiness(self, X: Input) -> np.ndarray:
        """Calibrated probability of converting within ``horizon_days`` (1-D array)."""
        return self.calibration(self.predict_margin(X))

    def predict_score(self, X: Input) -> np.ndarray:
        return self.score_scale(self.predict_readiness(X))

    def grades_of(self, readiness: ArrayLike) -> np.ndarray:
        return assign_grades(readiness, self.grade_cutoffs)

    # -- stage ----------------------------------------------------------------------------------------
    def stage_proba_from_encoded(self, Xe: np.ndarray) -> np.ndarray:
        if self._stage_predictor is None:
            raise ValueError("this model has no stage model (stage was disabled at training)")
        proba = self._stage_predictor.predict(Xe, "normal")
        return proba.reshape(len(Xe), len(self.stage_labels))

    def predict_stage_proba(self, X: Input) -> np.ndarray:
        """Stage probabilities, shape (n, len(stage_labels)), columns in :attr:`stage_labels` order."""
        return self.stage_proba_from_encoded(self.encode(X))

    # -- everything at once ---------------------------------------------------------------------------
    def predict_arrays(self, X: Input) -> dict[str, np.ndarray]:
        """All outputs as arrays (no DataFrame built): the fast path for batches and single rows."""
        return self.outputs_from_encoded(self.encode(X))

    def outputs_from_encoded(self, Xe: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`predict_arrays` for an already encoded matrix (see :meth:`encode`)."""
        readiness = self.calibration(self.margin_from_encoded(Xe))
        out: dict[str, np.ndarray] = {
            "readiness": readiness,
            "score": self.score_scale(readiness),
            "grade": self.grades_of(readiness),
        }
        if self.stage_booster is not None:
            proba = self.stage_proba_from_encoded(Xe)
            out["stage"] = self._stage_label_array[np.argmax(proba * self.stage_weights, axis=1)]
            out["stage_proba"] = proba
        return out

    def predict(self, X: Input) -> pd.DataFrame:
        """One output row per input row (same index for a DataFrame): see the module docstring."""
        arrays = self.predict_arrays(X)
        index = X.index if isinstance(X, pd.DataFrame) else None
        data: dict[str, Any] = {
            "readiness": arrays["readiness"],
            "score": arrays["score"],
            "grade": arrays["grade"].astype(str),
        }
        if "stage" in arrays:
            data["stage"] = arrays["stage"].astype(str)
            for j, label in enumerate(self.stage_labels):
                data[f"{STAGE_PROBA_PREFIX}{label}"] = arrays["stage_proba"][:, j]
        return pd.DataFrame(data, index=index)

    def predict_one(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Score one record (column -> value) into plain Python values, without pandas."""
        arrays = self.outputs_from_encoded(self.encoder.transform_records([record]))
        out: dict[str, Any] = {
            "readiness": float(arrays["readiness"][0]),
            "score": int(arrays["score"][0]),
            "grade": str(arrays["grade"][0]),
        }
        if "stage" in arrays:
            out["stage"] = str(arrays["stage"][0])
            out["stage_proba"] = dict(zip(self.stage_labels, arrays["stage_proba"][0].tolist(), strict=True))
        return out

    # -- explanations ---------------------------------------------------------------------------------
    def contributions_from_encoded(
        self, Xe: np.ndarray, space: Literal["raw", "calibrated_logit"] = "raw"
    ) -> np.ndarray:
        """TreeSHAP contributions, shape (n, n_features + 1), last column the bias (expected value)."""
        contrib = self._readiness_predictor.predict(Xe, "contrib")
        if space == "raw":
            return contrib
        if space == "calibrated_logit":
            if self.calibration.method == "isotonic":
                raise ValueError(
                    "isotonic calibration is not additive in log-odds; use space='raw' (contributions to the "
                    "raw margin, whose order and signs the calibrated probability follows)"
                )
            scaled = contrib * -self.calibration.a
            scaled[:, -1] -= self.calibration.b
            return scaled
        raise ValueError(f"unknown space '{space}' (expected 'raw' or 'calibrated_logit')")

    def readiness_contributions(self, X: Input, space: Literal["raw", "calibrated_logit"] = "raw") -> pd.DataFrame:
        """Exact TreeSHAP contributions: one column per feature plus ``bias``; rows sum to the margin.

        ``space="raw"``: raw log-odds, each row sums to :meth:`predict_margin`. ``"calibrated_logit"``
        (sigmoid calibration only): each row sums to ``logit(predict_readiness)``.
        """
        contrib = self.contributions_from_encoded(self.encode(X), space=space)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(contrib, columns=[*self.feature_names, BIAS_COLUMN], index=index)

    # -- pickling -------------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_readiness_predictor", "_stage_predictor"):  # hold C handles; rebuilt on unpickling
            state.pop(name, None)
        # Model text is the stable, version-tolerant form of a booster.
        state["readiness_booster"] = self.readiness_booster.model_to_string()
        if self.stage_booster is not None:
            state["stage_booster"] = self.stage_booster.model_to_string()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        state.setdefault("score_scale", ScoreScale("probability"))
        state["readiness_booster"] = lgb.Booster(model_str=state["readiness_booster"])
        if state.get("stage_booster") is not None:
            state["stage_booster"] = lgb.Booster(model_str=state["stage_booster"])
        self.__dict__.update(state)
        self._attach_predictors()
