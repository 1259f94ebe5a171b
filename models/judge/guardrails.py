"""Promotion guardrails: no-signal models, challengers worse than the champion or a baseline, new feature sets.

Pure functions over labels, probabilities and metric dictionaries; the registry
(:mod:`models.package.registry`) applies them when it decides whether the ``champion`` alias moves.

* :func:`check_signal`: a model whose test ROC AUC bootstrap interval includes 0.5, or whose PR AUC does
  not beat the test base rate by ``min_pr_auc_lift``, has no demonstrated signal and is never promoted
  (the first model included).
* :func:`compare_with_champion`: the challenger must reach ``min_relative`` x the champion's primary
  metric on the same rows (for lower-is-better metrics: at most champion / ``min_relative``).
* :func:`compare_with_baselines`: ... and beat the best baseline trained on the same split.
* :func:`feature_set_change`: a challenger whose features differ from the champion's (usually another
  data set under the same model name) is reported with the fix instead of failing inside the comparison.
"""

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SIGNAL_PREFIX = "guardrail."


@dataclass(frozen=True)
class SignalCheck:
    """Whether a model's test predictions carry signal (see :func:`check_signal`)."""

    roc_auc: float
    roc_auc_low: float
    roc_auc_high: float
    confidence: float
    pr_auc: float
    base_rate: float
    min_pr_auc: float
    n_rows: int
    n_positive: int
    passed: bool

    @property
    def failures(self) -> list[str]:
        out = []
        if self.roc_auc_low <= 0.5 <= self.roc_auc_high:
            out.append(
                f"test ROC AUC {self.roc_auc:.3f} with {self.confidence:.0%} bootstrap interval "
                f"[{self.roc_auc_low:.3f}, {self.roc_auc_high:.3f}] includes 0.5 (no better than random)"
            )
        elif self.roc_auc_high < 0.5:
            out.append(
                f"test ROC AUC {self.roc_auc:.3f} (interval [{self.roc_auc_low:.3f}, {self.roc_auc_high:.3f}]) "
                "is below 0.5: the ranking is reversed"
            )
        if self.pr_auc < self.min_pr_auc:
            out.append(
                f"test PR AUC {self.pr_auc:.4f} does not beat the base rate {self.base_rate:.4f} by the configured "
                f"margin (needs >= {self.min_pr_auc:.4f})"
            )
        return out

    def message(self) -> str:
        """What was measured and what to check."""
        if self.passed:
            return (
                f"signal: test ROC AUC {self.roc_auc:.3f} [{self.roc_auc_low:.3f}, {self.roc_auc_high:.3f}], "
                f"PR AUC {self.pr_auc:.4f} vs base rate {self.base_rate:.4f}"
            )
        return (
            "no signal: "
            + "; ".join(self.failures)
            + f" on {self.n_rows:,} test snapshots ({self.n_positive:,} converted). The features do not predict "
            "the outcome: check the data (are activities joined to the right leads? are timestamps right?), the "
            "label horizon (features.horizon_days: do leads convert within it?) and the labels (is the outcome "
            "column the conversion you mean?)"
        )

    def to_metrics(self) -> dict[str, float]:
        values = asdict(self)
        return {f"{SIGNAL_PREFIX}{k}": float(v) for k, v in values.items()}

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, float]) -> "SignalCheck | None":
        """The check logged with :meth:`to_metrics` (None if the run has none, e.g. trained before it existed)."""
        names = [f.name for f in cls.__dataclass_fields__.values()]  # type: ignore[attr-defined]
        keys = [f"{SIGNAL_PREFIX}{n}" for n in names]
        if not all(k in metrics for k in keys):
            return None
        raw = {n: metrics[k] for n, k in zip(names, keys, strict=True)}
        ints = {"n_rows", "n_positive"}
        values: dict[str, Any] = {
            n: (bool(v) if n == "passed" else int(v) if n in ints else float(v)) for n, v in raw.items()
        }
        return cls(**values)


def bootstrap_roc_auc(
    y_true: Any, proba: Any, *, n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """ROC AUC and its percentile bootstrap interval (rows resampled with replacement).

    One sort up front; each resample is a weighted count over the tied score groups (O(n) per resample),
    ties counted as half, exactly like ``sklearn.metrics.roc_auc_score``.
    """
    y = np.asarray(y_true).astype(bool).reshape(-1)
    p = np.asarray(proba, dtype=np.float64).reshape(-1)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} predictions")
    if y.all() or not y.any():
        raise ValueError("ROC AUC needs converted and non-converted test rows")
    _, group = np.unique(p, return_inverse=True)
    n_groups = int(group.max()) + 1

    def auc(weights: np.ndarray) -> float:
        pos = np.bincount(group, weights=weights * y, minlength=n_groups)
        neg = np.bincount(group, weights=weights * ~y, minlength=n_groups)
        below = np.cumsum(neg) - neg  # negatives with a strictly lower score
        total_pos, total_neg = pos.sum(), neg.sum()
        if total_pos == 0 or total_neg == 0:
            return float("nan")
        return float((pos * (below + 0.5 * neg)).sum() / (total_pos * total_neg))

    point = auc(np.ones(len(y)))
    rng = np.random.default_rng(seed)
    n = len(y)
    stats = np.array(
        [auc(np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)) for _ in range(n_bootstrap)]
    )
    stats = stats[np.isfinite(stats)]
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return point, float(low), float(high)


