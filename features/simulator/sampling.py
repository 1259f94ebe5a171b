"""Small random-sampling helpers of the simulator."""

from __future__ import annotations

import numpy as np

from features.simulator import catalog as cat


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: float) -> float:
    p = min(max(p, 1e-9), 1 - 1e-9)
    return float(np.log(p / (1 - p)))


def sample_rows(rng: np.random.Generator, cum: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (n, k) cumulative-probability matrix."""
    u: np.ndarray = rng.random(size=(cum.shape[0],))
    return np.minimum((u[:, None] >= cum).sum(axis=1), cum.shape[1] - 1)


def sample_choice(rng: np.random.Generator, weights: np.ndarray, n: int) -> np.ndarray:
    cum = np.cumsum(weights / weights.sum())
    return np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(weights) - 1)


def other_topic(rng: np.random.Generator, true_topic: np.ndarray) -> np.ndarray:
    n_topics = len(cat.TOPICS)
    return (true_topic + 1 + rng.integers(0, n_topics - 1, len(true_topic))) % n_topics
