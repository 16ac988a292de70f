"""Ensembles from out-of-fold predictions: Caruana's greedy selection and the weighted blend."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .metrics import direction_of, fold_score


def caruana(
    predictions: Sequence[np.ndarray],
    y: np.ndarray,
    folds: Sequence[np.ndarray],
    metric: str,
    n_classes: int = 0,
    rounds: int = 20,
) -> tuple[np.ndarray, float]:
    """Greedy ensemble selection with replacement (Caruana et al. 2004) on out-of-fold
    predictions; starts from the best single model and keeps the best prefix. Returns the
    weights (summing to 1) and the ensemble's cross-validated value."""
    sign = 1.0 if direction_of(metric) == "maximize" else -1.0

    def value_of(pred: np.ndarray) -> float:
        return fold_score(metric, y, pred, folds, n_classes)

    singles = [value_of(p) for p in predictions]
    first = int(np.argmax([sign * v for v in singles]))
    counts = np.zeros(len(predictions))
    counts[first] = 1
    blend = predictions[first].astype(float)
    best_counts, best_value = counts.copy(), singles[first]
    for _ in range(rounds - 1):
        n = counts.sum()
        trials = [(blend * n + p) / (n + 1) for p in predictions]
        values = [value_of(t) for t in trials]
        pick = int(np.argmax([sign * v for v in values]))
        counts[pick] += 1
        blend = trials[pick]
        if sign * values[pick] > sign * best_value + 1e-12:
            best_counts, best_value = counts.copy(), values[pick]
    return best_counts / best_counts.sum(), float(best_value)


def blend(predictions: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return sum(w * np.asarray(p, dtype=float) for p, w in zip(predictions, weights, strict=True))