def check_signal(
    y_true: Any,
    proba: Any,
    pr_auc: float,
    *,
    confidence: float = 0.95,
    n_bootstrap: int = 1000,
    min_pr_auc_lift: float = 0.1,
    seed: int = 0,
) -> SignalCheck:
    """The no-signal guardrail on a model's test predictions.

    Passes when the ROC AUC bootstrap interval lies entirely above 0.5 and the PR AUC (``pr_auc``, as
    reported for the model) is at least ``base_rate * (1 + min_pr_auc_lift)``.
    """
    y = np.asarray(y_true).astype(bool).reshape(-1)
    roc, low, high = bootstrap_roc_auc(y, proba, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    base_rate = float(y.mean())
    min_pr = base_rate * (1.0 + min_pr_auc_lift)
    passed = bool(low > 0.5 and pr_auc >= min_pr)
    return SignalCheck(
        roc_auc=roc,
        roc_auc_low=low,
        roc_auc_high=high,
        confidence=confidence,
        pr_auc=float(pr_auc),
        base_rate=base_rate,
        min_pr_auc=min_pr,
        n_rows=len(y),
        n_positive=int(y.sum()),
        passed=passed,
    )


@dataclass(frozen=True)
class Comparison:
    passed: bool
    text: str


def compare_with_champion(
    challenger: float,
    champion: float,
    *,
    metric: str,
    higher_is_better: bool,
    min_relative: float,
    champion_version: int,
) -> Comparison:
    """Challenger >= ``min_relative`` x champion (higher is better) or <= champion / ``min_relative``."""
    if higher_is_better:
        bound = min_relative * champion
        passed = challenger >= bound
        need = f">= {min_relative:g} x {champion:.4f} = {bound:.4f}"
    else:
        bound = champion / min_relative
        passed = challenger <= bound
        need = f"<= {champion:.4f} / {min_relative:g} = {bound:.4f}"
    return Comparison(
        bool(passed),
        f"{metric} {challenger:.4f} vs champion v{champion_version} {champion:.4f} on the same rows "
        f"({'meets' if passed else 'misses'} {need})",
    )


def compare_with_baselines(
    challenger: float, baselines: Mapping[str, Mapping[str, float]], *, metric: str, higher_is_better: bool
) -> Comparison | None:
    """Challenger strictly better than the best baseline on ``metric`` (None when there are no baselines)."""
    values = {name: float(m[metric]) for name, m in baselines.items() if metric in m}
    if not values:
        return None
    best = (max if higher_is_better else min)(values, key=lambda k: values[k])
    other = values[best]
    passed = challenger > other if higher_is_better else challenger < other
    verb = "beats" if passed else "does not beat"
    return Comparison(bool(passed), f"{metric} {challenger:.4f} {verb} the best baseline '{best}' ({other:.4f})")


@dataclass(frozen=True)
class FeatureSetChange:
    missing: tuple[str, ...]  # the champion's features the challenger lacks
    added: tuple[str, ...]  # the challenger's features the champion lacks

    def message(self, model_name: str, version: int, champion_version: int) -> str:
        def names(values: Sequence[str]) -> str:
            shown = ", ".join(values[:8])
            return shown + (f" (+{len(values) - 8} more)" if len(values) > 8 else "") if values else "none"

        return (
            f"feature set changed: version {version} has {len(self.added)} feature(s) champion v{champion_version} "
            f"lacks ({names(self.added)}) and lacks {len(self.missing)} of its features ({names(self.missing)}). "
            f"This is usually another data set trained under the same model name '{model_name}': give each data "
            "set its own model with LEADSCORE_MODEL_NAME (e.g. LEADSCORE_MODEL_NAME=leadscore_<dataset> leadscore "
            f"train ...). If the change is deliberate (same data, new features), review the metrics and run "
            f"leadscore models promote {version} --force"
        )


def feature_set_change(challenger: Sequence[str], champion: Sequence[str]) -> FeatureSetChange | None:
    """The difference between two feature lists (order ignored), or None when they are the same set."""
    a, b = set(challenger), set(champion)
    if a == b:
        return None
    return FeatureSetChange(missing=tuple(sorted(b - a)), added=tuple(sorted(a - b)))
